"""Linear recurrences with a scalar decay per head: Mamba-2's SSD and RetNet's retention, chunked and step by step.

Per batch element and head, a state ``S [P, N]`` (P value channels, N key channels) and::

    S_t = exp(a_t) S_{t-1} + x_t k_t^T        a_t <= 0: the log decay of step t
    y_t = S_t q_t                              (the current token is included)

Mamba-2 (Dao & Gu 2024, "Transformers are SSMs"): ``x = Δ·x``, ``k = B``, ``q = C``, ``a = Δ·A``.
RetNet (Sun et al. 2023): ``x = V``, ``k = K Θ̄``, ``q = Q Θ``, ``a = log γ`` (constant per head).

:func:`scalar_decay_chunked` is the chunked parallel form (the SSD algorithm; RetNet's chunkwise
retention): inside a chunk of L steps the quadratic form
``y_i = Σ_{j<=i} (q_i·k_j) exp(a_{j+1} + … + a_i) x_j``, plus the carried state's term
``exp(a_0 + … + a_i) S q_i``; between chunks the recurrence on S. One chunk covering the whole
sequence is the parallel ("attention-like") form. :func:`scalar_decay_step` is one step of the
recurrence (decoding). The two are equal for every chunk length (tested at odd lengths).

Example:
    >>> b, T, H, P, N = 2, 7, 3, 4, 5
    >>> x, k, q = torch.randn(b, T, H, P), torch.randn(b, T, H, N), torch.randn(b, T, H, N)
    >>> a = -torch.rand(b, T, H)
    >>> y, last = scalar_decay_chunked(x, a, k, q, chunk_size=3)
    >>> state, ys = torch.zeros(b, H, P, N), []
    >>> for t in range(T):
    ...     y_t, state = scalar_decay_step(state, x[:, t], a[:, t], k[:, t], q[:, t])
    ...     ys.append(y_t)
    >>> torch.allclose(torch.stack(ys, 1), y, atol=1e-5), torch.allclose(state, last, atol=1e-5)
    (True, True)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def segment_sums(a: torch.Tensor) -> torch.Tensor:
    """``a [..., L]`` -> ``[..., L, L]`` with ``out[..., i, j] = a_{j+1} + … + a_i`` for ``j <= i``, ``-inf`` above.

    Differences of float64 prefix sums, rounded to ``a``'s dtype: a short segment keeps full
    precision however large the prefix sums grow.
    """
    L = a.shape[-1]
    prefix = torch.cumsum(a.double(), dim=-1)
    sums = (prefix[..., :, None] - prefix[..., None, :]).to(a.dtype)  # [..., i, j]
    return sums.masked_fill(~torch.ones(L, L, dtype=torch.bool, device=a.device).tril(), float("-inf"))


def scalar_decay_chunked(x: torch.Tensor, log_decay: torch.Tensor, keys: torch.Tensor, queries: torch.Tensor,
                         chunk_size: int, initial_state: Optional[torch.Tensor] = None):
    """The chunked parallel form of ``S_t = exp(a_t) S_{t-1} + x_t k_t^T``, ``y_t = S_t q_t``.

    Args:
        x: ``[B, T, H, P]`` inputs (values).
        log_decay: ``[B, T, H]`` log decays ``a_t <= 0``.
        keys: ``[B, T, G, N]``, G dividing H: heads ``h`` read group ``h // (H / G)`` (Mamba-2's
            groups of heads sharing B and C; G = H for one key per head).
        queries: ``[B, T, G, N]``.
        chunk_size: chunk length L (any value >= 1; T need not divide by it).
        initial_state: ``[B, H, P, N]`` state before step 0 (None: zeros).

    Returns:
        ``(y [B, T, H, P], final state [B, H, P, N])``, in the promoted dtype of the inputs.
    """
    b, T, H, P = x.shape
    G, N = keys.shape[-2:]
    R = H // G  # heads per group
    L = max(1, min(chunk_size, T))
    n = -(-T // L)
    pad = n * L - T
    if pad:  # padded steps: no input (x = 0) and no decay (a = 0), so the final state is unchanged
        x, keys, queries = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, keys, queries))
        log_decay = F.pad(log_decay, (0, 0, 0, pad))
    x = x.reshape(b, n, L, G, R, P)
    keys, queries = keys.reshape(b, n, L, G, N), queries.reshape(b, n, L, G, N)
    a = log_decay.reshape(b, n, L, G, R).permute(0, 3, 4, 1, 2)  # [b, G, R, n, L]
    segments = segment_sums(a)  # [b, G, R, n, L, L]
    scores = torch.einsum("bclgn,bcsgn->bgcls", queries, keys)[:, :, None] * torch.exp(segments)
    y = torch.einsum("bgrcls,bcsgrp->bclgrp", scores, x)  # within each chunk
    from_start = torch.exp(torch.cumsum(a, dim=-1)).permute(0, 3, 4, 1, 2)[..., None]  # [b, n, L, G, R, 1]
    to_end = torch.exp(segments[..., -1, :]).permute(0, 3, 4, 1, 2)[..., None]  # decay after step j to the end
    chunk_states = torch.einsum("bcsgn,bcsgrp->bcgrpn", keys, x * to_end)  # [b, n, G, R, P, N] from zero
    state = (x.new_zeros(b, H, P, N) if initial_state is None else initial_state.to(chunk_states.dtype))
    state = state.reshape(b, G, R, P, N)
    totals = from_start[:, :, -1, :, :, :, None]  # [b, n, G, R, 1, 1]
    starts = []
    for c in range(n):  # the recurrence between chunks
        starts.append(state)
        state = totals[:, c] * state + chunk_states[:, c]
    y = y + from_start * torch.einsum("bclgn,bcgrpn->bclgrp", queries, torch.stack(starts, dim=1))
    return y.reshape(b, n * L, H, P)[:, :T], state.reshape(b, H, P, N)


def scalar_decay_step(state: torch.Tensor, x: torch.Tensor, log_decay: torch.Tensor, keys: torch.Tensor,
                      queries: torch.Tensor):
    """One step: ``state [B, H, P, N]``, ``x [B, H, P]``, ``log_decay [B, H]``, ``keys``/``queries [B, G, N]``.

    Returns ``(y [B, H, P], new state [B, H, P, N])``.
    """
    per_group = x.shape[1] // keys.shape[1]
    keys, queries = keys.repeat_interleave(per_group, dim=1), queries.repeat_interleave(per_group, dim=1)
    state = torch.exp(log_decay)[..., None, None] * state + x[..., :, None] * keys[..., None, :]
    return torch.einsum("bhpn,bhn->bhp", state, queries), state
