"""Train and evaluate one recall cell: a model on a synthetic recall task, scored on a held-out test set.

A :class:`RecallCell` fixes everything a run depends on (task, T, kv pairs, width, model, lr, seed,
steps, batch and the protocol knobs); :func:`train_cell` trains it and returns one result row.

Protocol (Zoology's, scaled down; :mod:`sosm.train.recall_grid` runs many cells):

- model: ``SOSMConfig(model=..., n_layers=2, d_model=..., vocab_size=V, max_seq_len=T)``; the
  hybrid uses ``layer_pattern`` (default ``"MA"``: a Mamba layer, then a graph-attention layer);
- AdamW (weight decay on matrices and embeddings only), linear warmup then cosine to ``min_lr``;
- loss: cross-entropy over the answer positions only (targets -100 elsewhere, ``ignore_index``);
  the LM head runs at those positions only (``SOSMModel.forward(logits_mask=...)``), identical
  in value to the full head and much cheaper at V = 8192;
- data: epochs over a fixed training set (Zoology: 100k rows x 64 epochs), or a fresh batch
  every step (``fresh_data``), never a row of the test set;
- accuracy: exact match of the argmax at the answer positions of the test set.

Example:
    >>> cell = RecallCell(seq_len=16, num_kv_pairs=2, vocab_size=64, d_model=32, steps=3, batch_size=8,
    ...                   num_train=64, num_test=16, progress=False)
    >>> row = train_cell(cell)
    >>> sorted(k for k in row if k in ("accuracy", "parameters", "state_floats"))
    ['accuracy', 'parameters', 'state_floats']
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.recall import (IGNORE_INDEX, RecallData, RecallSplits, RecallTaskConfig, answer_sources,
                           make_recall_splits)
from .components import optimizer_groups
from .schedule import lr_at

MODELS = ("transformer", "mamba", "hybrid", "graph_attention")  # the default grid; any model kind is accepted


@dataclass
class RecallCell:
    """One cell of the recall grid: task, model, optimiser and budget (validated on construction)."""

    task: str = "mqar"                  # "mqar" | "induction_head" | "selective_copying"
    seq_len: int = 64                   # T
    num_kv_pairs: int = 4               # mqar: key-value pairs per row
    vocab_size: int = 8192              # V (Zoology: 8192)
    model: str = "transformer"          # "transformer" | "hybrid" | any mixer ("mamba", "graph_attention", ...)
    label: str = ""                     # name in tables and plots (default: the model, and the hybrid's pattern)
    d_model: int = 64                   # residual width
    n_layers: int = 2                   # layers (Zoology: 2)
    layer_pattern: str = "MA"           # hybrid only: M = Mamba, A = graph attention
    model_overrides: dict = field(default_factory=dict)  # more SOSMConfig fields (validated by SOSMConfig)
    lr: float = 1e-3                    # peak learning rate
    min_lr_ratio: float = 0.0           # cosine floor as a fraction of lr (Zoology: 0)
    warmup_frac: float = 0.1            # linear warmup over this fraction of the steps
    weight_decay: float = 0.1           # AdamW decay on >= 2-D parameters
    beta2: float = 0.98                 # AdamW beta2 (beta1 = 0.9)
    grad_clip: float = 1.0              # global gradient-norm clip (0: none)
    seed: int = 0                       # model init and batch order
    steps: int = 2000                   # optimiser steps
    batch_size: int = 64                # rows per step
    num_train: int = 100_000            # fixed training set rows (unused with fresh_data)
    num_test: int = 1_000               # held-out rows scored at the end
    fresh_data: bool = False            # draw a new batch every step instead of epochs over num_train rows
    data_seed: int = 0                  # seed of the task's train/test sets (shared across the grid)
    random_non_queries: bool = True     # mqar filler: uniform tokens (True) or 0 (Zoology figure 2: False)
    power_a: float = 0.01               # mqar query-slot power law
    eval_every: int = 0                 # evaluate on eval_rows test rows every N steps (0: only at the end)
    eval_rows: int = 500                # test rows of the interim evaluations
    stop_at: float = 1.1                # stop early once an interim accuracy reaches this (Zoology: 0.99)
    progress: bool = True               # tqdm bar over the steps

    def __post_init__(self):
        def need(cond, name, accepted):
            if not cond:
                raise ValueError(f"RecallCell.{name}={getattr(self, name)!r} is invalid; accepted: {accepted}")

        def pos_int(name):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, "an int >= 1")

        from ..model import model_kinds

        need(self.model in model_kinds(), "model", f"one of {model_kinds()}")
        need(isinstance(self.label, str), "label", "a string")
        for name in ("d_model", "n_layers", "steps", "batch_size", "num_train", "num_test", "eval_rows"):
            pos_int(name)
        need(isinstance(self.lr, (int, float)) and 0 < self.lr < 1, "lr", "a float in (0, 1)")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "a float in [0, 1]")
        need(0 <= self.warmup_frac < 1, "warmup_frac", "a float in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "a float >= 0")
        need(0 < self.beta2 < 1, "beta2", "a float in (0, 1)")
        need(self.grad_clip >= 0, "grad_clip", "a float >= 0 (0: no clipping)")
        need(isinstance(self.eval_every, int) and self.eval_every >= 0, "eval_every", "an int >= 0")
        need(isinstance(self.model_overrides, dict), "model_overrides", "a dict of SOSMConfig fields")
        self.task_config()
        self.model_config()

    def task_config(self) -> RecallTaskConfig:
        return RecallTaskConfig(task=self.task, seq_len=self.seq_len, num_kv_pairs=self.num_kv_pairs,
                                vocab_size=self.vocab_size, power_a=self.power_a,
                                random_non_queries=self.random_non_queries, num_train=self.num_train,
                                num_test=self.num_test, seed=self.data_seed)

    def model_config(self):
        from ..model import SOSMConfig

        base = dict(model=self.model, n_layers=self.n_layers, d_model=self.d_model, vocab_size=self.vocab_size,
                    max_seq_len=self.seq_len)
        if self.model == "hybrid":
            base["layer_pattern"] = self.layer_pattern
        return SOSMConfig.from_dict({**base, **self.model_overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> str:
        """Identity of the cell in a result file (every field but ``progress``)."""
        data = self.to_dict()
        data.pop("progress")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RecallCell":
        valid = sorted(f.name for f in fields(cls))
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"RecallCell keys {unknown} are unknown; valid keys: {valid}")
        return cls(**data)


def adamw(model: torch.nn.Module, cell: RecallCell) -> torch.optim.AdamW:
    """AdamW over the trainer's parameter groups (no decay on biases, norms, gates and state matrices)."""
    return torch.optim.AdamW(optimizer_groups(model, cell.weight_decay), lr=cell.lr, betas=(0.9, cell.beta2),
                             foreach=False)


def state_floats(model, avg_neighbors: Optional[float]) -> int:
    """Floats a model keeps per sequence to decode the next token (Zoology's convention), summed over layers.

    Each mixer's own :meth:`~sosm.model.mixers.Mixer.state_size` (dense attention: its KV cache ``2 T d``;
    Mamba: SSM plus conv state; ...), except graph layers, counted as edges x width: the K/V they gather,
    ``(avg_neighbors + 1) T 2d``.
    """
    T, d = model.config.max_seq_len, model.config.d_model
    total = 0.0
    for layer in model.stack.layers:
        if layer.needs_graph:
            total += (avg_neighbors + 1) * T * 2 * d if avg_neighbors is not None else 0
        else:
            total += layer.state_size(T)
    return int(round(total))


@torch.no_grad()
def evaluate(model, data, batch_size: int = 250) -> dict:
    """Exact-match accuracy and mean cross-entropy at the answer positions of ``data`` (inputs, targets)."""
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, len(data.inputs), batch_size):
        x, y = data.inputs[start:start + batch_size], data.targets[start:start + batch_size]
        mask = y != IGNORE_INDEX
        logits, _ = model(x, logits_mask=mask)  # [N, V]
        answers = y[mask]
        correct += int((logits.argmax(-1) == answers).sum())
        loss_sum += float(F.cross_entropy(logits, answers, reduction="sum"))
        total += len(answers)
    model.train()
    return {"accuracy": correct / total, "loss": loss_sum / total}


@torch.no_grad()
def edge_recall(model, data, batch_size: int = 250, answers: bool = True) -> dict:
    """How often the graph links an answer position to where its answer can be read.

    For every answer position q whose key occurred earlier at j (:func:`answer_sources`): the
    fraction whose neighbour list holds j (``key``) and, separately, j + 1 (``value``: the position
    of the answer). All layers of a model share one graph, so one figure covers every layer.
    Also the mean number of neighbours per position (self excluded) and the attended
    (query, key) pairs as a fraction of causal dense attention's ``T (T + 1) / 2``; with
    ``answers=False`` (tasks whose answers are not read at a key's earlier occurrence, e.g.
    selective copying) only these two.
    """
    from ..graph.convert import to_neighbor_index

    model.eval()
    hits = {"key": 0, "value": 0}
    counted, neighbor_sum, positions = 0, 0.0, 0
    for start in range(0, len(data.inputs), batch_size):
        x, y = data.inputs[start:start + batch_size], data.targets[start:start + batch_size]
        _, state = model(x, logits_mask=torch.zeros_like(y, dtype=torch.bool))
        T = x.shape[1]
        neighbors = to_neighbor_index(state.graph)[:, :T]  # [B, T, Kn]
        neighbor_sum += float((neighbors >= 0).sum())
        positions += x.numel()
        if not answers:
            continue
        rows, query, key_pos, value_pos = answer_sources(x, y)
        found = key_pos >= 0
        listed = neighbors[rows[found], query[found]]  # [A, Kn]
        hits["key"] += int((listed == key_pos[found, None]).any(-1).sum())
        hits["value"] += int((listed == value_pos[found, None]).any(-1).sum())
        counted += int(found.sum())
    model.train()
    T = data.inputs.shape[1]
    avg = neighbor_sum / positions
    density = {"avg_neighbors": avg, "attended_fraction": (avg + 1) * T / (T * (T + 1) / 2)}
    if not answers:
        return density
    return {"edge_recall_key": hits["key"] / max(counted, 1), "edge_recall_value": hits["value"] / max(counted, 1),
            **density}


READ_KINDS = ("value", "key", "successor", "semantic", "local", "other")


@torch.no_grad()
def attention_reads(model, data, batch_size: int = 100) -> dict:
    """Where each graph-attention layer puts its attention at the answer positions, and what the errors read.

    For every answer position q whose key occurred earlier at j (:func:`answer_sources`), the
    attention probabilities of each graph-attention layer (mean over heads) are summed by what the
    attended position is to q: ``value`` (j + 1, where the answer sits), ``key`` (j), ``successor``
    (another successor-edge neighbour: what followed a *different* similar token — a distractor's
    value), ``semantic`` (another semantic neighbour), ``local`` (q itself and its sequential
    neighbours) and ``other`` (any other edge type). Each kind's share is averaged over the answer
    positions. Of the wrong answers, ``errors_distractor`` is the fraction whose predicted token is
    the token at one of q's other successor neighbours: the layer read a distractor's value.

    Returns:
        ``{"layers": [{"layer", "value", "key", "successor", "semantic", "local", "other"}, ...],
        "answers", "errors", "errors_distractor"}``; ``{}`` for a model without graph attention.
    """
    from ..analysis.depass import edge_type_map
    from ..analysis.recording import record_forward
    from ..graph.types import EDGE_TYPE_ID

    layers = [i for i, layer in enumerate(model.stack.layers) if getattr(layer, "needs_graph", False)
              and hasattr(layer, "attention_probs")]
    if not layers:
        return {}
    was_training = model.training
    model.eval()
    sums = {i: dict.fromkeys(READ_KINDS, 0.0) for i in layers}
    answers = errors = distractor = 0
    for start in range(0, len(data.inputs), batch_size):
        x, y = data.inputs[start:start + batch_size], data.targets[start:start + batch_size]
        B, T = x.shape
        rec = record_forward(model, x, return_hidden=True)
        hidden = rec.state.hidden_states  # hidden[i]: the input of layer i
        kind, _ = edge_type_map(rec.state.graph, B, T)  # kind[b, i, j]: type of the edge j -> i
        rows, query, key_pos, value_pos = answer_sources(x, y)
        found = key_pos >= 0
        rows, query, key_pos, value_pos = rows[found], query[found], key_pos[found], value_pos[found]
        if not len(rows):
            continue
        positions = torch.arange(T)
        edge = kind[rows, query]  # [A, T]
        cls = torch.full_like(edge, len(READ_KINDS) - 1)  # other
        cls[edge == EDGE_TYPE_ID["semantic"]] = READ_KINDS.index("semantic")
        cls[edge == EDGE_TYPE_ID["successor"]] = READ_KINDS.index("successor")
        cls[(edge == EDGE_TYPE_ID["sequential"]) | (positions[None] == query[:, None])] = READ_KINDS.index("local")
        cls[positions[None] == key_pos[:, None]] = READ_KINDS.index("key")
        cls[positions[None] == value_pos[:, None]] = READ_KINDS.index("value")
        for i in layers:
            probs = model.stack.layers[i].attention_probs(hidden[i], rec.ctx).mean(1)  # [B, T, T]
            p = probs[rows, query]  # [A, T]
            for c, name in enumerate(READ_KINDS):
                sums[i][name] += float((p * (cls == c)).sum())
        predicted = rec.logits[rows, query].argmax(-1)  # [A]
        wrong = predicted != y[rows, query]
        decoys = (cls == READ_KINDS.index("successor")) & (x[rows] == predicted[:, None])  # [A, T]
        answers += len(rows)
        errors += int(wrong.sum())
        distractor += int((wrong & decoys.any(-1)).sum())
    model.train(was_training)
    return {"layers": [{"layer": i, **{name: sums[i][name] / max(answers, 1) for name in READ_KINDS}} for i in layers],
            "answers": answers, "errors": errors, "errors_distractor": distractor / errors if errors else 0.0}


class _Batches:
    """Training batches: shuffled epochs over the fixed training set, or fresh rows every step."""

    def __init__(self, splits: RecallSplits, cell: RecallCell):
        self.splits, self.cell = splits, cell
        self.generator = torch.Generator().manual_seed(cell.seed)
        self.rng = np.random.default_rng([cell.data_seed, 2, cell.seed])
        self.order, self.cursor = torch.empty(0, dtype=torch.long), 0

    def next(self):
        if self.cell.fresh_data:
            return self.splits.fresh_batch(self.cell.batch_size, self.rng)
        take = []
        need = self.cell.batch_size
        while need:
            if self.cursor == len(self.order):
                self.order, self.cursor = torch.randperm(len(self.splits.train.inputs), generator=self.generator), 0
            part = self.order[self.cursor:self.cursor + need]
            take.append(part)
            self.cursor += len(part)
            need -= len(part)
        index = torch.cat(take)
        return self.splits.train.inputs[index], self.splits.train.targets[index]


@torch.no_grad()
def recall_diagnostics(model, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """Per answer position of one row ``inputs/targets [1, T]``: where its key and value sit, whether the graph
    links them to it, and the model's prediction (the recall section of ``sosm inspect``'s report).

    Returns ``{"queries": [{position, key_position, value_position, key_linked, value_linked, predicted,
    answer, correct}], "edge_recall_key", "edge_recall_value", "accuracy"}``; ``*_linked`` are None for a
    model without a graph.
    """
    from ..graph.convert import to_neighbor_index

    model.eval()
    logits, state = model(inputs)
    predicted = logits[0].argmax(-1)  # [T]
    neighbors = to_neighbor_index(state.graph)[0, :inputs.shape[1]] if state.graph is not None else None
    _, query, key_pos, value_pos = answer_sources(inputs, targets)
    queries = []
    for q, k, v in zip(query.tolist(), key_pos.tolist(), value_pos.tolist()):
        listed = set(neighbors[q].tolist()) if neighbors is not None else None
        answer = int(targets[0, q])
        queries.append({"position": q, "key_position": k, "value_position": v,
                        "key_linked": None if listed is None or k < 0 else k in listed,
                        "value_linked": None if listed is None or v < 0 else v in listed,
                        "predicted": int(predicted[q]), "answer": answer, "correct": int(predicted[q]) == answer})

    def share(field):
        flags = [entry[field] for entry in queries if entry[field] is not None]
        return sum(flags) / len(flags) if flags else None

    model.train()
    return {"queries": queries, "edge_recall_key": share("key_linked"), "edge_recall_value": share("value_linked"),
            "accuracy": share("correct")}


def write_recall_inspection(model, data: RecallData, out_dir, row: int = 0, meta: Optional[dict] = None):
    """``sosm inspect``'s report (graph, DePass attribution, provenance) of test row ``row`` plus its recall section.

    Writes ``out_dir/index.html`` (and ``report.json``, the plots, ``graph.html`` for graph models); returns
    the HTML path.
    """
    from ..analysis.report import build_report, write_report

    inputs, targets = data.inputs[row:row + 1], data.targets[row:row + 1]
    model.eval()
    report = build_report(model, inputs, [str(t) for t in inputs[0].tolist()], ablations=False,
                          meta={**(meta or {}), "test_row": row},
                          label_of=lambda token: str(token))
    report["recall"] = recall_diagnostics(model, inputs, targets)
    graph = model(inputs)[1].graph if model.config.uses_graph else None
    model.train()
    return write_report(report, out_dir, graph)


def train_cell(cell: RecallCell, splits: Optional[RecallSplits] = None, inspect_dir=None, save_dir=None) -> dict:
    """Train ``cell``'s model on its task and score it on the test set.

    Args:
        cell: the :class:`RecallCell`.
        splits: the task's train/test sets when already built (must match ``cell.task_config()``).
        inspect_dir: when given, the trained model's inspect report on test row 0, with the recall
            section (:func:`write_recall_inspection`), is written there.
        save_dir: when given, the trained model is saved there (``SOSMModel.save_pretrained``) with
            ``cell.json`` (the cell, to rebuild its test set: ``make_recall_splits(RecallCell.from_dict(...)
            .task_config())``).

    Returns:
        One result row: the cell's fields (less ``progress``), ``accuracy`` and ``loss`` on the test
        set, ``train_loss`` (mean of the last 10% of steps), ``parameters``, ``state_floats``,
        ``steps_run``, ``examples_seen``, ``wall_s``, ``cpu_s`` (process CPU time), ``curve``
        (interim evaluations), and for graph models ``edge_recall_key`` / ``edge_recall_value`` /
        ``avg_neighbors`` / ``attended_fraction`` and ``reads`` (:func:`attention_reads` on the test set).
    """
    from ..model import SOSMModel

    started, cpu_started = time.perf_counter(), time.process_time()
    if splits is None:
        splits = make_recall_splits(cell.task_config())
    elif splits.config != cell.task_config():
        raise ValueError(f"splits were built for {splits.config}, not for this cell's task {cell.task_config()}")
    torch.manual_seed(cell.seed)
    config = cell.model_config()
    model = SOSMModel(config)
    optimizer = adamw(model, cell)
    batches = _Batches(splits, cell)
    warmup = int(cell.warmup_frac * cell.steps)
    losses, curve = [], []
    interim = RecallData(splits.test.inputs[:cell.eval_rows], splits.test.targets[:cell.eval_rows])
    bar = tqdm(range(cell.steps), desc=f"{cell.model} T={cell.seq_len} kv={cell.num_kv_pairs} d={cell.d_model} "
               f"lr={cell.lr:.2g}", disable=not cell.progress, leave=False)
    step = 0
    for step in bar:
        lr = lr_at(step, lr=cell.lr, min_lr=cell.lr * cell.min_lr_ratio, warmup_steps=warmup,
                   decay_steps=cell.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = batches.next()
        mask = y != IGNORE_INDEX
        logits, _ = model(x, logits_mask=mask)  # [N, V] at the answer positions
        loss = F.cross_entropy(logits, y[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cell.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cell.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        if cell.eval_every and (step + 1) % cell.eval_every == 0 and step + 1 < cell.steps:
            scores = evaluate(model, interim)
            curve.append({"step": step + 1, **scores})
            bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{scores['accuracy']:.3f}")
            if scores["accuracy"] >= cell.stop_at:
                break
        elif step % 20 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    row = {k: v for k, v in cell.to_dict().items() if k != "progress"}
    row.update(evaluate(model, splits.test))
    tail = losses[-max(1, len(losses) // 10):]
    row.update(train_loss=sum(tail) / len(tail), steps_run=step + 1, examples_seen=(step + 1) * cell.batch_size,
               parameters=sum(p.numel() for p in model.parameters() if p.requires_grad), curve=curve)
    avg_neighbors = None
    if config.uses_graph:
        lookup = cell.task != "selective_copying"  # its answers are not at a key's earlier occurrence
        graph_stats = edge_recall(model, splits.test, answers=lookup)
        row.update(graph_stats)
        avg_neighbors = graph_stats["avg_neighbors"]
        reads = attention_reads(model, splits.test) if lookup else None
        if reads:
            row["reads"] = reads
    row["state_floats"] = state_floats(model, avg_neighbors)
    if save_dir is not None:
        model.save_pretrained(save_dir)
        (Path(save_dir) / "cell.json").write_text(json.dumps(cell.to_dict(), indent=1, sort_keys=True))
        row["saved"] = str(save_dir)
    if inspect_dir is not None:
        row["inspect"] = str(write_recall_inspection(model, splits.test, inspect_dir, meta={"cell": cell.to_dict()}))
    row["wall_s"] = time.perf_counter() - started
    row["cpu_s"] = time.process_time() - cpu_started  # this process's CPU time: the cost on a shared machine
    return row
