"""LoRA adapters on a trained model, through ``peft`` (``sosm finetune``).

LoRA (Hu et al. 2021) adds to a frozen linear map ``W`` a trainable low-rank update:
``y = W x + (alpha / r) B A x`` with ``A [r, in]``, ``B [out, r]`` and ``B = 0`` at the start, so
the adapted model starts as the base. The mixers' projections and MLPs are plain ``nn.Linear``
modules, which ``peft``'s LoRA layers wrap as they are: :func:`add_lora` calls
``peft.inject_adapter_in_model``, which swaps each targeted ``Linear`` for a ``peft`` LoRA layer
in place and leaves the model an ``SOSMModel`` (its forward, decoding, DePass and the trainer
are unchanged), and everything but the adapters is frozen.

- :func:`save_adapter` / :func:`load_adapter`: only the adapters, as ``peft`` writes them
  (``adapter_model.safetensors`` + ``adapter_config.json``; ``peft.PeftModel.from_pretrained``
  reads the same folder);
- :func:`merge` folds ``(alpha / r) B A`` into each ``W`` (the output is the unmerged one's, to
  float rounding), :func:`unmerge` takes it out again, :func:`merge_and_unload` returns the plain
  model with merged weights (the parameter names of the base again).

The default targets (:data:`DEFAULT_TARGETS`) are the attention and mixer projections and the
MLPs of every mixer: ``qkv``, ``out_proj`` (attention, graph attention, Mamba, Mamba-2, RWKV,
RetNet), ``in_proj`` (Mamba, Mamba-2), ``fc_in``, ``fc_out`` (the MLPs); a model gets those of them
it has. A name matches a module whose dotted name ends with it, as in ``peft``; a name given
explicitly must match.

``peft`` imports ``transformers``, which imports a top-level package named ``kernels`` (the
Hugging Face kernel hub). Run from this repository's root, where the folder ``kernels/`` (our
``sosm.kernels``) is on ``sys.path``, that import finds our folder instead; :func:`import_peft`
imports ``peft`` with the repository root off ``sys.path`` for that one import.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..common.configs import reject_unknown_keys

DEFAULT_TARGETS = ("qkv", "out_proj", "in_proj", "fc_in", "fc_out")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class LoRAConfig:
    """The ``lora`` section of a fine-tuning config."""

    rank: int = 8                       # r: inner width of each adapter (A [r, in], B [out, r])
    alpha: float = 16.0                 # scale alpha / r of the update B A
    dropout: float = 0.0                # dropout on the adapter's input (training only)
    target_modules: list = field(default_factory=lambda: list(DEFAULT_TARGETS))  # Linear modules whose names end so

    def __post_init__(self):
        def need(cond, name, accepted):
            if not cond:
                raise ValueError(f"lora.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        need(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1, "rank", "an int >= 1")
        need(isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and self.alpha > 0, "alpha",
             "a number > 0")
        need(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1, "dropout", "a float in [0, 1)")
        need(isinstance(self.target_modules, (list, tuple)) and self.target_modules
             and all(isinstance(t, str) and t for t in self.target_modules), "target_modules",
             f"a non-empty list of module names, e.g. {list(DEFAULT_TARGETS)}")
        self.target_modules = list(self.target_modules)

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "LoRAConfig":
        data = data or {}
        if not isinstance(data, dict):
            raise TypeError(f"config section 'lora' must be a mapping, got {type(data).__name__}")
        reject_unknown_keys(data, cls, where=" in config section 'lora'")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def import_peft():
    """``peft``, imported with this repository's root off ``sys.path`` (module docstring); a clear error without it."""
    if "peft" in sys.modules:
        return sys.modules["peft"]
    root = Path(__file__).resolve().parents[2]
    shadowing = {"", ".", str(root)}
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in shadowing and Path(p or ".").resolve() != root]
    try:
        import peft
    except ImportError as err:
        raise RuntimeError(f"LoRA needs peft ({err}); install it with: pip install 'sosm[lora]'") from None
    finally:
        sys.path[:] = saved
    return peft


def _linear_names(model: torch.nn.Module) -> list:
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def add_lora(model: torch.nn.Module, config: LoRAConfig) -> torch.nn.Module:
    """Freeze ``model`` and add LoRA adapters to its ``config.target_modules`` (in place; returns ``model``).

    Raises:
        ValueError: a target that matches no ``nn.Linear`` of the model (naming the ones it has).
    """
    peft = import_peft()
    available = _linear_names(model)
    targets = list(config.target_modules)
    if targets == list(DEFAULT_TARGETS):  # the defaults cover every mixer; a model has some of them
        targets = [t for t in targets if t in available]
    unknown = [t for t in targets if t.rsplit(".", 1)[-1] not in available]
    if unknown or not targets:
        raise ValueError(f"lora.target_modules names {unknown or config.target_modules}, which match no linear layer "
                         f"of this model; accepted: names of its nn.Linear modules, e.g. {available}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=targets, bias="none")
    peft.inject_adapter_in_model(lora, model)
    return model


def _lora_layers(model: torch.nn.Module) -> list:
    import_peft()
    from peft.tuners.lora import LoraLayer

    layers = [module for module in model.modules() if isinstance(module, LoraLayer)]
    if not layers:
        raise ValueError("the model has no LoRA adapters; add them with add_lora or load_adapter first")
    return layers


def merge(model: torch.nn.Module) -> None:
    """Fold every adapter into its base weight (``W += alpha/r B A``); the forward then skips the adapters."""
    for layer in _lora_layers(model):
        layer.merge(safe_merge=True)  # safe: refuses a merge that would produce NaN or Inf


def unmerge(model: torch.nn.Module) -> None:
    """Take merged adapters out of the base weights again (``W -= alpha/r B A``, to float rounding)."""
    for layer in _lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: torch.nn.Module) -> torch.nn.Module:
    """Merge, then put each base ``Linear`` back in place of its LoRA layer: the plain model, with the base's names."""
    layers = set(map(id, _lora_layers(model)))
    merge(model)
    for name, module in list(model.named_modules()):
        if id(module) in layers:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


def adapter_state(model: torch.nn.Module) -> dict:
    """The adapters' tensors only (``peft``'s names: ``<module>.lora_A.weight``, ``<module>.lora_B.weight``)."""
    peft = import_peft()
    return peft.get_peft_model_state_dict(model)


def save_adapter(model: torch.nn.Module, config: LoRAConfig, directory) -> Path:
    """Write ``adapter_model.safetensors`` and ``adapter_config.json`` (the ``peft`` format) into ``directory``."""
    from safetensors.torch import save

    from ..common.files import atomic_write

    peft = import_peft()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in adapter_state(model).items()}
    atomic_write(directory / ADAPTER_WEIGHTS, save(tensors, metadata={"format": "pt"}))
    lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=list(config.target_modules), bias="none")
    atomic_write(directory / ADAPTER_CONFIG, json.dumps(lora.to_dict(), indent=2, sort_keys=True, default=list) + "\n")
    return directory


def read_adapter_config(directory) -> LoRAConfig:
    """The :class:`LoRAConfig` of an adapter folder written by :func:`save_adapter` (or ``peft``)."""
    path = Path(directory) / ADAPTER_CONFIG
    if not path.is_file():
        raise ValueError(f"{path} does not exist; an adapter folder holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LoRAConfig(rank=data["r"], alpha=data["lora_alpha"], dropout=data.get("lora_dropout", 0.0),
                          target_modules=sorted(data["target_modules"]))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a LoRA adapter config: {type(err).__name__}: {err}") from None


def load_adapter(model: torch.nn.Module, directory) -> torch.nn.Module:
    """Add the adapters saved in ``directory`` to the base ``model`` (in place; returns ``model``)."""
    from safetensors.torch import load_file

    peft = import_peft()
    config = read_adapter_config(directory)
    add_lora(model, config)
    weights = Path(directory) / ADAPTER_WEIGHTS
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own types for a malformed file
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from None
    expected = set(adapter_state(model))
    if set(tensors) != expected:
        raise ValueError(f"{weights} does not match the model's adapters: missing {sorted(expected - set(tensors))[:6]}, "
                         f"unexpected {sorted(set(tensors) - expected)[:6]}")
    result = peft.set_peft_model_state_dict(model, tensors)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{weights} holds tensors the model does not have: {result.unexpected_keys[:6]}")
    return model


def parameter_share(model: torch.nn.Module) -> dict:
    """``{"trainable": n, "total": N, "share": n / N}`` of ``model``'s parameters (each tensor once)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "share": trainable / total if total else 0.0}
