"""Incremental decoding: one token at a time, equal to the full forward at every position.

Per new token at position t (:meth:`IncrementalDecoder.step`):

- **graph row**: the new token's semantic state is appended to the prefix states and the
  graph builder runs on the prefix ``0..t`` (in the same graph frame as the full forward,
  see :mod:`sosm.model.model`); row t of the result is the new token's neighbour list and
  graph coordinates (landmark distances, or the random walk on the prefix graph). In causal
  mode row t depends only on positions <= t, so it equals row t of the full forward's graph.
  The builder's streaming top-k over the prefix is cheap next to the layers at these sizes.
- **layers**: each mixer's own :meth:`~sosm.model.mixers.Mixer.step` from its own cache
  (:meth:`~sosm.model.mixers.Mixer.allocate_cache`): attention appends the new token's K/V and
  attends over itself and its neighbours' cached K/V (dense: every cached position); Mamba
  advances its conv state ``[B, E, d_conv - 1]`` and SSM state ``[B, E, N]`` by one step, O(1).

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="mamba", d_model=32, n_heads=2, vocab_size=20)).eval()
    >>> out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, seed=0)
    >>> out.shape
    torch.Size([1, 7])
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch


from .context import LayerContext


class IncrementalDecoder:
    """Decoding state of one batch: per-layer caches, prefix semantic/temporal states, landmark coordinates.

    Args:
        model: a ``SOSMModel`` (its graph must be causal).
        batch_size: B.
        memory: a :class:`~sosm.model.memory_attention.ModelMemory` to read (needs ``config.memory``);
            each new token retrieves from it as the full forward would, so decoding equals
            ``model(ids, memory=memory, stream_offset=stream_offset)`` at every position.
        stream_offset: stream position of token 0 (causal retrieval sees entries written before).

    Example:
        >>> decoder = model.decoder(batch_size=1)
        >>> logits = decoder.step(torch.tensor([5]))   # [1, V] logits of position 0
    """

    def __init__(self, model, batch_size: int, memory=None, stream_offset: int = 0):
        if memory is not None and not model.config.memory:
            raise ValueError("memory was given but SOSMConfig.memory=False; accepted: memory=None, "
                             "or a model built with memory=True")
        if not isinstance(stream_offset, int) or isinstance(stream_offset, bool) or stream_offset < 0:
            raise ValueError(f"stream_offset={stream_offset!r} is invalid; accepted: an int >= 0")
        if not model.config.causal:
            raise ValueError("incremental decoding needs a causal model; this model has causal=False (bidirectional: "
                             "every position reads later ones); accepted: mask-predict decoding "
                             "(sosm.model.mask_predict.mask_predict_decode)")
        if model.config.uses_graph and not model.config.graph.causal:
            raise ValueError("incremental decoding needs a causal graph; this model's graph.causal=False "
                             "(the LEAKY control) looks at later tokens")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} is invalid; accepted: an int >= 1")
        self.model, self.batch_size = model, batch_size
        self.memory, self.stream_offset = memory, stream_offset  # token t sits at stream position offset + t
        param = next(model.parameters())
        self.caches = model.stack.allocate_caches(batch_size, param.device, param.dtype)  # one per layer
        self.position = 0
        self.semantic: Optional[torch.Tensor] = None  # [B, t, 64]
        self.temporal: Optional[torch.Tensor] = None  # [B, t, 32]
        self.coords: Optional[torch.Tensor] = None  # [B, t, L]

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Feed ``token_ids [B]`` at the next position; returns that position's logits ``[B, V]`` (float32)."""
        model, t = self.model, self.position
        if t >= model.config.max_seq_len:
            raise ValueError(f"decoder is at position {t}; accepted positions: 0..max_seq_len-1="
                             f"{model.config.max_seq_len - 1}")
        if not isinstance(token_ids, torch.Tensor) or token_ids.shape != (self.batch_size,):
            shape = tuple(token_ids.shape) if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
            raise ValueError(f"token_ids must be [B={self.batch_size}], got {shape}")
        ids = model.check_input_ids(token_ids[:, None], "token_ids")  # [B, 1]
        ctx = LayerContext(position=t)
        coords_t = None
        if model.config.uses_graph:
            _, semantic, temporal, x = model.front(ids, start=t)  # [B, 1, 64], [B, 1, 32], [B, 1, d]
            self.semantic = semantic if self.semantic is None else torch.cat([self.semantic, semantic], dim=1)
            self.temporal = temporal if self.temporal is None else torch.cat([self.temporal, temporal], dim=1)
            graph, neighbors, distances = model.build_graph(self.semantic, self.temporal)  # prefix 0..t
            ctx.neighbors = neighbors[:, t:t + 1]  # [B, 1, Kn]
            ctx.semantic = semantic  # [B, 1, 64]: the new token's (multi-block heads)
            if self.memory is not None and len(self.memory):
                ctx.memory = self.memory
                ctx.memory_slots = model.memory_slots_of(semantic, self.memory, self.stream_offset + t)  # [B, 1, Km]
            if model.use_structure:
                coords_t = model.structure_coordinates(graph, distances, t + 1)[:, t:t + 1]  # [B, 1, L]
                self.coords = coords_t if self.coords is None else torch.cat([self.coords, coords_t], dim=1)
                ctx.structure = model.structure(coords_t)  # [B, 1, S]
                ctx.alibi_coords = self.coords  # [B, t+1, L]
        else:
            x = model.embed_tokens(ids)  # [B, 1, d]
        ctx.angles = model.positions(1, t, coords_t, ids.device)
        x = model.stack.step(x, ctx, self.caches)  # [B, 1, d]
        self.position += 1
        return model.logits_from_hidden(x)[:, 0]  # [B, V]


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int],
                generator: Optional[torch.Generator]) -> torch.Tensor:
    """Next ids ``[B]`` from ``logits [B, V]``: greedy when ``temperature == 0``, else softmax sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None, seed: Optional[int] = None,
             generator: Optional[torch.Generator] = None, memory=None, stream_offset: int = 0,
             streamer: Optional[Callable[[torch.Tensor], None]] = None) -> torch.Tensor:
    """Prompt ``[B, T]`` -> ``[B, T + max_new_tokens]`` with incremental decoding (``SOSMModel.generate``).

    The prompt is fed token by token (same code path as the new tokens). When the sequence
    reaches ``max_seq_len``, decoding restarts on its last ``max_seq_len // 2`` tokens, so the
    model always sees at most ``max_seq_len`` tokens of context (like nanoGPT's crop). With
    ``memory``, token t of the prompt sits at stream position ``stream_offset + t`` and every
    position retrieves as the full forward would (:class:`IncrementalDecoder`).
    ``streamer``, when given, is called with each new token's ids ``[B]`` as soon as it is sampled.
    """
    ids = model.check_input_ids(input_ids)
    new = []
    for next_ids in iter_generate(model, ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                                  generator=generator, memory=memory, stream_offset=stream_offset):
        new.append(next_ids)
        if streamer is not None:
            streamer(next_ids)
    return torch.cat([ids, torch.stack(new, dim=1)], dim=1)


def iter_generate(model, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                  top_k: Optional[int] = None, seed: Optional[int] = None,
                  generator: Optional[torch.Generator] = None, memory=None,
                  stream_offset: int = 0) -> Iterator[torch.Tensor]:
    """:func:`generate`, one step at a time: yields the new ids ``[B]`` it appends, in order (for streaming)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid; accepted: an int >= 1")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature={temperature!r} is invalid; accepted: a float > 0, or 0 for greedy")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} is invalid; accepted: None or an int >= 1")
    ids = model.check_input_ids(input_ids)
    if generator is None and seed is not None:
        generator = torch.Generator(device=ids.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        decoder, logits = _prefill(model, ids, memory, stream_offset)
        for produced in range(1, max_new_tokens + 1):
            next_ids = sample_next(logits, temperature, top_k, generator)  # [B]
            yield next_ids
            if produced == max_new_tokens:
                break  # the last token's logits are never read
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            if decoder.position >= model.config.max_seq_len:
                keep = max(1, model.config.max_seq_len // 2)
                decoder, logits = _prefill(model, ids[:, -keep:], memory, stream_offset + ids.shape[1] - keep)
            else:
                logits = decoder.step(next_ids)
    finally:
        model.train(was_training)


def _prefill(model, ids: torch.Tensor, memory=None, stream_offset: int = 0):
    decoder = IncrementalDecoder(model, ids.shape[0], memory=memory, stream_offset=stream_offset)
    for t in range(ids.shape[1]):
        logits = decoder.step(ids[:, t])
    return decoder, logits
