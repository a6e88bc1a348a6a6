"""The mixer contract and the registry of mixers by name.

A **mixer** is one residual layer of the stack, ``[B, T, d_model] -> [B, T, d_model]`` (it owns
its norm, its residual and, where it has one, its MLP). One class in one file owns everything
about itself:

- :meth:`Mixer.forward` — the parallel form over a whole sequence, reading the shared
  :class:`~sosm.model.context.LayerContext` (graph neighbours, positions, structure, memory);
- :meth:`Mixer.allocate_cache` and :meth:`Mixer.step` — one token at a time from a cache, for
  incremental decoding (equal to the forward at every position);
- :meth:`Mixer.forward_carry` — a window from a carried state, advancing it (long-context
  streaming); mixers that carry nothing across windows run their plain forward;
- :meth:`Mixer.linear_mode` — DePass: the layer with the quantities of the real pass frozen, so
  it is linear in components of its input that sum to the input;
- :meth:`Mixer.state_size` — floats of state kept per sequence to decode (Zoology's convention:
  the KV cache for attention, the recurrent state for state-space models).

What a mixer cannot do it refuses with :class:`NotImplementedError` naming itself. Class
attributes say what it needs: ``needs_graph`` (it reads ``ctx.neighbors``, so the model builds the
semantic graph), ``causal_capable`` (False for bidirectional-only mixers such as Linformer and FNet;
a causal stack refuses them at construction). Registration makes a mixer available by name to
``SOSMConfig.layer_pattern`` and ``SOSMConfig(model=<name>)``.

Example:
    >>> from sosm.model.mixers import get_mixer, mixer_names
    >>> get_mixer("M").name, get_mixer("transformer").name
    ('mamba', 'attention')
    >>> "graph_attention" in mixer_names()
    True
"""
from __future__ import annotations

from typing import Callable, ClassVar, Optional

import torch
import torch.nn as nn

from ..context import LayerContext

_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}
_WRAPPERS: dict[str, Callable[[type], type]] = {}  # prefix -> factory(inner mixer class) -> wrapper class
_WRAPPED: dict[str, type] = {}  # "prefix:inner" -> the wrapper class built for it


class Mixer(nn.Module):
    """Base class of every mixer (see the module docstring for the contract).

    Subclasses set ``name`` (and optionally ``aliases``, ``needs_graph``, ``causal_capable``,
    ``reads_structure``, ``needs_mlp``) and implement :meth:`forward`; the other methods have refusing or
    plain defaults.

    Args of subclasses' ``__init__``: ``(config, struct_dim=None)`` — the ``SOSMConfig`` and the
    width of the structural encoding when the model provides one (graph models with landmarks).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_graph: ClassVar[bool] = False       # reads ctx.neighbors: the model builds the semantic graph
    causal_capable: ClassVar[bool] = True     # False: bidirectional only (a causal stack refuses it)
    reads_structure: ClassVar[bool] = False   # may read ctx.structure (the landmark encoding) when given
    needs_mlp: ClassVar[bool] = False         # its block has an MLP sized by mlp_ratio that it cannot drop
    has_feed_forward: ClassVar[bool] = False  # has an MLP slot (SOSMConfig.moe_experts makes it a mixture of experts)
    layer_index: int = 0                      # depth in the stack (0-based); LayerStack sets it after building
    bidirectional_capable: ClassVar[bool] = False  # built with causal=False, it reads later positions too (a causal-only
                                                   # mixer, e.g. an SSM scan, stays left-to-right inside a bidirectional stack)

    def forward(self, x: torch.Tensor, ctx: LayerContext) -> torch.Tensor:  # pragma: no cover - abstract
        """``x [B, T, d_model]`` -> ``[B, T, d_model]`` (residual included)."""
        raise NotImplementedError(f"mixer {self.name!r} has no forward")

    def init_parameters(self) -> None:
        """Special initialisation after the model's generic normal init of linear/embedding weights."""

    def allocate_cache(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> dict:
        """The (empty) decoding cache of one sequence batch; :meth:`step` fills and advances it."""
        return {}

    def step(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """One decoding step ``x [B, 1, d_model]`` at position ``ctx.position``; updates ``cache`` in place."""
        raise NotImplementedError(f"mixer {self.name!r} has no recurrent step: incremental decoding is not "
                                  "available for a stack that contains it")

    def forward_carry(self, x: torch.Tensor, ctx: LayerContext, cache: dict) -> torch.Tensor:
        """A window ``x [B, T, d_model]`` starting from the carried ``cache``, which it advances.

        Default: nothing is carried across windows (attention reads its window only): the plain forward.
        """
        return self(x, ctx)

    def linear_mode(self, x: torch.Tensor, xc: torch.Tensor, ctx: LayerContext, bias_index: int,
                    router=None) -> tuple:
        """DePass: ``(x_out [B, T, d], xc_out [C, B, T, d], frozen attention [B, H, T, T] or None)``.

        ``xc`` are components of the real input ``x`` (``xc.sum(0) == x``); the output components
        sum to the real output. ``router`` decides where attended contributions land (attention
        mixers only); biases go to component ``bias_index``.
        """
        raise NotImplementedError(f"mixer {self.name!r} has no DePass linear mode")

    def state_size(self, seq_len: int) -> int:
        """Floats of state one sequence keeps to decode after ``seq_len`` tokens."""
        raise NotImplementedError(f"mixer {self.name!r} does not report its state size")


def no_weight_decay(module: nn.Module, *names: str) -> None:
    """Mark ``module``'s parameters ``names`` as not to be decayed (mamba_ssm's ``_no_weight_decay`` convention).

    For state matrices and other parameters whose size is meaningful (decay would shrink an SSM's
    decay rates or frequencies); the trainer already exempts every tensor with fewer than 2 dims.
    The mark is kept on the module by name, not on the tensor, so it survives whatever replaces the
    parameter objects (FSDP2's sharded parameters, ``load_state_dict(assign=True)``, quantization).
    """
    own = dict(module.named_parameters(recurse=False))
    missing = [name for name in names if name not in own]
    if missing:
        raise ValueError(f"{type(module).__name__} has no parameters {missing} to exempt from weight decay")
    module._no_weight_decay = frozenset(getattr(module, "_no_weight_decay", frozenset())) | frozenset(names)


def register_mixer(cls: type) -> type:
    """Class decorator: make ``cls`` (a :class:`Mixer` subclass) available by its name and aliases."""
    if not (isinstance(cls, type) and issubclass(cls, Mixer)) or not cls.name:
        raise TypeError(f"register_mixer needs a Mixer subclass with a name, got {cls!r}")
    for key in (cls.name, *cls.aliases):
        owner = _ALIASES.get(key)
        if owner is not None and owner != cls.name:
            raise ValueError(f"mixer name {key!r} is taken by {owner!r}")
        _ALIASES[key] = cls.name
    _REGISTRY[cls.name] = cls
    return cls


def register_wrapper(prefix: str, factory: Callable[[type], type]) -> None:
    """Make ``"<prefix>:<mixer>"`` name ``factory(mixer class)``, a mixer wrapping any registered mixer.

    Example: ``"mod:mamba"`` is Mixture-of-Depths around Mamba (:mod:`sosm.model.mixers.mod`).
    """
    owner = _WRAPPERS.get(prefix)
    if owner is not None and owner is not factory:
        raise ValueError(f"mixer wrapper prefix {prefix!r} is taken")
    _WRAPPERS[prefix] = factory


def mixer_names() -> tuple[str, ...]:
    """Canonical names of the registered mixers, in registration order."""
    return tuple(_REGISTRY)


def resolve_mixer_name(name: str) -> str:
    """The canonical name for ``name`` (a name, an alias, or ``"<wrapper>:<name>"``); ``ValueError`` listing the valid ones."""
    if isinstance(name, str) and name in _ALIASES:
        return _ALIASES[name]
    if isinstance(name, str) and ":" in name:
        prefix, _, inner = name.partition(":")
        if prefix not in _WRAPPERS:
            raise ValueError(f"unknown mixer wrapper {prefix!r} in {name!r}; accepted: one of {sorted(_WRAPPERS)}")
        if ":" in inner:
            raise ValueError(f"mixer {name!r} wraps a wrapper; accepted: '<wrapper>:<mixer>' around a plain mixer")
        return f"{prefix}:{resolve_mixer_name(inner)}"
    raise ValueError(f"unknown mixer {name!r}; accepted: one of {list(_REGISTRY)} "
                     f"(or an alias: {sorted(k for k in _ALIASES if k not in _REGISTRY)})")


def get_mixer(name: str) -> type:
    """The mixer class registered under ``name`` (a name or an alias), or the wrapper class ``"<wrapper>:<name>"`` names."""
    canonical = resolve_mixer_name(name)
    if ":" not in canonical:
        return _REGISTRY[canonical]
    if canonical not in _WRAPPED:
        prefix, _, inner = canonical.partition(":")
        _WRAPPED[canonical] = _WRAPPERS[prefix](_REGISTRY[inner])
    return _WRAPPED[canonical]


def build_mixer(name: str, config, struct_dim: Optional[int] = None, causal: bool = True) -> Mixer:
    """An instance of mixer ``name`` for ``config``; a causal stack refuses a bidirectional-only mixer."""
    cls = get_mixer(name)
    if causal and not cls.causal_capable:
        raise ValueError(f"mixer {cls.name!r} is bidirectional only (it mixes every position with every other), "
                         "so a causal model cannot use it; accepted: a causal mixer, or a bidirectional model")
    return cls(config, struct_dim if cls.reads_structure else None)
