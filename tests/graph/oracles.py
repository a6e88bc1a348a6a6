"""Brute-force NumPy/Python oracles for the graph builder tests (independent of sosm.graph code).

Scores follow the documented definition of ``sosm.graph.similarity.pair_scores``: float32
products added in feature order (NumPy float32 ufuncs, no fused multiply-add).
"""
from __future__ import annotations

import math

import numpy as np

N_BLOCKS, BLOCK_DIM = 16, 4


def features(x: np.ndarray, mode: str, weights=None, projection=None) -> np.ndarray:
    """Contract features in float64 (for tolerance checks of ``featurize``). x: [..., 64]."""
    x = x.astype(np.float64)
    if mode == "full":
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)
    if mode == "blocks":
        w = np.asarray(weights, dtype=np.float64)
        xb = x.reshape(*x.shape[:-1], N_BLOCKS, BLOCK_DIM)
        unit = xb / np.maximum(np.linalg.norm(xb, axis=-1, keepdims=True), 1e-8)
        return (unit * np.sqrt(w / w.sum())[:, None]).reshape(x.shape)
    p = x @ np.asarray(projection, dtype=np.float64).T
    return p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-8)


def score_matrix(f: np.ndarray) -> np.ndarray:
    """[T, d] float32 features -> [T, T] float32 scores, summed in feature order."""
    f = np.asarray(f, dtype=np.float32)
    acc = f[:, None, 0] * f[None, :, 0]
    for c in range(1, f.shape[1]):
        acc = acc + f[:, None, c] * f[None, :, c]
    return acc


def topk_lists(f: np.ndarray, k, causal: bool, window: int, real=None):
    """Per query i of one sample: list of (j, score) best first, ties to lower j. k: int or list."""
    length = f.shape[0]
    s = score_matrix(f)
    real = np.ones(length, bool) if real is None else np.asarray(real, bool)
    out = []
    for i in range(length):
        ki = k if isinstance(k, int) else int(k[i])
        if not real[i]:
            out.append([])
            continue
        cand = [j for j in range(length) if real[j] and ((j <= i - window - 1) if causal else abs(i - j) > window)]
        cand.sort(key=lambda j: (-float(s[i, j]), j))
        out.append([(j, s[i, j]) for j in cand[:ki]])
    return out


def mutual_edges(f: np.ndarray, k, causal: bool, window: int, real=None) -> set:
    """Set of (j, i) semantic edges of one sample surviving mutual k-NN (rule in graph/mutual.py)."""
    length = f.shape[0]
    s = score_matrix(f)
    real = np.ones(length, bool) if real is None else np.asarray(real, bool)
    kk = (lambda n: k) if isinstance(k, int) else (lambda n: int(k[n]))
    kept = set()
    for i, lst in enumerate(topk_lists(f, k, causal, window, real)):
        for j, _ in lst:
            cand = [m for m in range(length) if real[m] and abs(m - j) > window and (m <= i or not causal)]
            cand.sort(key=lambda m: (-float(s[j, m]), m))
            if i in cand[:kk(j)]:
                kept.add((j, i))
    return kept


def adaptive_k(x: np.ndarray, k: int, alpha: float, k_min: int, k_max: int) -> np.ndarray:
    """Per-token K from the block-norm entropy, [T, 64] -> [T] ints (Python round: half to even)."""
    out = []
    for row in np.asarray(x, dtype=np.float64):
        norms = [math.sqrt(sum(v * v for v in row[b * 4:(b + 1) * 4])) for b in range(N_BLOCKS)]
        total = sum(norms)
        h = 0.0 if total == 0 else -sum((n / total) * math.log(n / total) for n in norms if n > 0) / math.log(16)
        out.append(min(k_max, max(k_min, round(k * (1 + alpha * (h - 0.5))))))
    return np.array(out)
