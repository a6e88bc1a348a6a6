"""MQAR control for the attention stall (experiments/results/recall_pilot.md): which MLP blocks induction.

Trains a two-layer causal attention LM on one recall cell's data with the harness's batches,
schedule and scoring, and keeps an MLP only in the layers named by ``--mlp-layers``:

- ``--net minimal``: a small attention-only LM written here (LayerNorm, one QKV, RoPE or learned
  absolute positions, tied head), the shape of Zoology's MQAR attention model, plus a 4x GELU MLP
  in the chosen layers;
- ``--net sosm``: ``SOSMModel`` with the cell's config, its MLP replaced by zeros outside the chosen
  layers (the cell's ``mlp_ratio`` must be > 0).

Usage::

    OMP_NUM_THREADS=1 python experiments/analysis/recall_mlp_control.py --net sosm --mlp-layers 1 \\
        --cell '{"vocab_size": 64, "steps": 1000, "lr": 0.003, "eval_every": 250, "stop_at": 0.99}'
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from sosm.data.recall import IGNORE_INDEX, RecallData, make_recall_splits
from sosm.model import SOSMModel
from sosm.model.positional import apply_rotary, rope_angles
from sosm.train.recall import RecallCell, _Batches, evaluate
from sosm.train.schedule import lr_at


class MinimalAttention(nn.Module):
    """Pre-norm causal attention, optionally followed by a 4x GELU MLP; ``[B, T, d] -> [B, T, d]``."""

    def __init__(self, d: int, heads: int, rope: bool, mlp: bool):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.norm, self.qkv, self.out = nn.LayerNorm(d), nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)) if mlp else None

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(B, T, 3, self.heads, d // self.heads).unbind(2)  # [B, T, H, hd]
        if self.rope:
            angles = rope_angles(torch.arange(T), d // self.heads, 10000.0)
            q, k = apply_rotary(q, angles), apply_rotary(k, angles)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, d))
        return x if self.mlp is None else x + self.mlp(x)


class MinimalLM(nn.Module):
    """Two ``MinimalAttention`` layers, tied embedding head, N(0, 0.02) init; ``forward(x, logits_mask) -> [N, V]``."""

    def __init__(self, vocab: int, seq_len: int, d: int, heads: int, rope: bool, mlp_layers: set):
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.positions = None if rope else nn.Embedding(seq_len, d)
        self.layers = nn.ModuleList(MinimalAttention(d, heads, rope, i in mlp_layers) for i in range(2))
        self.norm = nn.LayerNorm(d)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)

    def forward(self, x, logits_mask):
        h = self.embedding(x)
        if self.positions is not None:
            h = h + self.positions(torch.arange(x.shape[1]))
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)[logits_mask] @ self.embedding.weight.T, None


class _Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", default="{}", help="RecallCell fields as JSON (defaults: the pilot's)")
    parser.add_argument("--net", choices=("minimal", "sosm"), default="minimal")
    parser.add_argument("--mlp-layers", default="", help="comma-separated layers that keep an MLP (default none)")
    parser.add_argument("--heads", type=int, default=4, help="minimal net: attention heads")
    parser.add_argument("--positions", choices=("rope", "learned"), default="rope", help="minimal net: positions")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pilot = dict(vocab_size=512, seq_len=64, num_kv_pairs=4, d_model=64, batch_size=64, steps=2000, lr=3e-3,
                 eval_every=250, stop_at=0.99, progress=False)
    cell = RecallCell.from_dict({**pilot, **json.loads(args.cell)})
    keep = {int(i) for i in args.mlp_layers.split(",") if i}
    splits = make_recall_splits(cell.task_config())
    torch.manual_seed(cell.seed)
    if args.net == "sosm":
        model = SOSMModel(cell.model_config())
        for index, layer in enumerate(model.stack.layers):
            if index not in keep and getattr(layer, "mlp", None) is not None:
                layer.mlp = _Zero()
    else:
        model = MinimalLM(cell.vocab_size, cell.seq_len, cell.d_model, args.heads, args.positions == "rope", keep)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cell.lr, weight_decay=cell.weight_decay,
                                  betas=(0.9, cell.beta2))
    batches, curve = _Batches(splits, cell), []
    interim = RecallData(splits.test.inputs[:cell.eval_rows], splits.test.targets[:cell.eval_rows])
    step = 0
    for step in range(cell.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, lr=cell.lr, min_lr=0.0, warmup_steps=int(cell.warmup_frac * cell.steps),
                                decay_steps=cell.steps)
        x, y = batches.next()
        mask = y != IGNORE_INDEX
        loss = F.cross_entropy(model(x, logits_mask=mask)[0], y[mask])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cell.grad_clip)
        optimizer.step()
        if cell.eval_every and (step + 1) % cell.eval_every == 0:
            curve.append(round(evaluate(model, interim)["accuracy"], 3))
            if curve[-1] >= cell.stop_at:
                break
    print(json.dumps({"net": args.net, "mlp_layers": sorted(keep), "heads": args.heads, "positions": args.positions,
                      "cell": json.loads(args.cell), "steps_run": step + 1, "curve": curve,
                      **evaluate(model, splits.test)}))


if __name__ == "__main__":
    main()
