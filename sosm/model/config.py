"""`SOSMConfig`: every knob of :class:`sosm.model.SOSMModel`, with its default and accepted range.

Example:
    >>> from sosm.model import SOSMConfig
    >>> config = SOSMConfig(model="hybrid", d_model=64, n_layers=4, vocab_size=65)
    >>> config.layer_types
    'AMMM'
    >>> SOSMConfig.from_json(config.to_json()) == config
    True
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Union

from ..graph.config import GraphConfig, reject_unknown_keys

MODELS = ("hybrid", "transformer", "mamba", "graph_attention")
POSITIONALS = ("rope", "graph_rope", "graph_alibi", "none")
LAYER_CODES = "AM"  # A = graph attention + MLP, M = TopologicalMamba (T = dense attention, baselines only)


def _default_graph() -> GraphConfig:
    return GraphConfig(k=8, window=1)  # num_landmarks is set from SOSMConfig.num_landmarks


@dataclass
class SOSMConfig:
    """Configuration of :class:`sosm.model.SOSMModel` (defaults are CPU-sized).

    ``model`` picks the stack: ``"hybrid"`` (``layer_pattern`` repeated to ``n_layers``),
    or a baseline: ``"transformer"`` (causal dense attention + RoPE + MLP), ``"mamba"``
    (TopologicalMamba without a graph: no structural encoding) and ``"graph_attention"``
    (every layer graph attention + MLP). The graph-based models (hybrid, graph_attention)
    read tokens through the MU semantic + temporal state; the Transformer and Mamba
    baselines use a plain token embedding, as those models are normally built.
    """

    model: str = "hybrid"               # "hybrid" | "transformer" | "mamba" | "graph_attention"
    vocab_size: int = 256               # token ids are 0..vocab_size-1 (filled from the tokenizer by the trainer)
    max_seq_len: int = 256              # longest input (and the frame in which graphs are built, see model.py)
    d_model: int = 128                  # residual stream width
    n_layers: int = 4                   # layers in the stack
    layer_pattern: str = "AMMM"         # hybrid only: repeated/truncated to n_layers; A = graph attention, M = Mamba
    n_heads: int = 4                    # attention heads (d_model must divide by it; head dim must be even)
    mlp_ratio: float = 4.0              # MLP hidden width = round(mlp_ratio * d_model); 0: attention layers without an MLP
    d_state: int = 16                   # Mamba SSM state size N
    d_conv: int = 4                     # Mamba causal depthwise conv width
    expand: int = 2                     # Mamba inner width = expand * d_model
    dt_rank: int = 0                    # low-rank width of the Δ projection (0: ceil(d_model / 16))
    dt_min: float = 1e-3                # Δ bias init: dt ~ logUniform[dt_min, dt_max]
    dt_max: float = 1e-1
    graph: GraphConfig = field(default_factory=_default_graph)  # GraphBuilder options (nested dict in JSON/YAML)
    positional: str = "rope"            # attention positions: "rope" | "graph_rope" | "graph_alibi" | "none"
    num_landmarks: int = 8              # L landmarks (0: none); graph.num_landmarks must be 0 or equal
    struct_dim: int = 16                # width of the structural (landmark) encoding fed to Mamba's Δ
    rope_base: float = 10000.0          # RoPE / Graph-RoPE frequency base
    dropout: float = 0.0                # dropout on embeddings, attention/MLP/Mamba outputs (training only)
    tie_embeddings: bool = True         # share the token embedding with the LM head
    init_std: float = 0.02              # std of the normal init of linear and embedding weights
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward (training only)
    memory: bool = False                # long-term memory: graph-attention layers also attend to retrieved K/V (memory edges)
    memory_k: int = 8                   # memory entries retrieved per token (memory=True)
    memory_threshold: float = 0.0       # minimum retrieval similarity (cosine of semantic states) of a memory edge

    def __post_init__(self):
        if isinstance(self.graph, dict):
            self.graph = GraphConfig.from_dict(self.graph)
        elif isinstance(self.graph, GraphConfig):
            self.graph = replace(self.graph)  # own copy: validate() sets graph.num_landmarks
        self.validate()

    def validate(self) -> "SOSMConfig":
        def need(cond, name, accepted):
            if not cond:
                raise ValueError(f"SOSMConfig.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        need(self.model in MODELS, "model", f"one of {MODELS}")
        need(is_int(self.vocab_size) and self.vocab_size >= 2, "vocab_size", "an int >= 2")
        need(is_int(self.max_seq_len) and self.max_seq_len >= 1, "max_seq_len", "an int >= 1")
        need(is_int(self.n_heads) and self.n_heads >= 1, "n_heads", "an int >= 1")
        need(is_int(self.d_model) and self.d_model >= 2 and self.d_model % self.n_heads == 0
             and (self.d_model // self.n_heads) % 2 == 0, "d_model",
             f"an int divisible by n_heads={self.n_heads} with an even head dim")
        need(is_int(self.n_layers) and self.n_layers >= 1, "n_layers", "an int >= 1")
        need(isinstance(self.layer_pattern, str) and self.layer_pattern
             and set(self.layer_pattern) <= set(LAYER_CODES), "layer_pattern",
             f"a non-empty string over {list(LAYER_CODES)} (A = graph attention, M = Mamba)")
        need(isinstance(self.mlp_ratio, (int, float)) and not isinstance(self.mlp_ratio, bool) and self.mlp_ratio >= 0
             and (self.mlp_ratio == 0 or self.mlp_hidden >= 1), "mlp_ratio",
             "0 (no MLP) or a float > 0 with round(mlp_ratio * d_model) >= 1")
        need(is_int(self.d_state) and self.d_state >= 1, "d_state", "an int >= 1")
        need(is_int(self.d_conv) and self.d_conv >= 1, "d_conv", "an int >= 1")
        need(is_int(self.expand) and self.expand >= 1, "expand", "an int >= 1")
        need(is_int(self.dt_rank) and self.dt_rank >= 0, "dt_rank", "an int >= 0 (0: ceil(d_model / 16))")
        need(0 < self.dt_min <= self.dt_max, "dt_min", f"0 < dt_min <= dt_max={self.dt_max}")
        if not isinstance(self.graph, GraphConfig):
            raise TypeError(f"SOSMConfig.graph must be a GraphConfig or a dict, got {type(self.graph).__name__}")
        need(self.positional in POSITIONALS, "positional", f"one of {POSITIONALS}")
        need(is_int(self.num_landmarks) and self.num_landmarks >= 0, "num_landmarks", "an int >= 0")
        need(self.graph.num_landmarks in (0, self.num_landmarks), "num_landmarks",
             f"equal to graph.num_landmarks={self.graph.num_landmarks} (or leave graph.num_landmarks at 0)")
        self.graph.num_landmarks = self.num_landmarks
        need(is_int(self.struct_dim) and self.struct_dim >= 1, "struct_dim", "an int >= 1")
        need(self.rope_base > 1, "rope_base", "a float > 1")
        need(0.0 <= self.dropout < 1.0, "dropout", "a float in [0, 1)")
        need(isinstance(self.tie_embeddings, bool), "tie_embeddings", "true or false")
        need(self.init_std > 0, "init_std", "a float > 0")
        need(isinstance(self.gradient_checkpointing, bool), "gradient_checkpointing", "true or false")
        need(isinstance(self.memory, bool), "memory", "true or false")
        need(is_int(self.memory_k) and self.memory_k >= 1, "memory_k", "an int >= 1")
        need(isinstance(self.memory_threshold, (int, float)) and not isinstance(self.memory_threshold, bool)
             and -1.0 <= self.memory_threshold <= 1.0, "memory_threshold", "a float in [-1, 1] (cosine similarity)")
        if self.memory:
            need(self.uses_graph and "A" in self.layer_types, "memory",
                 "false unless the model has graph-attention layers (model 'hybrid' or 'graph_attention' with an 'A' layer)")
        if self.positional in ("graph_rope", "graph_alibi"):
            need(self.uses_graph, "positional",
                 f"'rope' or 'none' for model={self.model!r} (graph positions need a graph-based model)")
            need(self.num_landmarks >= 1, "positional", "'rope' or 'none' when num_landmarks=0 "
                 "(graph positions need landmarks)")
        if self.positional == "graph_rope":
            need(self.head_dim // 2 >= self.num_landmarks, "positional",
                 f"'graph_rope' only when head_dim/2={self.head_dim // 2} >= num_landmarks={self.num_landmarks} "
                 "(one rotation pair per landmark at least)")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the attention layers' MLP (0: no MLP)."""
        return round(self.mlp_ratio * self.d_model)

    @property
    def uses_graph(self) -> bool:
        """True for the models that build a semantic graph (hybrid, graph_attention)."""
        return self.model in ("hybrid", "graph_attention")

    @property
    def layer_types(self) -> str:
        """One code per layer: ``A`` graph attention, ``M`` Mamba, ``T`` dense (Transformer) attention."""
        if self.model == "hybrid":
            repeats = -(-self.n_layers // len(self.layer_pattern))
            return (self.layer_pattern * repeats)[: self.n_layers]
        return {"transformer": "T", "mamba": "M", "graph_attention": "A"}[self.model] * self.n_layers

    def param_count(self) -> int:
        """Trainable parameters of the model this config builds (tied weights counted once)."""
        base, per_layer = _parameter_parts(self)
        return base + sum(per_layer[code] for code in self.layer_types)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "SOSMConfig":
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the valid ones."""
        if not isinstance(data, dict):
            raise TypeError(f"SOSMConfig.from_dict needs a dict, got {type(data).__name__}")
        reject_unknown_keys(data, cls, "SOSMConfig keys")
        data = dict(data)
        if "graph" in data and isinstance(data["graph"], dict):
            data["graph"] = GraphConfig.from_dict(data["graph"])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "SOSMConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_yaml(cls, text: str) -> "SOSMConfig":
        import yaml

        return cls.from_dict(yaml.safe_load(text))

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "SOSMConfig":
        """Read a ``.json`` or ``.yaml``/``.yml`` file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            return cls.from_yaml(text)
        if path.suffix == ".json":
            return cls.from_json(text)
        raise ValueError(f"config file {path} must end in .json, .yaml or .yml")


def _parameter_parts(config: SOSMConfig) -> tuple[int, dict]:
    """(parameters outside the layer stack, parameters of one layer per layer code), counted on the meta device."""
    import torch

    from .baselines import make_layer
    from .model import SOSMModel

    def count(module):
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        model = SOSMModel(replace(config, n_layers=1, layer_pattern=config.layer_types[0]
                                  if config.model == "hybrid" else config.layer_pattern))
        struct_dim = config.struct_dim if model.use_landmarks else None
        codes = set(config.layer_types) | (set(config.layer_pattern) if config.model == "hybrid" else set())
        per_layer = {code: count(make_layer(code, config, struct_dim)) for code in codes}  # every code of the pattern
    return count(model) - count(model.stack.layers), per_layer


def matched_config(reference: SOSMConfig, model: str, tolerance: float = 0.05) -> SOSMConfig:
    """A ``model`` config whose parameter count is within ``tolerance`` of ``reference``'s.

    Keeps everything else of ``reference``; first searches ``n_layers`` at the same width,
    then (if no depth fits) depth and width ``d_model`` together (multiples of ``2 * n_heads``
    in ``[d_model / 2, 2 d_model]``), preferring the width closest to the reference's. Returns the closest config found.

    Args:
        reference: the config to match (usually the hybrid).
        model: one of ``MODELS``.
        tolerance: accepted relative difference of parameter counts (default 0.05).

    Raises:
        ValueError: for an unknown ``model``, or when nothing gets within ``tolerance``.

    Example:
        >>> hybrid = SOSMConfig(d_model=64, vocab_size=65)
        >>> transformer = matched_config(hybrid, "transformer")
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r} is invalid; accepted: one of {MODELS}")
    if not tolerance > 0:
        raise ValueError(f"tolerance={tolerance!r} is invalid; accepted: a float > 0")
    positional = reference.positional if model in ("hybrid", "graph_attention") else "rope"
    target = reference.param_count()
    parts: dict = {}

    def count(config):
        if config.d_model not in parts:
            parts[config.d_model] = _parameter_parts(config)
        base, per_layer = parts[config.d_model]
        return base + sum(per_layer[code] for code in config.layer_types)

    def error(config):
        return abs(count(config) - target) / target

    depths = [replace(reference, model=model, positional=positional, n_layers=n)
              for n in range(1, 4 * reference.n_layers + 1)]
    best = min(depths, key=error)
    if error(best) > tolerance:
        step = 2 * reference.n_heads
        widths = range(max(step, reference.d_model // 2 // step * step), 2 * reference.d_model + 1, step)
        grid = [replace(config, d_model=d) for config in depths for d in widths
                if not (positional == "graph_rope" and d // reference.n_heads // 2 < reference.num_landmarks)]
        best = min([best] + grid, key=lambda config: (round(error(config), 2), abs(config.d_model - reference.d_model)))
    if error(best) > tolerance:
        raise ValueError(f"no {model} config within tolerance={tolerance} of {target} parameters "
                         f"(closest: {count(best)} with n_layers={best.n_layers}, d_model={best.d_model})")
    return best
