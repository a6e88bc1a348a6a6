"""`GraphConfig`: every knob of `GraphBuilder`, with its default and accepted range."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

from ..common.blocks import BLOCK_NAMES, DEFAULT_BLOCK_WEIGHTS
from ..common.configs import reject_unknown_keys, rename_keys

SIMILARITY_MODES = ("full", "blocks", "projection")
LANDMARK_RULES = ("auto", "degree", "stride")
#: knobs renamed in 0.2 (old name -> new name), accepted in config files until the next release
RENAMED = {"block_size": "topk_tile", "seed": "sample_seed"}


@dataclass
class GraphConfig:
    """Configuration of :class:`sosm.graph.GraphBuilder`.

    Causal mode (the default) guarantees that the edges of query i, its adaptive K,
    mutual-kNN decisions, shortcuts, landmark choice and landmark distances depend only
    on positions <= i. ``causal=False`` is the bidirectional mode for graph analysis.
    """

    causal: bool = True                 # False: bidirectional graph (analysis/encoders only)
    # sequential edges
    window: int = 1                     # j -> i for 1 <= i - j <= window (0 disables)
    # semantic top-k
    k: int = 8                          # neighbours per token (K_base when adaptive_k)
    similarity: str = "blocks"          # "full" 64-d cosine | "blocks" weighted named blocks | "projection"
    block_weights: dict = field(default_factory=lambda: dict(DEFAULT_BLOCK_WEIGHTS))  # for "blocks"
    projection_dim: int = 16            # for "projection": fixed random orthonormal 64 -> projection_dim
    projection_seed: int = 0            # seed of that projection
    topk_tile: int = 1024               # streaming top-k tile: topk_tile/4 query rows x 4*topk_tile key columns (memory O(B*topk_tile^2))
    # entropy-adaptive K
    adaptive_k: bool = False
    k_min: int = 2
    k_max: int = 16
    alpha: float = 1.0                  # K_i = clamp(round(k * (1 + alpha * (H_i - 0.5))), k_min, k_max), H_i in [0, 1]
    # filters
    mutual: bool = False                # keep j -> i only if i also ranks in j's top-K (causal rule: among j's candidates <= i)
    threshold: Optional[float] = None   # keep semantic edges with similarity > threshold
    temporal_gate: bool = False         # accept if (sim > tau_mu and gate > tau_t) or sim > tau_high
    tau_mu: float = 0.3
    tau_t: float = 0.5
    tau_high: float = 0.8
    successor_edges: bool = False       # also j+1 -> i for every kept semantic edge j -> i (what followed a similar token)
    # shortcuts
    betweenness_shortcuts: int = 0      # bridging hubs per chunk (0 disables)
    betweenness_chunk: int = 64         # causal: hubs of chunks that ended before the query's chunk
    betweenness_samples: Optional[int] = 256  # networkx k-sampling for large graphs (None: exact)
    fibonacci_shortcuts: bool = False   # j = i - F_n for Fibonacci F_n > window, up to fibonacci_max
    fibonacci_max: int = 256
    sample_seed: int = 0                # seed of the builder's own random choices (betweenness sampling, temporal gate init)
    # landmarks
    num_landmarks: int = 0              # L (0 disables landmarks)
    landmark_rule: str = "auto"         # "auto": "stride" when causal else "degree"
    max_distance: int = 64              # BFS depth cap; farther nodes are UNREACHABLE

    def __post_init__(self):
        self.validate()

    def validate(self) -> "GraphConfig":
        def need(cond, name, accepted):
            if not cond:
                raise ValueError(f"GraphConfig.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")
        need(isinstance(self.k, int) and self.k > 0, "k", "an int >= 1")
        need(isinstance(self.window, int) and self.window >= 0, "window", "an int >= 0")
        need(self.similarity in SIMILARITY_MODES, "similarity", f"one of {SIMILARITY_MODES}")
        need(isinstance(self.block_weights, dict) and self.block_weights
             and all(b in BLOCK_NAMES for b in self.block_weights)
             and all(float(w) >= 0 for w in self.block_weights.values())
             and sum(float(w) for w in self.block_weights.values()) > 0,
             "block_weights", f"a non-empty dict of non-negative weights over {list(BLOCK_NAMES)}")
        need(1 <= self.projection_dim <= 64, "projection_dim", "1..64")
        need(isinstance(self.topk_tile, int) and self.topk_tile >= 16, "topk_tile", "an int >= 16")
        need(1 <= self.k_min <= self.k_max, "k_min", f"1 <= k_min <= k_max={self.k_max}")
        need(not self.adaptive_k or self.k_min <= self.k <= self.k_max, "k",
             f"k_min={self.k_min} <= k <= k_max={self.k_max} when adaptive_k=True (or change k_min / k_max)")
        need(self.alpha >= 0, "alpha", ">= 0")
        need(self.threshold is None or -1.0 <= self.threshold <= 1.0, "threshold", "None or a float in [-1, 1]")
        need(self.betweenness_shortcuts >= 0, "betweenness_shortcuts", ">= 0")
        need(self.betweenness_chunk >= 4, "betweenness_chunk", ">= 4")
        need(self.betweenness_samples is None or self.betweenness_samples >= 1, "betweenness_samples", "None or >= 1")
        need(self.fibonacci_max >= 2, "fibonacci_max", ">= 2")
        need(self.num_landmarks >= 0, "num_landmarks", ">= 0")
        need(self.landmark_rule in LANDMARK_RULES, "landmark_rule", f"one of {LANDMARK_RULES}")
        need(self.max_distance >= 1, "max_distance", ">= 1")
        if self.causal and self.landmark_rule == "degree":
            raise ValueError("GraphConfig.landmark_rule='degree' looks at the whole sequence and is only valid with "
                             "causal=False; use 'stride' or 'auto' in causal mode")
        return self

    @property
    def effective_k_max(self) -> int:
        """Most semantic neighbours any token can get."""
        return self.k_max if self.adaptive_k else self.k

    @property
    def min_seq_len(self) -> int:
        """Shortest sequence accepted: T must be >= K + 3 (docs/ARCHITECTURE.md, invariant 6)."""
        return self.effective_k_max + 3

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "GraphConfig":
        """Build from a plain dict; unknown keys raise ``ValueError`` listing the valid ones.

        Renamed knobs (:data:`RENAMED`) are still accepted, with a ``FutureWarning`` naming the new name.
        """
        if not isinstance(data, dict):
            raise TypeError(f"GraphConfig.from_dict needs a dict, got {type(data).__name__}")
        data = rename_keys(data, RENAMED, "GraphConfig")
        reject_unknown_keys(data, cls, "GraphConfig keys")
        return cls(**data)
