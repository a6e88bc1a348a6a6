"""``SOSMModel``: token ids -> (logits, State) for the hybrid and every baseline.

One forward pass (graph-based models: ``hybrid``, ``graph_attention``)::

    semantic [B,T,64], temporal [B,T,32], x [B,T,d] = StateFrontEnd(input_ids)
    graph  = GraphBuilder(config.graph).build(semantic, temporal)   # no grad, causal, once
    neighbors [B,T,Kn] = to_neighbor_index(graph); layout = GraphLayout.build(neighbors)  # once
    coords [B,T,L] = min(landmark_distances, max_distance + 1)     # structure="landmarks" (default)
                   | causal RWPE(graph) * (max_distance + 1)       # structure="rwpe"
    structure = MLP(coords)
    x = LayerStack(x, LayerContext(angles, neighbors, layout, coords, structure))
    logits = head(x)

The Transformer and Mamba baselines embed tokens with a plain ``nn.Embedding`` and build no graph.

**Factorized embeddings** (ALBERT, Lan et al. 2020; ``config.embed_dim = e``): tokens enter through
an ``e``-wide embedding, ``vocab -> e -> d_model``, and the tied LM head leaves through the same
factor, ``d_model -> e`` (``head_proj``) then the embedding matrix transposed: ``V·e + e·d`` parameters
on each side instead of ``V·d``. The graph models always factor (``vocab -> e -> 64 -> d_model``
through the semantic state, ``e = 128`` when ``embed_dim`` is 0), so there ``embed_dim`` sets that
``e``; the other models factor only when it is set.

**Long-term memory** (``config.memory``; :mod:`sosm.model.memory_attention`): ``forward(ids,
memory=bank, stream_offset=o)`` adds memory edges to the graph with
``sosm.memory.integrate_into_graph`` (token t of the window is at stream position ``o + t``
and sees only entries written at earlier positions) and every graph-attention layer also
attends over the retrieved entries' stored K/V. ``record_kv=[]`` collects each
graph-attention layer's ``(k, v)`` to write the window into memory afterwards.
``mamba_state`` (one dict per layer) carries Mamba conv + SSM state from window to window
(:meth:`sosm.model.stack.LayerStack.forward_carry`); attention K/V are not carried.

**Graph frame.** Graphs are built over a frame of ``max(T, graph.min_seq_len)`` positions, or
of ``max_seq_len`` positions when landmarks are used (the causal landmark rule places slot l at
``l * (frame // L)``, so a fixed frame keeps landmark positions independent of T); positions
past T are padding (``padding_mask`` False), and in causal mode they cannot affect rows < T.
The same frame is used by incremental decoding, so its rows equal the full forward's.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kernels import GraphLayout
from .config import SOSMConfig
from .context import LayerContext
from .stack import LayerStack
from .mixers import GraphAttention, Mixer
from .positional import StructuralEncoding, graph_rope_angles, landmark_coordinates, rope_angles, walk_coordinates
from .state import EMBED_FACTOR_DIM, State, StateFrontEnd


class SOSMModel(nn.Module):
    """Language model over token ids: the Graph-Mamba hybrid or a baseline, chosen by ``config.model``.

    Args:
        config: :class:`SOSMConfig`.

    Shapes: ``forward(input_ids [B, T] long) -> (logits [B, T, V] float32, State)``.

    Example:
        >>> model = SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, vocab_size=50))
        >>> logits, state = model(torch.randint(0, 50, (2, 16)))
        >>> logits.shape
        torch.Size([2, 16, 50])
    """

    def __init__(self, config: SOSMConfig):
        super().__init__()
        if not isinstance(config, SOSMConfig):
            raise TypeError(f"config must be a SOSMConfig, got {type(config).__name__}")
        self.config = config
        d, vocab = config.d_model, config.vocab_size
        self.use_structure = config.structure_dims > 0  # graph coordinates for Mamba's Δ and Graph-RoPE/ALiBi
        self.use_landmarks = self.use_structure and config.structure == "landmarks"
        factor = config.embed_dim or (EMBED_FACTOR_DIM if config.uses_graph else 0)  # e; 0: vocab -> d directly
        if config.uses_graph:
            self.front = StateFrontEnd(vocab, d, factor)
        else:
            self.embedding = nn.Embedding(vocab, factor or d)
            self.embed_proj = nn.Linear(factor, d, bias=False) if factor else None  # e -> d_model
        tied_factor = factor if config.tie_embeddings else 0
        self.head_proj = nn.Linear(d, tied_factor, bias=False) if tied_factor else None  # d_model -> e, then E^T
        self.lm_head = None if config.tie_embeddings else nn.Linear(d, vocab, bias=False)
        struct_dim = config.struct_dim if self.use_structure else None
        self.structure = (StructuralEncoding(config.structure_dims, config.graph.max_distance, config.struct_dim)
                          if self.use_structure else None)
        self.dropout = nn.Dropout(config.dropout)
        self.stack = LayerStack(config, struct_dim)
        self._builders: dict = {}
        attention = [layer for layer in self.stack.layers if isinstance(layer, GraphAttention)]
        for index, layer in enumerate(attention):
            layer.attention_index = index  # row of the memory K/V bank this layer reads and writes
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                scaled = name.endswith(("out_proj", "fc_out"))  # residual outputs, GPT-2 style
                nn.init.normal_(module.weight, 0.0, std / (2 * self.config.n_layers) ** 0.5 if scaled else std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, Mixer):
                module.init_parameters()  # each mixer's own special init (Mamba: A, D, dt bias)
        if self.config.uses_graph:
            self.front.reset_parameters(std)  # variance-aware: token identity as strong as a plain embedding
        elif self.embed_proj is not None:  # e -> d preserves variance: the stack input is as strong as a plain embedding's
            nn.init.normal_(self.embed_proj.weight, 0.0, self.embed_proj.in_features ** -0.5)

    @property
    def token_embedding(self) -> nn.Embedding:
        """The embedding whose output is the first token representation (``[B, T, e]`` or ``[B, T, d_model]``)."""
        return self.front.semantic.token_embedding if self.config.uses_graph else self.embedding

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The stack input of the models without a graph: ``[B, T]`` ids -> ``[B, T, d_model]`` (through ``e`` when factorized)."""
        x = self.embedding(input_ids)  # [B, T, e or d_model]
        return x if self.embed_proj is None else self.embed_proj(x)  # [B, T, d_model]

    def check_input_ids(self, input_ids, name: str = "input_ids") -> torch.Tensor:
        """Validate ``[B, T]`` integer ids in ``[0, vocab_size)`` with ``1 <= T <= max_seq_len`` (one host sync)."""
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.dtype not in (torch.long, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{name} must have an integer dtype (torch.long), got {input_ids.dtype}")
        if input_ids.dim() != 2 or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
            raise ValueError(f"{name} must be [B, T] with B, T >= 1, got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_seq_len:
            raise ValueError(f"{name} has T={input_ids.shape[1]} tokens; accepted: 1..max_seq_len="
                             f"{self.config.max_seq_len}")
        if torch.compiler.is_exporting():
            return input_ids.long()  # values cannot be read while tracing (the exported graph's caller checks them)
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"{name} holds ids in [{low}, {high}]; accepted: 0..vocab_size-1="
                             f"{self.config.vocab_size - 1}")
        return input_ids.long()

    def graph_builder(self, device: torch.device):
        """The ``GraphBuilder`` for ``config.graph`` (fused top-k kernel on CUDA), one per device type."""
        from ..graph import GraphBuilder

        if device.type not in self._builders:
            topk_fn = None
            if device.type == "cuda":
                from ..kernels.topk_similarity import MAX_K, topk_similarity
                if self.config.graph.effective_k_max <= MAX_K:  # the kernel's limit; above it the streaming top-k
                    topk_fn = topk_similarity
            graph_config = self.config.graph
            if self.config.structure != "landmarks" and graph_config.num_landmarks:
                graph_config = replace(graph_config, num_landmarks=0)  # RWPE coordinates: landmarks would go unused
            self._builders[device.type] = GraphBuilder(graph_config, topk_fn=topk_fn)
        return self._builders[device.type]

    def graph_frame(self, seq_len: int) -> int:
        """Length of the frame graphs are built in for a sequence of ``seq_len`` tokens (module docstring)."""
        if self.use_landmarks:
            return max(self.config.max_seq_len, self.config.graph.min_seq_len)
        return max(seq_len, self.config.graph.min_seq_len)

    @torch.no_grad()
    def build_graph(self, semantic: torch.Tensor, temporal: torch.Tensor):
        """Causal graph of ``semantic [B, T, 64]`` in the graph frame.

        Returns:
            ``(graph, neighbors [B, T, Kn], distances [B, T, L] or None)``; the graph covers
            the whole frame (padding rows included), ``neighbors``/``distances`` only the T rows.
        """
        from ..graph.convert import to_neighbor_index

        B, T, _ = semantic.shape
        frame = self.graph_frame(T)
        padding_mask = None
        if frame > T:
            semantic = F.pad(semantic, (0, 0, 0, frame - T))
            temporal = F.pad(temporal, (0, 0, 0, frame - T))
            padding_mask = torch.zeros(B, frame, dtype=torch.bool, device=semantic.device)
            padding_mask[:, :T] = True
        graph = self.graph_builder(semantic.device).build(semantic.float(), temporal.float(),
                                                          padding_mask=padding_mask)
        neighbors = to_neighbor_index(graph)[:, :T]  # [B, T, Kn]
        distances = None if graph.landmark_distances is None else graph.landmark_distances[:, :T]  # [B, T, L]
        return graph, neighbors, distances

    def structure_coordinates(self, graph, distances: Optional[torch.Tensor], seq_len: int) -> torch.Tensor:
        """Graph coordinates ``[B, seq_len, L]`` float of the first ``seq_len`` positions of a built graph.

        ``structure="landmarks"``: ``min(distance, max_distance + 1)`` of ``distances [B, T, L]``.
        ``structure="rwpe"``: :meth:`random_walk` times ``max_distance + 1``
        (:func:`~sosm.model.positional.walk_coordinates`), so that both kinds share one range and
        Graph-RoPE's frequencies, Graph-ALiBi's slopes and the encoding's normalisation mean the same.
        """
        c = self.config
        if c.structure == "landmarks":
            return landmark_coordinates(distances[:, :seq_len], c.graph.max_distance)
        return walk_coordinates(self.random_walk(graph, seq_len), c.graph.max_distance)

    def random_walk(self, graph, seq_len: int) -> torch.Tensor:
        """Return probabilities ``[B, seq_len, rwpe_steps]`` of walks of 1..``rwpe_steps`` steps on a built graph.

        :func:`sosm.graph.landmarks.random_walk_encoding` over the token edges of the first ``seq_len``
        positions; causal graphs: the walk on each position's prefix graph.
        """
        from ..graph.landmarks import random_walk_encoding

        c = self.config
        B, frame = graph.batch_size, graph.seq_len
        src, dst = graph.edge_index
        keep = (src < B * frame) & (dst < B * frame) & (src % frame < seq_len) & (dst % frame < seq_len)
        # rows < seq_len of a causal walk read only positions < seq_len: renumber into a frame of seq_len
        edges = torch.stack([src[keep] // frame * seq_len + src[keep] % frame,
                             dst[keep] // frame * seq_len + dst[keep] % frame])
        walk = random_walk_encoding(edges, B * seq_len, c.rwpe_steps, causal=c.graph.causal, seq_len=seq_len)
        return walk.reshape(B, seq_len, c.rwpe_steps)

    def positions(self, seq_len: int, start: int, coords: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
        """Rotary angles for the attention layers (``[1 or B, T, head_dim/2]``) or None."""
        c = self.config
        if c.model == "mamba" or c.positional in ("none", "graph_alibi"):
            return None
        if c.positional == "graph_rope":
            return graph_rope_angles(coords, c.head_dim, c.rope_base)
        return rope_angles(torch.arange(start, start + seq_len, device=device), c.head_dim, c.rope_base)[None]

    def logits_from_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final hidden ``[B, T, d_model]`` -> logits ``[B, T, V]`` (float32)."""
        if self.head_proj is not None:
            x = self.head_proj(x)  # [B, T, e]
        if self.lm_head is not None:
            return self.lm_head(x).float()
        return F.linear(x, self.token_embedding.weight).float()  # tied

    def forward(self, input_ids: torch.Tensor, return_hidden: bool = False, *, memory=None,
                stream_offset=0, record_kv: Optional[list] = None, mamba_state: Optional[list] = None,
                logits_mask: Optional[torch.Tensor] = None):
        """Logits and the :class:`State` record.

        Args:
            input_ids: ``[B, T]`` integer token ids, ``1 <= T <= max_seq_len``.
            return_hidden: also keep the residual stream after every layer in ``State.hidden_states``.
            memory: a :class:`~sosm.model.memory_attention.ModelMemory` to read (needs
                ``config.memory=True``); None or an empty memory gives exactly the memory-off output.
            stream_offset: stream position of token 0 (int) or of every token (``LongTensor[B, T]``);
                causal retrieval sees entries written at positions before each token's.
            record_kv: a list that receives each graph-attention layer's ``(k, v)`` ``[B, T, H, d]``.
            mamba_state: one dict per layer (``len == n_layers``), updated in place: Mamba layers
                start from and leave their conv + SSM state there (window-to-window carry).
            logits_mask: bool ``[B, T]``: compute logits only where True (e.g. the answer positions of
                a recall task, where the LM head is most of the cost); None: every position.

        Returns:
            ``(logits [B, T, V] float32, State)``; ``State.graph`` includes the memory edges.
            With ``logits_mask``: logits ``[N, V]`` of the N masked positions in row-major order.
        """
        input_ids = self.check_input_ids(input_ids)
        B, T = input_ids.shape
        state = State()
        ctx = LayerContext(record_kv=record_kv)
        if memory is not None and not self.config.memory:
            raise ValueError("memory was given but SOSMConfig.memory=False; accepted: memory=None, "
                             "or a model built with memory=True")
        if mamba_state is not None and (not isinstance(mamba_state, list) or len(mamba_state) != len(self.stack.layers)):
            raise ValueError(f"mamba_state must be a list of {len(self.stack.layers)} dicts (one per layer), "
                             f"got {type(mamba_state).__name__}")
        if self.config.uses_graph:
            _, semantic, temporal, x = self.front(input_ids)  # [B, T, 128], [B, T, 64], [B, T, 32], [B, T, d]
            graph, ctx.neighbors, distances = self.build_graph(semantic.detach(), temporal.detach())
            if memory is not None and len(memory):
                graph, ctx.memory_slots = self._retrieve(graph, semantic.detach(), memory, stream_offset)
                ctx.memory = memory
            ctx.layout = GraphLayout.build(ctx.neighbors)
            ctx.semantic = semantic  # read by multi-block attention heads (with its gradient: the blocks learn to address)
            state.semantic, state.temporal, state.graph = semantic, temporal, graph
            if self.use_structure:
                coords = self.structure_coordinates(graph, distances, T)  # [B, T, L]
                ctx.structure = self.structure(coords)  # [B, T, S]
                ctx.alibi_coords = coords
                state.landmark_coords, state.landmark_encoding = coords, ctx.structure
        else:
            x = self.embed_tokens(input_ids)  # [B, T, d]
        ctx.angles = self.positions(T, 0, ctx.alibi_coords, input_ids.device)
        if mamba_state is None:
            x, state.hidden_states = self.stack(self.dropout(x), ctx, return_hidden)
        else:
            x, state.hidden_states = self.stack.forward_carry(self.dropout(x), ctx, mamba_state, return_hidden)
        if logits_mask is not None:
            if logits_mask.dtype != torch.bool or tuple(logits_mask.shape) != (B, T):
                raise ValueError(f"logits_mask must be a bool tensor of shape [B, T] = {(B, T)}, got "
                                 f"{logits_mask.dtype} {tuple(logits_mask.shape)}")
            x = x[logits_mask]  # [N, d_model]
        return self.logits_from_hidden(x), state

    @torch.no_grad()
    def _retrieve(self, graph, semantic: torch.Tensor, memory, stream_offset):
        """Memory edges for the T real rows: ``(graph with memory edges, slots [B, T, Km])``."""
        from ..memory import integrate_into_graph
        from .memory_attention import memory_slots

        B, T, _ = semantic.shape
        frame = graph.seq_len
        positions = stream_offset
        if isinstance(stream_offset, torch.Tensor) and frame > T:
            if tuple(stream_offset.shape) != (B, T):
                raise ValueError(f"stream_offset must be an int or LongTensor[B={B}, T={T}], got {tuple(stream_offset.shape)}")
            positions = F.pad(stream_offset, (0, frame - T), value=0)  # padding rows retrieve nothing
        padded = F.pad(semantic.float(), (0, 0, 0, frame - T))  # [B, frame, 64]
        graph = integrate_into_graph(graph, padded, memory.index, self.config.memory_k, self.config.memory_threshold,
                                     causal=True, positions=positions)
        return graph, memory_slots(graph, B, T).to(semantic.device)

    @torch.no_grad()
    def memory_slots_of(self, semantic: torch.Tensor, memory, stream_offset) -> torch.Tensor:
        """Memory ids ``[B, T, Km]`` (-1 padded) that the rows ``semantic [B, T, 64]`` retrieve, as the forward does.

        Retrieval of a row depends only on its state, its stream position and the memory, so a
        decoding step asks for its one new row and gets the full forward's slots for it.
        """
        from ..graph.types import SemanticGraph, empty_edge_columns

        B, T, _ = semantic.shape
        empty = SemanticGraph(edge_index=torch.empty(2, 0, dtype=torch.long, device=semantic.device),
                              **empty_edge_columns(0, semantic.device), batch_size=B, seq_len=T)
        return self._retrieve(empty, semantic, memory, stream_offset)[1]

    def decoder(self, batch_size: int = 1, memory=None, stream_offset: int = 0):
        """A fresh :class:`~sosm.model.generation.IncrementalDecoder` over this model (reading ``memory`` if given)."""
        from .generation import IncrementalDecoder

        return IncrementalDecoder(self, batch_size, memory=memory, stream_offset=stream_offset)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, seed: Optional[int] = None,
                 generator: Optional[torch.Generator] = None, memory=None, stream_offset: int = 0,
                 streamer=None) -> torch.Tensor:
        """Sample a continuation with incremental decoding (see :mod:`sosm.model.generation`).

        Args:
            input_ids: ``[B, T]`` prompt ids.
            max_new_tokens: tokens to add (>= 1).
            temperature: softmax temperature (> 0), or 0 for greedy decoding.
            top_k: sample among the ``top_k`` likeliest tokens (None: all).
            seed: seed of a private ``torch.Generator`` (ignored when ``generator`` is given).
            generator: the random generator to sample with.
            memory: a ``ModelMemory`` to read while decoding (needs ``config.memory``); None: no memory.
            stream_offset: stream position of the prompt's first token (causal retrieval).
            streamer: called with each new token's ids ``[B]`` as soon as it is sampled (printing as it goes).

        Returns:
            ``[B, T + max_new_tokens]`` long ids.
        """
        from .generation import generate

        return generate(self, input_ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                        generator=generator, memory=memory, stream_offset=stream_offset, streamer=streamer)

    def save_pretrained(self, directory) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``, each atomically."""
        from .serialization import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, map_location="cpu") -> "SOSMModel":
        """Load a model written by :meth:`save_pretrained`; a corrupt or mismatched file raises ``ValueError``."""
        from .serialization import load_pretrained

        return load_pretrained(cls, directory, map_location)
