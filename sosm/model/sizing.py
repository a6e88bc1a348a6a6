"""Parameter counts and parameter-matched configs (the baselines are sized to the model they are compared with).

:func:`param_count` counts what a config would build, on the meta device (no memory, no init);
:func:`matched_config` searches depth, then depth and width, for a config of another model kind
within a tolerance of a reference's parameter count.

Example:
    >>> from sosm.model import SOSMConfig
    >>> hybrid = SOSMConfig(d_model=64, vocab_size=65)
    >>> transformer = matched_config(hybrid, "transformer")
    >>> abs(param_count(transformer) - param_count(hybrid)) <= 0.05 * param_count(hybrid)
    True
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .config import SOSMConfig, model_kinds, parse_layer_pattern
from .mixers import build_mixer, get_mixer
from .model import SOSMModel


def param_count(config: SOSMConfig) -> int:
    """Trainable parameters of the model ``config`` builds (tied weights counted once)."""
    base, per_layer = _parameter_parts(config)
    return base + sum(per_layer[name] for name in config.layer_types)


def _parameter_parts(config: SOSMConfig) -> tuple[int, dict]:
    """(parameters outside the layer stack, parameters of one layer per mixer name), counted on the meta device."""
    def count(module):
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        model = SOSMModel(replace(config, n_layers=1, layer_pattern=[config.layer_types[0]]
                                  if config.model == "hybrid" else config.layer_pattern))
        struct_dim = config.struct_dim if model.use_structure else None
        names = set(config.layer_types) | (set(parse_layer_pattern(config.layer_pattern))
                                           if config.model == "hybrid" else set())
        per_layer = {name: count(build_mixer(name, config, struct_dim, causal=config.causal)) for name in names}  # every mixer of the pattern
    return count(model) - count(model.stack.layers), per_layer


def _with_width(config: SOSMConfig, d_model: int):
    """``config`` at width ``d_model``, or None where that width is invalid for its mixers (diff_attention: hd % 4)."""
    try:
        return replace(config, d_model=d_model)
    except ValueError:
        return None


def matched_config(reference: SOSMConfig, model: str, tolerance: float = 0.05) -> SOSMConfig:
    """A ``model`` config whose parameter count is within ``tolerance`` of ``reference``'s.

    Keeps everything else of ``reference``; first searches ``n_layers`` at the same width,
    then (if no depth fits) depth and width ``d_model`` together (multiples of ``2 * n_heads``
    in ``[d_model / 2, 2 d_model]``), preferring the width closest to the reference's. Returns the closest config found.

    Args:
        reference: the config to match (usually the hybrid).
        model: one of :func:`~sosm.model.config.model_kinds` (``"hybrid"``, ``"transformer"``, a mixer name).
        tolerance: accepted relative difference of parameter counts (default 0.05).

    Raises:
        ValueError: for an unknown ``model``, or when nothing gets within ``tolerance``.

    """
    if model not in model_kinds():
        raise ValueError(f"model={model!r} is invalid; accepted: one of {model_kinds()}")
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance!r} is invalid; accepted: a float > 0")
    graph_model = model == "hybrid" or get_mixer(model).needs_graph
    positional = reference.positional if graph_model else "rope"
    target = param_count(reference)
    parts: dict = {}

    def count(config):
        if config.d_model not in parts:
            parts[config.d_model] = _parameter_parts(config)
        base, per_layer = parts[config.d_model]
        return base + sum(per_layer[name] for name in config.layer_types)

    def error(config):
        return abs(count(config) - target) / target

    depths = [replace(reference, model=model, positional=positional, n_layers=n)
              for n in range(1, 4 * reference.n_layers + 1)]
    best = min(depths, key=error)
    if error(best) > tolerance:
        step = 2 * reference.n_heads
        widths = range(max(step, reference.d_model // 2 // step * step), 2 * reference.d_model + 1, step)
        grid = [config for config in (_with_width(config, d) for config in depths for d in widths
                                      if not (positional == "graph_rope"
                                              and d // reference.n_heads // 2 < reference.graph.num_landmarks))
                if config is not None]
        best = min([best] + grid, key=lambda config: (round(error(config), 2), abs(config.d_model - reference.d_model)))
    if error(best) > tolerance:
        raise ValueError(f"no {model} config within tolerance={tolerance} of {target} parameters "
                         f"(closest: {count(best)} with n_layers={best.n_layers}, d_model={best.d_model})")
    return best
