"""Post-training dynamic INT8 quantization of a checkpoint's linear layers (``sosm quantize``).

**What.** Every ``nn.Linear`` that the model *calls* becomes PyTorch's dynamically quantized
linear: weights stored as int8 with one scale per output channel (symmetric, zero point 0),
activations quantized per call from their observed range; the matrix product runs in int8
(fbgemm / oneDNN on x86, qnnpack on ARM) and the result is float32. Embeddings, norms, the
convolution, the SSM parameters and the (tied) output head stay float32. Left out as well
(:data:`SKIP`, :data:`FLOAT_PREFIXES`): Mamba's ``dt_proj``, whose weight and bias are read directly
(the bias enters the scan as ``delta_bias``) rather than called; and the graph models' semantic and
temporal state layers, which feed the graph builder's discrete choices (top-k, gates, landmarks):
kept float, the INT8 model builds exactly the float model's graph (tested).

**Which API.** ``torch.ao.quantization.quantize_dynamic`` with ``per_channel_dynamic_qconfig``.
PyTorch 2.13 marks ``torch.ao.quantization`` deprecated in favour of torchao's ``quantize_``;
measured on this CPU, torchao 0.18's ``Int8DynamicActivationInt8WeightConfig`` ran a
128 -> 512 -> 128 MLP 2.4x *slower* than float32 (it has no fused CPU int8 kernel), while
``quantize_dynamic`` ran it 1.4x faster. So the packed int8 kernels of ``torch.ao`` are used and
its deprecation warnings are silenced here, in one place. The checkpoint format does not depend
on that API: the int8 values, scales and zero points are plain safetensors tensors.

**Format.** A quantized checkpoint is an ordinary checkpoint (``sosm.train.checkpoint``: manifest,
hashes, atomic write) whose ``model.safetensors`` holds, for each quantized linear ``name``,
``name.weight`` (int8 ``[out, in]``), ``name.weight_scale`` (float64 ``[out]``),
``name.weight_zero_point`` (int64 ``[out]``) and ``name.bias`` (float32) beside the float32
tensors of everything else, plus ``quantization.json`` naming the method and the modules.
:func:`sosm.train.loading.load_trained` sees that file and rebuilds the quantized model, so
``sosm eval`` / ``generate`` / ``serve --checkpoint Q`` load it like any other.

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="mamba", d_model=32, n_heads=2, vocab_size=50)).eval()
    >>> quantized = quantize_model(model)
    >>> quantized.stack.layers[0].in_proj._get_name()
    'DynamicQuantizedLinear'
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import MODEL_FILE, CheckpointError, write_checkpoint

QUANT_FILE = "quantization.json"
METHOD = "dynamic_int8"
API = "torch.ao.quantization.quantize_dynamic(per_channel_dynamic_qconfig, qint8)"
#: linear layers whose parameters are read directly instead of being called
SKIP = ("dt_proj",)
#: modules whose linears stay float: the states the graph is built from
FLOAT_PREFIXES = ("front.semantic.", "front.temporal.")
SCALE, ZERO_POINT = ".weight_scale", ".weight_zero_point"


@contextlib.contextmanager
def _quiet_ao():
    """Silence torch.ao's deprecation notices (module docstring: why this API is still the one used)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        yield


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules :func:`quantize_model` converts (all but :data:`SKIP`, :data:`FLOAT_PREFIXES`)."""
    return [name for name, module in model.named_modules()
            if type(module) is nn.Linear and name.rsplit(".", 1)[-1] not in SKIP and not name.startswith(FLOAT_PREFIXES)]


def quantize_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (float32, CPU) with its linear layers dynamically quantized to int8, in eval mode."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = quantizable_linears(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to quantize")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("dynamic INT8 quantization runs on CPU: load the checkpoint with device='cpu'")
    with _quiet_ao():
        return quantize_dynamic(copy.deepcopy(model).float().eval(), {name: per_channel_dynamic_qconfig for name in names},
                                dtype=torch.qint8)


def quantized_state_dict(qmodel: nn.Module) -> dict[str, torch.Tensor]:
    """Plain tensors of a :func:`quantize_model` result (the module docstring's format)."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    state = {}
    packed = {name: module for name, module in qmodel.named_modules() if isinstance(module, DynamicLinear)}
    prefixes = tuple(f"{name}." for name in packed)
    for name, tensor in qmodel.state_dict().items():
        if not name.startswith(prefixes):  # the packed modules' own entries are replaced below
            state[name] = tensor
    for name, module in packed.items():
        weight = module.weight()  # per-channel qint8
        state[f"{name}.weight"] = weight.int_repr().contiguous()
        state[name + SCALE] = weight.q_per_channel_scales().double().contiguous()
        state[name + ZERO_POINT] = weight.q_per_channel_zero_points().long().contiguous()
        if module.bias() is not None:
            state[f"{name}.bias"] = module.bias().detach().float().contiguous()
    return state


def load_quantized(model: nn.Module, state: dict, info: dict, source: str = "model") -> nn.Module:
    """Rebuild the quantized model from a float32 ``model`` of the right config and the stored ``state``.

    Raises:
        CheckpointError: the stored modules or tensors do not match the model (naming ``source``).
    """
    if info.get("method") != METHOD:
        raise CheckpointError(f"{source}: quantization method {info.get('method')!r} is not supported; "
                              f"accepted: {METHOD!r}")
    names = list(info.get("modules", []))
    if sorted(names) != sorted(quantizable_linears(model)):
        raise CheckpointError(f"{source}: quantized modules {sorted(names)[:6]}... do not match the model's linear "
                              f"layers {sorted(quantizable_linears(model))[:6]}...")
    dense, exact = dict(state), {}
    for name in names:
        try:
            q = dense.pop(f"{name}.weight")
            scale, zero = dense.pop(name + SCALE), dense.pop(name + ZERO_POINT)
        except KeyError as err:
            raise CheckpointError(f"{source}: quantized module {name!r} lacks tensor {err}") from None
        weight = ((q.double() - zero[:, None].double()) * scale[:, None]).float()  # exact int8 values
        dense[f"{name}.weight"] = weight
        exact[name] = (weight, scale, zero)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(dense)), sorted(set(dense) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match the model: missing tensors {missing[:8]}, "
                              f"unexpected tensors {unexpected[:8]}")
    model.load_state_dict(dense)
    qmodel = quantize_model(model)
    modules = dict(qmodel.named_modules())
    with _quiet_ao():
        for name, (weight, scale, zero) in exact.items():
            qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)  # the stored scales, not refit
            modules[name].set_weight_bias(qweight, modules[name].bias())
    return qmodel


@dataclass
class QuantizeResult:
    """What :func:`quantize_checkpoint` wrote: the checkpoint folder and the weight file sizes."""

    path: Path
    modules: list
    fp32_bytes: int
    int8_bytes: int

    def to_dict(self) -> dict:
        return {"path": str(self.path), "modules": len(self.modules), "fp32_weights_bytes": self.fp32_bytes,
                "int8_weights_bytes": self.int8_bytes, "ratio": round(self.int8_bytes / self.fp32_bytes, 4)}


def quantize_checkpoint(trained, out) -> QuantizeResult:
    """Quantize a loaded float checkpoint (``sosm.train.loading.load_trained(..., device="cpu")``) into ``out``.

    ``out`` (a new run folder) must not exist or be empty; the result is
    ``out/checkpoints/step_<N>/`` (the source's step), loadable by ``--checkpoint out``.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} exists and is not an empty folder; accepted: a new or empty folder")
    if trained.quantized:
        raise ValueError(f"--checkpoint {trained.checkpoint.path} is already quantized ({QUANT_FILE})")
    qmodel = quantize_model(trained.model)
    modules = quantizable_linears(trained.model)
    ckpt = trained.checkpoint
    info = {"method": METHOD, "api": API, "torch": torch.__version__, "modules": modules,
            "source": str(ckpt.path), "source_step": ckpt.step}
    extra = {**ckpt.extra, QUANT_FILE: info}
    trainer_state = {"step": ckpt.step, "quantized_from": str(ckpt.path)}
    path = write_checkpoint(out, ckpt.step, model_state=quantized_state_dict(qmodel), config=ckpt.config,
                            optimizer_state={"state": {}, "param_groups": []}, trainer_state=trainer_state,
                            extra_json=extra, keep_last=1)
    return QuantizeResult(path, modules, (ckpt.path / MODEL_FILE).stat().st_size, (path / MODEL_FILE).stat().st_size)

