"""`SOSMConfig`: every knob of :class:`sosm.model.SOSMModel`, with its default and accepted range.

Example:
    >>> from sosm.model import SOSMConfig
    >>> config = SOSMConfig(model="hybrid", d_model=64, n_layers=4, vocab_size=65)
    >>> config.layer_types
    ('graph_attention', 'mamba', 'mamba', 'mamba')
    >>> SOSMConfig.from_json(config.to_json()) == config
    True
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence, Union

from ..common.configs import reject_unknown_keys
from ..graph.config import GraphConfig
from .mixers import get_mixer, mixer_names, resolve_mixer_name
from .mixers.cfc import CFC_VARIANTS
from .mixers.s4 import S4_DISCRETIZATIONS, S4_MATRICES

POSITIONALS = ("rope", "graph_rope", "graph_alibi", "none")
STRUCTURES = ("landmarks", "rwpe")  # graph coordinates: landmark hop distances | causal random-walk encoding


def model_kinds() -> tuple[str, ...]:
    """Accepted ``SOSMConfig.model`` values: ``"hybrid"``, ``"transformer"`` and every registered mixer name."""
    return ("hybrid", "transformer", *(name for name in mixer_names() if name != "attention"), "attention")


def parse_layer_pattern(pattern: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """Canonical mixer names of a layer pattern.

    A pattern is a list of mixer names, a comma-separated string of names (``"mamba,graph_attention"``)
    or a string of one-letter aliases (``"AMMM"``: ``A`` graph attention, ``M`` Mamba, ``T`` dense
    attention). Raises ``ValueError`` naming the unknown entry and the registered mixers.
    """
    if isinstance(pattern, str):
        if "," in pattern or ":" in pattern or len(pattern) > 1 and pattern in _known_names():
            entries = [part.strip() for part in pattern.split(",")]
        else:
            entries = list(pattern)
    elif isinstance(pattern, (list, tuple)):
        entries = list(pattern)
    else:
        raise ValueError(f"SOSMConfig.layer_pattern={pattern!r} is invalid; accepted: mixer names (a list or "
                         "comma-separated) or one-letter aliases like 'AMMM'")
    if not entries or any(not isinstance(e, str) or not e for e in entries):
        raise ValueError(f"SOSMConfig.layer_pattern={pattern!r} is invalid; accepted: a non-empty list of mixer names")
    try:
        return tuple(resolve_mixer_name(entry) for entry in entries)
    except ValueError as err:
        raise ValueError(f"SOSMConfig.layer_pattern={pattern!r} is invalid: {err}") from None


def _known_names() -> set:
    from .mixers.base import _ALIASES

    return set(_ALIASES)


#: where the model's graph differs from ``GraphConfig()``'s defaults: 8 landmarks (the builder alone uses
#: none). A ``graph`` given as a dict is laid over these; a ``GraphConfig`` object is taken as it is.
MODEL_GRAPH_DEFAULTS = {"k": 8, "window": 1, "num_landmarks": 8}


def _default_graph() -> GraphConfig:
    return GraphConfig(**MODEL_GRAPH_DEFAULTS)


@dataclass
class SOSMConfig:
    """Configuration of :class:`sosm.model.SOSMModel` (defaults are CPU-sized).

    ``model`` picks the stack: ``"hybrid"`` (the mixers of ``layer_pattern`` repeated to
    ``n_layers``), or a pure stack of one registered mixer (:mod:`sosm.model.mixers`):
    ``"transformer"`` (causal dense attention + RoPE + MLP; the mixer ``"attention"``),
    ``"mamba"`` (TopologicalMamba without a graph: no structural encoding), ``"graph_attention"``
    (every layer graph attention + MLP), and every other registered mixer. The graph-based models
    (hybrid, and pure stacks of a mixer that needs the graph) read tokens through the MU semantic
    + temporal state; the others use a plain token embedding, as those models are normally built.
    """

    model: str = "hybrid"               # "hybrid" | "transformer" | a mixer name ("mamba", "graph_attention", ...): a pure stack
    vocab_size: int = 256               # token ids are 0..vocab_size-1 (filled from the tokenizer by the trainer)
    max_seq_len: int = 256              # longest input (and the frame in which graphs are built, see model.py)
    d_model: int = 128                  # residual stream width
    n_layers: int = 4                   # layers in the stack
    layer_pattern: Union[str, list] = "AMMM"  # hybrid only: mixer names or one-letter aliases (A graph attention, M Mamba, T attention), repeated/truncated to n_layers
    n_heads: int = 4                    # heads of attention, Mamba-2, RWKV and RetNet (d_model must divide by it; head dim must be even)
    mlp_ratio: float = 4.0              # MLP hidden width = round(mlp_ratio * d_model) (also RWKV's channel mix, RetNet's FFN); 0: attention layers without an MLP
    d_state: int = 16                   # SSM state size N (Mamba, Mamba-2)
    d_conv: int = 4                     # causal depthwise conv width (Mamba, Mamba-2)
    expand: int = 2                     # inner width = expand * d_model (Mamba, Mamba-2)
    dt_rank: int = 0                    # Mamba: low-rank width of the Δ projection (0: ceil(d_model / 16))
    dt_min: float = 1e-3                # Δ bias init: dt ~ logUniform[dt_min, dt_max] (Mamba, Mamba-2)
    dt_max: float = 1e-1
    mamba2_groups: int = 1              # Mamba-2: groups of heads sharing B and C (n_heads must divide by it)
    chunk_size: int = 0                 # chunk length of the chunked forms (Mamba-2 SSD, RWKV, RetNet; 0: each one's own, 64 / 16 / 64); results do not depend on it
    s4_matrix: str = "legs"             # S4's A: "legs" (S4D-LegS, d_state/2 complex modes) | "lin" (S4D-Lin) | "hippo" (dense HiPPO-LegS, N x N)
    s4_discretization: str = "zoh"      # S4: "zoh" | "bilinear" (stable for every step) | "euler" (only where |1 + Δλ| < 1)
    cfc_variant: str = "cfc"            # CfC: "cfc" (the paper's cell; nonlinear in its state: sequential) | "ltc" (linear LTC: scan)
    performer_features: int = 64        # Performer: positive orthogonal random features m per head (FAVOR+)
    performer_redraw: int = 0           # Performer: draw new random features every this many training forwards (0: never)
    attention_window: int = 32          # sw_attention: each query sees itself and the attention_window - 1 tokens before it
    sigmoid_temperature: float = 1.0    # sw_attention: weights sigmoid(q.k / sqrt(hd) / temperature), then divided by their row sum
    lsh_buckets: int = 8                # lsh_attention: hash buckets per round (even: argmax over [xR, -xR])
    lsh_rounds: int = 2                 # lsh_attention: independent hashing rounds (a query sees the union of its buckets)
    lsh_window: int = 32                # lsh_attention: a query sees the last lsh_window earlier keys of its bucket, per round
    causal: bool = True                 # False: a bidirectional model (mask-predict): every position reads every other, bidirectional-only mixers (linformer, fnet) allowed; a graph model then needs graph.causal=false
    linformer_k: int = 32               # Linformer: length k the sequence axis of K and V is projected to (E, F: k x max_seq_len)
    fnet_glu: bool = False              # FNet: gate the Fourier mixing with a sigmoid GLU (the design's gated variant)
    triple_global: str = "cosformer"    # the triple hybrid's global branch: "cosformer" | "performer" | "attention" | "fnet" | "linformer" (the last two bidirectional only; each must be registered)
    triple_window: int = 16             # the triple hybrid's local branch: W keys per query (itself and W-1 before; bidirectional: and W-1 after)
    graph: GraphConfig = field(default_factory=_default_graph)  # GraphBuilder options incl. num_landmarks (dict: over MODEL_GRAPH_DEFAULTS)
    positional: str = "rope"            # attention positions: "rope" | "graph_rope" | "graph_alibi" | "none"
    struct_dim: int = 16                # width of the structural encoding fed to Mamba's Δ
    structure: str = "landmarks"        # graph coordinates for Mamba's Δ and Graph-RoPE/ALiBi: "landmarks" (hop distances to graph.num_landmarks landmarks) | "rwpe" (causal random-walk return probabilities, rwpe_steps of them; landmarks then not built)
    rwpe_steps: int = 8                 # structure="rwpe": walk lengths 1..rwpe_steps
    rope_base: float = 10000.0          # RoPE / Graph-RoPE frequency base
    dropout: float = 0.0                # dropout on embeddings, attention/MLP/Mamba outputs (training only)
    tie_embeddings: bool = True         # share the token embedding with the LM head
    embed_dim: int = 0                  # factorized embedding width e (ALBERT: vocab -> e -> d_model, head d_model -> e -> vocab when tied); 0: the model's own (graph models e=128, baselines vocab -> d_model)
    init_std: float = 0.02              # std of the normal init of linear and embedding weights
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward (training only)
    memory: bool = False                # long-term memory: graph-attention layers also attend to retrieved K/V (memory edges)
    memory_k: int = 8                   # memory entries retrieved per token (memory=True)
    memory_threshold: float = 0.0       # minimum retrieval similarity (cosine of semantic states) of a memory edge
    moe_experts: int = 0                # > 1: the MLP of every block that has one (the attention mixers) is a mixture of this many experts (sosm.model.mixers.moe); 0: a dense MLP
    moe_k: int = 2                      # top-k: experts per token (1 = Switch); expert choice: average experts per token at moe_capacity 1
    moe_routing: str = "topk"           # "topk" | "expert_choice" (both causal: prefix capacity / prefix rank); "soft" (Soft MoE) is refused: not causal
    moe_capacity: float = 1.25          # capacity factor: an expert processes at most ceil(moe_capacity * moe_k * n / moe_experts) of every n-token prefix (0: none, top-k only)
    moe_hidden: int = 0                 # each expert's hidden width (0: mlp_hidden / moe_k, so k experts hold the dense MLP's active parameters)
    moe_balance_weight: float = 0.01    # weight of the Switch load-balancing loss (top-k), added to the training loss
    moe_z_weight: float = 0.001         # weight of the router z-loss (top-k and expert choice), added to the training loss
    mod_every: int = 0                  # Mixture-of-Depths: layers n-1, 2n-1, ... become "mod:<their mixer>" (0: none; "mod:<name>" in layer_pattern places them by hand)
    mod_capacity: float = 0.5           # share of tokens a Mixture-of-Depths layer sends through its block (causal prefix top-k)

    def __post_init__(self):
        if isinstance(self.graph, dict):
            self.graph = GraphConfig.from_dict({**MODEL_GRAPH_DEFAULTS, **self.graph})
        elif isinstance(self.graph, GraphConfig):
            self.graph = replace(self.graph)  # own copy: never shares the caller's object
        self.validate()

    def validate(self) -> "SOSMConfig":
        def need(cond, name, accepted):
            if not cond:
                raise ValueError(f"SOSMConfig.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        def is_int(value):
            return isinstance(value, int) and not isinstance(value, bool)

        need(isinstance(self.model, str) and self.model in model_kinds(), "model", f"one of {model_kinds()}")
        need(is_int(self.vocab_size) and self.vocab_size >= 2, "vocab_size", "an int >= 2")
        need(is_int(self.max_seq_len) and self.max_seq_len >= 1, "max_seq_len", "an int >= 1")
        need(is_int(self.n_heads) and self.n_heads >= 1, "n_heads", "an int >= 1")
        need(is_int(self.d_model) and self.d_model >= 2 and self.d_model % self.n_heads == 0
             and (self.d_model // self.n_heads) % 2 == 0, "d_model",
             f"an int divisible by n_heads={self.n_heads} with an even head dim")
        need(is_int(self.n_layers) and self.n_layers >= 1, "n_layers", "an int >= 1")
        parse_layer_pattern(self.layer_pattern)
        need(isinstance(self.causal, bool), "causal", "true (a causal language model) or false (bidirectional)")
        if "diff_attention" in {name.partition(":")[2] or name for name in self.layer_types}:
            need(self.head_dim % 4 == 0, "d_model", f"an int with d_model / n_heads divisible by 4 for diff_attention "
                 f"(two maps of head_dim/2 channels; n_heads={self.n_heads})")
        for name in self.layer_types:
            need(get_mixer(name).causal_capable or not self.causal, "layer_pattern" if self.model == "hybrid" else "model",
                 f"causal mixers only: {name!r} is bidirectional only (it mixes every position with every other), "
                 "which a causal language model cannot use; or causal=false (a bidirectional model)")
        need(isinstance(self.mlp_ratio, (int, float)) and not isinstance(self.mlp_ratio, bool) and self.mlp_ratio >= 0
             and (self.mlp_ratio == 0 or self.mlp_hidden >= 1), "mlp_ratio",
             "0 (no MLP) or a float > 0 with round(mlp_ratio * d_model) >= 1")
        if self.mlp_ratio == 0:
            needing = sorted({name for name in self.layer_types if get_mixer(name).needs_mlp})
            need(not needing, "mlp_ratio", f"a float > 0 for the mixers whose block has an MLP: {needing} "
                 "(mlp_ratio=0 removes the MLP of attention layers only)")
        need(is_int(self.d_state) and self.d_state >= 1, "d_state", "an int >= 1")
        need(is_int(self.d_conv) and self.d_conv >= 1, "d_conv", "an int >= 1")
        need(is_int(self.expand) and self.expand >= 1, "expand", "an int >= 1")
        need(is_int(self.dt_rank) and self.dt_rank >= 0, "dt_rank", "an int >= 0 (0: ceil(d_model / 16))")
        need(0 < self.dt_min <= self.dt_max, "dt_min", f"0 < dt_min <= dt_max={self.dt_max}")
        need(is_int(self.mamba2_groups) and self.mamba2_groups >= 1 and self.n_heads % self.mamba2_groups == 0,
             "mamba2_groups", f"an int >= 1 dividing n_heads={self.n_heads}")
        need(is_int(self.chunk_size) and self.chunk_size >= 0, "chunk_size", "an int >= 1, or 0 for each mixer's own")
        need(self.s4_matrix in S4_MATRICES, "s4_matrix", f"one of {S4_MATRICES}")
        need(self.s4_discretization in S4_DISCRETIZATIONS, "s4_discretization", f"one of {S4_DISCRETIZATIONS}")
        need(self.cfc_variant in CFC_VARIANTS, "cfc_variant", f"one of {CFC_VARIANTS}")
        if "s4" in self.layer_types and self.s4_matrix != "hippo":
            need(self.d_state % 2 == 0, "d_state", f"an even int for s4_matrix={self.s4_matrix!r} (N/2 complex "
                 "modes, each with its conjugate)")
        need(is_int(self.performer_features) and self.performer_features >= 1, "performer_features", "an int >= 1")
        need(is_int(self.performer_redraw) and self.performer_redraw >= 0, "performer_redraw",
             "an int >= 0 (0: never redraw)")
        if self.performer_redraw and "performer" in {name.partition(":")[2] or name for name in self.layer_types}:
            need(not self.gradient_checkpointing, "performer_redraw", "0 with gradient_checkpointing (the recomputed "
                 "forward would redraw the features again and differ from the pass it recomputes)")
        need(is_int(self.attention_window) and self.attention_window >= 1, "attention_window", "an int >= 1")
        need(isinstance(self.sigmoid_temperature, (int, float)) and not isinstance(self.sigmoid_temperature, bool)
             and self.sigmoid_temperature > 0, "sigmoid_temperature", "a float > 0")
        need(is_int(self.lsh_buckets) and self.lsh_buckets >= 2 and self.lsh_buckets % 2 == 0, "lsh_buckets",
             "an even int >= 2 (argmax over [xR, -xR])")
        need(is_int(self.lsh_rounds) and self.lsh_rounds >= 1, "lsh_rounds", "an int >= 1")
        need(is_int(self.lsh_window) and self.lsh_window >= 1, "lsh_window", "an int >= 1")
        if not isinstance(self.graph, GraphConfig):
            raise TypeError(f"SOSMConfig.graph must be a GraphConfig or a dict, got {type(self.graph).__name__}")
        if not self.causal and self.uses_graph:
            need(not self.graph.causal, "causal", "true, or false with a bidirectional graph (graph.causal=false): "
                 "a bidirectional graph model builds its graph over the whole sequence")
        self._validate_attention_family(need, is_int)
        need(self.positional in POSITIONALS, "positional", f"one of {POSITIONALS}")
        need(is_int(self.struct_dim) and self.struct_dim >= 1, "struct_dim", "an int >= 1")
        need(self.structure in STRUCTURES, "structure", f"one of {STRUCTURES}")
        need(is_int(self.rwpe_steps) and self.rwpe_steps >= 1, "rwpe_steps", "an int >= 1")
        need(self.rope_base > 1, "rope_base", "a float > 1")
        need(0.0 <= self.dropout < 1.0, "dropout", "a float in [0, 1)")
        need(isinstance(self.tie_embeddings, bool), "tie_embeddings", "true or false")
        need(is_int(self.embed_dim) and self.embed_dim >= 0, "embed_dim",
             "an int >= 1 (the factorized embedding width), or 0 for the model's own")
        need(self.init_std > 0, "init_std", "a float > 0")
        need(isinstance(self.gradient_checkpointing, bool), "gradient_checkpointing", "true or false")
        need(isinstance(self.memory, bool), "memory", "true or false")
        need(is_int(self.memory_k) and self.memory_k >= 1, "memory_k", "an int >= 1")
        need(isinstance(self.memory_threshold, (int, float)) and not isinstance(self.memory_threshold, bool)
             and -1.0 <= self.memory_threshold <= 1.0, "memory_threshold", "a float in [-1, 1] (cosine similarity)")
        need(is_int(self.moe_experts) and (self.moe_experts == 0 or self.moe_experts >= 2), "moe_experts",
             "0 (a dense MLP) or an int >= 2")
        if self.moe_experts:
            from .mixers.moe import ROUTINGS, SOFT_LEAK
            need(any(get_mixer(name).has_feed_forward for name in self.layer_types), "moe_experts",
                 f"0 for layers {sorted(set(self.layer_types))}: none has an MLP to replace (the attention mixers do)")
            need(self.moe_routing in ROUTINGS, "moe_routing", f"one of {ROUTINGS}")
            need(self.moe_routing != "soft", "moe_routing", f"'topk' or 'expert_choice' in a causal language model: "
                 f"{SOFT_LEAK}")
            need(is_int(self.moe_k) and 1 <= self.moe_k <= self.moe_experts, "moe_k",
                 f"an int in [1, moe_experts={self.moe_experts}]")
            need(isinstance(self.moe_capacity, (int, float)) and not isinstance(self.moe_capacity, bool)
                 and (self.moe_capacity > 0 or self.moe_capacity == 0 and self.moe_routing == "topk"), "moe_capacity",
                 "a float > 0 (or 0, no capacity, for 'topk')")
            need(is_int(self.moe_hidden) and self.moe_hidden >= 0, "moe_hidden", "an int >= 0 (0: mlp_hidden / moe_k)")
            for name in ("moe_balance_weight", "moe_z_weight"):
                need(isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0, name, "a float >= 0")
        need(is_int(self.mod_every) and self.mod_every >= 0, "mod_every", "an int >= 0 (0: no Mixture-of-Depths layer)")
        need(isinstance(self.mod_capacity, (int, float)) and not isinstance(self.mod_capacity, bool)
             and 0 < self.mod_capacity <= 1, "mod_capacity", "a float in (0, 1]")
        if self.memory:
            need(not any(name.startswith("mod:") for name in self.layer_types), "memory",
                 "false with Mixture-of-Depths layers (they do not read memory)")
            need(self.uses_graph and "graph_attention" in self.layer_types, "memory",
                 "false unless the model has graph-attention layers (model 'hybrid' or 'graph_attention' with a "
                 "'graph_attention' layer)")
        if self.positional in ("graph_rope", "graph_alibi"):
            need(self.uses_graph, "positional",
                 f"'rope' or 'none' for model={self.model!r} (graph positions need a graph-based model)")
            need(self.structure_dims >= 1, "positional", "'rope' or 'none' when graph.num_landmarks=0 "
                 "(graph positions need landmarks, or structure='rwpe')")
        if self.positional == "graph_rope":
            what = "graph.num_landmarks" if self.structure == "landmarks" else "rwpe_steps"
            need(self.head_dim // 2 >= self.structure_dims, "positional",
                 f"'graph_rope' only when head_dim/2={self.head_dim // 2} >= {what}={self.structure_dims} "
                 "(one rotation pair per graph coordinate at least)")
        return self

    def _validate_attention_family(self, need, is_int) -> None:
        """The knobs of the bidirectional and multi-block attention mixers and of the triple hybrid (issue 15)."""
        from ..common.blocks import N_BLOCKS
        from .mixers.triple import check_triple_global

        need(is_int(self.linformer_k) and self.linformer_k >= 1, "linformer_k", "an int >= 1")
        need(isinstance(self.fnet_glu, bool), "fnet_glu", "true or false")
        need(is_int(self.triple_window) and self.triple_window >= 1, "triple_window", "an int >= 1")
        names = {name.split(":")[-1] for name in self.layer_types}  # wrapped ones too ("mod:<name>")
        if "triple" in names:
            problem = check_triple_global(self.triple_global, self.causal)
            need(problem is None, "triple_global", problem)
        if "multi_block" in names:
            need(N_BLOCKS % self.n_heads == 0, "n_heads",
                 f"a divisor of the {N_BLOCKS} semantic blocks for multi_block heads (each head reads one group)")
        if not self.causal:
            need(any(get_mixer(name).bidirectional_capable for name in self.layer_types), "causal",
                 f"true, or false with at least one layer that reads later positions when built bidirectional "
                 f"({[n for n in mixer_names() if get_mixer(n).bidirectional_capable]}): every layer of "
                 f"{self.layer_types} is causal-only, so the model would not be bidirectional")

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
    def moe_expert_hidden(self) -> int:
        """Hidden width of each expert: ``moe_hidden``, or ``mlp_hidden / moe_k`` (the dense MLP's active parameters)."""
        return self.moe_hidden or max(1, round(self.mlp_hidden / self.moe_k))

    @property
    def structure_dims(self) -> int:
        """Number of graph coordinates per token (L): landmarks, or RWPE walk lengths; 0 without a graph."""
        if not self.uses_graph:
            return 0
        return self.graph.num_landmarks if self.structure == "landmarks" else self.rwpe_steps

    @property
    def uses_graph(self) -> bool:
        """True for the models that build a semantic graph: the hybrid, and pure stacks of a graph mixer."""
        return self.model == "hybrid" or get_mixer(self.model).needs_graph

    @property
    def layer_types(self) -> tuple[str, ...]:
        """The canonical mixer name of every layer (hybrid: ``layer_pattern`` repeated/truncated to ``n_layers``)."""
        if self.model == "hybrid":
            pattern = parse_layer_pattern(self.layer_pattern)
            repeats = -(-self.n_layers // len(pattern))
            names = (pattern * repeats)[: self.n_layers]
        else:
            names = (resolve_mixer_name(self.model),) * self.n_layers
        if self.mod_every:
            names = tuple(f"mod:{name}" if (i + 1) % self.mod_every == 0 and not name.startswith("mod:") else name
                          for i, name in enumerate(names))
        return names

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "SOSMConfig":
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the valid ones.

        ``num_landmarks`` at the top level (its home before 0.2) is still accepted, with a
        ``FutureWarning``: it moves to ``graph.num_landmarks``.
        """
        if not isinstance(data, dict):
            raise TypeError(f"SOSMConfig.from_dict needs a dict, got {type(data).__name__}")
        data = _move_num_landmarks(data)
        reject_unknown_keys(data, cls, "SOSMConfig keys")
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


def _move_num_landmarks(data: dict) -> dict:
    """``data`` with a top-level ``num_landmarks`` moved into its ``graph`` section (with a FutureWarning)."""
    if "num_landmarks" not in data:
        return data
    data = dict(data)
    value = data.pop("num_landmarks")
    graph = data.get("graph", {})
    graph = graph.to_dict() if isinstance(graph, GraphConfig) else dict(graph)
    if graph.get("num_landmarks", 0) not in (0, value):
        raise ValueError(f"SOSMConfig gives num_landmarks={value!r} (deprecated) and graph.num_landmarks="
                         f"{graph['num_landmarks']!r}; keep only graph.num_landmarks")
    warnings.warn("SOSMConfig: 'num_landmarks' is deprecated and will be removed in the next release; "
                  "it is now 'graph.num_landmarks'", FutureWarning, stacklevel=3)
    graph["num_landmarks"] = value
    data["graph"] = graph
    return data
