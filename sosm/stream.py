"""Long-context streaming evaluation: a long text in windows, with state carry and long-term memory.

The text is cut into consecutive windows of ``window`` input tokens; window w (inputs at
stream positions ``s = w * window .. s + window - 1``) predicts the next ``window`` tokens,
so every token after the first is scored once (as in :func:`sosm.evaluate.evaluate_tokens`).
Inside a window the model runs exactly as in training (positions, RoPE, graph frame
restart at 0). Between windows, depending on the mode:

- **carry** (Mamba state): each Mamba layer's conv state ``[1, E, d_conv-1]`` and SSM state
  ``[1, E, N]`` at the end of window w are the initial state of window w+1
  (:func:`sosm.model.generation.mamba_window`). Attention K/V are **not** carried: a new
  window's graph covers only its own tokens; memory takes the role of older context.
- **memory**: after window w has been scored, each of its tokens is written into a
  :class:`~sosm.model.memory_attention.ModelMemory` (semantic state as retrieval key,
  every graph-attention layer's unrotated K and V, write position = the token's stream
  position, metadata ``{"offset": position}``). Window w+1 retrieves ``memory_k`` entries
  per token (memory edges; causal by construction, and also filtered by position) and
  its graph-attention layers attend over them (exact log-sum-exp merge).

Modes: ``plain`` (neither: equals ``sosm eval`` on the same windows), ``carry``,
``memory``, ``carry+memory``. Each mode is a separate pass over the same windows.

Example:
    >>> import torch
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(d_model=32, n_heads=2, n_layers=4, vocab_size=20, max_seq_len=8))
    >>> result = stream_evaluate(model, torch.randint(0, 20, (41,)), window=8, modes=("plain", "carry+memory"))
    >>> len(result.window_loss["carry+memory"])
    5
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

MODES = ("plain", "carry", "memory", "carry+memory")


@dataclass
class StreamResult:
    """Per-window mean losses (nats/token) per mode, and their summaries.

    Args:
        window: inputs per window; windows: number of windows scored; tokens: tokens scored.
        window_loss: mode -> list of per-window mean losses.
        window_tokens: tokens scored in each window (the last may be shorter).
        seconds: mode -> wall time of its pass.
        memory_entries: entries in memory at the end of a memory pass.
    """

    window: int
    windows: int
    tokens: int
    window_loss: dict = field(default_factory=dict)
    window_tokens: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    memory_entries: int = 0
    memory_k: int = 0
    memory_threshold: float = 0.0

    def mean_loss(self, mode: str, first: int = 0, last: Optional[int] = None) -> Optional[float]:
        """Token-weighted mean loss of ``mode`` over windows ``first .. last-1``; None when none was scored."""
        losses = self.window_loss[mode][first:last]
        counts = self.window_tokens[first:last]
        if not losses or not sum(counts):
            return None
        return sum(l * c for l, c in zip(losses, counts)) / sum(counts)

    def summary(self) -> dict:
        """Per mode: mean loss, bits per token, and means over window ranges (first 10, 10..end; None when
        the stream has no window in the range)."""
        out = {}
        for mode in self.window_loss:
            loss = self.mean_loss(mode)
            out[mode] = {"loss": loss, "bits_per_token": loss / math.log(2.0),
                         "loss_windows_0_10": self.mean_loss(mode, 0, 10),
                         "loss_windows_10_end": self.mean_loss(mode, 10), "seconds": self.seconds.get(mode)}
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary()}


def with_memory(model, memory_k: int, memory_threshold: float):
    """Switch ``model.config`` to ``memory=True`` with these settings (validated); returns ``model``."""
    model.config = replace(model.config, memory=True, memory_k=memory_k, memory_threshold=memory_threshold)
    return model


@torch.no_grad()
def stream_evaluate(model, token_ids: torch.Tensor, window: int, *, modes: Sequence[str] = MODES,
                    max_windows: Optional[int] = None, memory_k: int = 8, memory_threshold: float = 0.0,
                    device="cpu", progress=None) -> StreamResult:
    """Score ``token_ids`` window by window in each of ``modes`` (module docstring).

    Args:
        model: an ``SOSMModel``; memory modes need graph-attention layers (hybrid, graph_attention).
        token_ids: ``LongTensor[N]``, N >= 2.
        window: inputs per window, ``1 <= window <= model.config.max_seq_len``.
        modes: subset of :data:`MODES`.
        max_windows: score only the first ``max_windows`` windows (None: all).
        memory_k, memory_threshold: retrieval settings of the memory modes.
        progress: optional ``callable(mode, window_index, loss)``.
    """
    if not isinstance(token_ids, torch.Tensor) or token_ids.dim() != 1 or token_ids.numel() < 2 \
            or token_ids.is_floating_point():
        raise ValueError("token_ids must be a 1-D integer tensor of >= 2 tokens")
    if not isinstance(window, int) or not 1 <= window <= model.config.max_seq_len:
        raise ValueError(f"window={window!r} is invalid; accepted: an int in [1, max_seq_len={model.config.max_seq_len}]")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes {bad or list(modes)} are invalid; accepted: a non-empty subset of {list(MODES)}")
    if max_windows is not None and (not isinstance(max_windows, int) or max_windows < 1):
        raise ValueError(f"max_windows={max_windows!r} is invalid; accepted: None or an int >= 1")
    uses_memory = any("memory" in m for m in modes)
    if uses_memory and "graph_attention" not in model.config.layer_types:
        raise ValueError(f"memory modes need graph-attention layers; model={model.config.model!r} has none "
                         f"(accepted modes for it: 'plain', 'carry')")
    token_ids = token_ids.long()
    n_pred = token_ids.numel() - 1
    starts = list(range(0, n_pred, window))[:max_windows]
    result = StreamResult(window=window, windows=len(starts), tokens=0, memory_k=memory_k,
                          memory_threshold=memory_threshold,
                          window_tokens=[min(window, n_pred - s) for s in starts])
    result.tokens = sum(result.window_tokens)
    was_training, config = model.training, model.config
    model.eval()
    try:
        if uses_memory:
            with_memory(model, memory_k, memory_threshold)
        for mode in modes:
            began = time.perf_counter()
            result.window_loss[mode], entries = _run_mode(model, token_ids, starts, window, mode, device, progress)
            result.seconds[mode] = time.perf_counter() - began
            result.memory_entries = max(result.memory_entries, entries)
    finally:
        model.config = config
        model.train(was_training)
    return result


def _run_mode(model, token_ids, starts, window, mode, device, progress):
    from .model.memory_attention import ModelMemory

    carry = [dict() for _ in model.stack.layers] if "carry" in mode else None
    memory = ModelMemory.for_model(model) if "memory" in mode else None
    n_pred = token_ids.numel() - 1
    losses = []
    for index, start in enumerate(starts):
        stop = min(start + window, n_pred)
        x = token_ids[start:stop][None].to(device)
        y = token_ids[start + 1:stop + 1][None].to(device)
        record = [] if memory is not None else None
        logits, state = model(x, memory=memory, stream_offset=start, record_kv=record, mamba_state=carry)
        loss = F.cross_entropy(logits[0].float(), y[0]).item()
        losses.append(loss)
        if memory is not None:  # written after scoring: later windows read earlier ones
            positions = torch.arange(start, stop)
            memory.write(state.semantic[0], [k[0] for k, _ in record], [v[0] for _, v in record], positions,
                         metadata=[{"offset": int(p)} for p in positions])
        if progress is not None:
            progress(mode, index, loss)
    return losses, 0 if memory is None else len(memory)


def format_table(result: StreamResult) -> str:
    """A Markdown table of :meth:`StreamResult.summary`."""
    rows = ["| mode | loss (nats/token) | bits/token | windows 0-9 | windows 10-end | seconds |",
            "|---|---|---|---|---|---|"]
    def cell(value, spec: str = ".4f") -> str:
        return "—" if value is None else format(value, spec)  # absent, not zero

    for mode, s in result.summary().items():
        rows.append(f"| {mode} | {cell(s['loss'])} | {cell(s['bits_per_token'])} | {cell(s['loss_windows_0_10'])} | "
                    f"{cell(s['loss_windows_10_end'])} | {cell(s['seconds'], '.1f')} |")
    return "\n".join(rows)
