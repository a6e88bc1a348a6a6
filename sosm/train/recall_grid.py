"""A grid of recall cells, run one by one into a resumable JSON file, and Zoology's best-lr summary.

``run_grid(cells, path)`` trains every cell that ``path`` does not already hold and rewrites the
file atomically after each one, so a stopped grid continues where it stopped. A row is matched to
its cell by every field of :class:`~sosm.train.recall.RecallCell` (a changed protocol is a new cell).
:func:`best_lr_summary` keeps, per (task, model, T, kv, d_model, protocol), the learning rate with
the best accuracy averaged over seeds, as Zoology reports.

Example:
    >>> cells = grid_cells(models=["transformer"], shapes=[(16, 2)], widths=[32], lrs=[1e-3], seeds=[0],
    ...                    vocab_size=64, steps=2, batch_size=4, num_train=32, num_test=8, progress=False)
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "recall.json"
    >>> rows = run_grid(cells, path, log=lambda message: None)
    >>> len(rows), len(run_grid(cells, path, log=lambda message: None))   # the second run trains nothing
    (1, 1)
"""
from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np

from ..data.recall import make_recall_splits
from ..common.files import atomic_write
from .recall import RecallCell, train_cell

FORMAT = "sosm.recall_results"
VERSION = 1
ZOOLOGY_LRS = tuple(float(x) for x in np.logspace(-4, -2, 4))  # 1e-4, 4.6e-4, 2.2e-3, 1e-2
CELL_FIELDS = tuple(f.name for f in fields(RecallCell) if f.name != "progress")
#: a field missing from an older results file reads as its default (``label`` came later)
_FIELD_DEFAULTS = {f.name: f.default for f in fields(RecallCell) if f.default is not MISSING}


def grid_cells(models: Sequence[str], shapes: Sequence[tuple], widths: Sequence[int], lrs: Sequence[float],
               seeds: Sequence[int], **common) -> list:
    """Every combination as a :class:`RecallCell` (shapes are ``(seq_len, num_kv_pairs)``), in run order.

    The order is shape, width, model, lr, seed: the cheap, informative cells of a shape come first.
    ``common`` holds the other ``RecallCell`` fields (steps, batch_size, vocab_size, ...).
    """
    return [RecallCell(seq_len=T, num_kv_pairs=kv, d_model=d, model=model, lr=float(lr), seed=seed, **common)
            for T, kv in shapes for d in widths for model in models for lr in lrs for seed in seeds]


def cell_key(row: dict) -> str:
    """The identity of a result row's cell: its :class:`RecallCell` fields as sorted JSON."""
    return json.dumps({name: row.get(name, _FIELD_DEFAULTS.get(name)) for name in CELL_FIELDS}, sort_keys=True)


def load_rows(path: Union[str, Path]) -> list:
    """Rows of a results file (empty when it does not exist); a damaged file raises ``ValueError`` naming it."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"results file {path} is not valid JSON ({err}); move it away or pass another --out")
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("rows"), list):
        raise ValueError(f"results file {path} is not a {FORMAT} file (expected an object with format={FORMAT!r} "
                         f"and a list of rows); move it away or pass another --out")
    required = set(CELL_FIELDS) - set(_FIELD_DEFAULTS)  # a field added later (label, ...) takes its default
    missing = [i for i, row in enumerate(data["rows"]) if not required <= set(row)]
    if missing:
        raise ValueError(f"results file {path}: rows {missing[:5]} lack cell fields "
                         f"{sorted(required - set(data['rows'][missing[0]]))}")
    return [{**{k: v for k, v in _FIELD_DEFAULTS.items() if k in CELL_FIELDS}, **row} for row in data["rows"]]


def write_rows(path: Union[str, Path], rows: list) -> None:
    """Write ``rows`` to ``path`` atomically (temp file, fsync, rename)."""
    text = json.dumps({"format": FORMAT, "version": VERSION, "rows": rows}, indent=1, sort_keys=True) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def run_grid(cells: Iterable[RecallCell], path: Union[str, Path],
             log: Optional[Callable[[str], None]] = print, inspect_dir=None, save_dir=None) -> list:
    """Train every cell not yet in ``path``, appending each row as it finishes; returns all rows.

    Args:
        cells: the cells, run in order.
        path: the JSON results file (created when absent; rows of other cells are kept).
        log: called with one line per cell (``None``: silent).
        inspect_dir: when given, each cell trained now writes its inspect report (with the recall
            section) into ``inspect_dir/<cell number>-<model or label>-T<T>-kv<kv>-d<d>-lr<lr>-s<seed>/``.
        save_dir: when given, each cell trained now saves its model (and ``cell.json``) into
            ``save_dir/<the same name>/`` (:func:`~sosm.train.recall.train_cell`).
    """
    log = log or (lambda message: None)
    rows = load_rows(path)
    done = {cell_key(row) for row in rows}
    cells = list(cells)
    todo = [cell for cell in cells if cell.key() not in done]
    if len(todo) < len(cells):
        log(f"{path}: {len(cells) - len(todo)} of {len(cells)} cells already done, skipped")
    splits_cache: dict = {}
    for index, cell in enumerate(todo):
        task = cell.task_config()
        name = json.dumps(task.to_dict(), sort_keys=True)
        if name not in splits_cache:
            splits_cache.clear()  # one task's data in memory at a time (cells are ordered by shape)
            splits_cache[name] = make_recall_splits(task)
        tag = (cell.label or cell.model).strip("+ ").replace(" ", "_").replace("/", "_") or cell.model
        folder = (f"{index + 1:03d}-{tag}-T{cell.seq_len}-kv{cell.num_kv_pairs}-d{cell.d_model}-lr{cell.lr:.3g}"
                  f"-s{cell.seed}")
        row = train_cell(cell, splits_cache[name], inspect_dir=None if inspect_dir is None else Path(inspect_dir) / folder,
                         save_dir=None if save_dir is None else Path(save_dir) / folder)
        rows.append(row)
        write_rows(path, rows)
        log(f"[{index + 1}/{len(todo)}] {cell.model} T={cell.seq_len} kv={cell.num_kv_pairs} d={cell.d_model} "
            f"lr={cell.lr:.3g} seed={cell.seed}: accuracy {row['accuracy']:.4f}, loss {row['loss']:.3f}, "
            f"{row['wall_s']:.0f} s")
    return rows


def row_name(row: dict) -> str:
    """Display name of a results row or summary entry: the model (hybrid: with its pattern) and its label.

    Example:
        >>> row_name({"model": "hybrid", "layer_pattern": "MA", "label": "+successor"})
        'hybrid MA +successor'
    """
    base = row["model"] + (f" {row['layer_pattern']}" if row["model"] == "hybrid" else "")
    label = row.get("label") or ""
    return f"{base} {label}" if label.startswith("+") else (label or base)


def best_lr_summary(rows: Sequence[dict]) -> list:
    """Per (every cell field but lr and seed): the lr whose mean accuracy over seeds is best.

    Returns:
        One dict per group: the group's fields, ``best_lr``, ``accuracy`` (mean over seeds at that lr),
        ``accuracy_seeds`` and ``steps_run_seeds`` (seed order), ``lrs_tried`` and the mean of ``state_floats``,
        ``parameters``, ``wall_s``, ``cpu_s`` and (graph models) ``edge_recall_key`` / ``edge_recall_value`` /
        ``attended_fraction`` at that lr.
    """
    groups: dict = {}
    for row in rows:
        group = json.dumps({k: row.get(k, _FIELD_DEFAULTS.get(k)) for k in CELL_FIELDS if k not in ("lr", "seed")},
                           sort_keys=True)
        groups.setdefault(group, {}).setdefault(row["lr"], []).append(row)
    summary = []
    for group, by_lr in groups.items():
        best_lr = max(sorted(by_lr), key=lambda lr: np.mean([r["accuracy"] for r in by_lr[lr]]))
        best = by_lr[best_lr]
        entry = {**json.loads(group), "best_lr": best_lr, "accuracy": float(np.mean([r["accuracy"] for r in best])),
                 "accuracy_seeds": [r["accuracy"] for r in sorted(best, key=lambda r: r["seed"])],
                 "steps_run_seeds": [r.get("steps_run", r["steps"]) for r in sorted(best, key=lambda r: r["seed"])],
                 "lrs_tried": sorted(by_lr)}
        for key in ("state_floats", "parameters", "wall_s", "cpu_s", "edge_recall_key", "edge_recall_value",
                    "attended_fraction"):
            values = [r[key] for r in best if r.get(key) is not None]
            if values:
                entry[key] = float(np.mean(values))
        summary.append(entry)
    return sorted(summary, key=lambda e: (e["task"], e["seq_len"], e["num_kv_pairs"], e["d_model"], e["model"]))


def format_summary(summary: Sequence[dict]) -> str:
    """A Markdown table of :func:`best_lr_summary`."""
    lines = ["| task | T | kv | d_model | model | best lr | accuracy (seeds) | state floats | params "
             "| edge recall key / value | CPU s per cell |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        seeds = ", ".join(f"{a:.3f}" for a in e["accuracy_seeds"])
        model = e.get("label") or e["model"] + (f" {e['layer_pattern']}" if e["model"] == "hybrid" else "")
        model += "".join(f", {key}={value}" for key, value in sorted(e["model_overrides"].items()))
        edges = (f"{e['edge_recall_key']:.2f} / {e['edge_recall_value']:.2f}" if "edge_recall_key" in e else "")
        lines.append(f"| {e['task']} | {e['seq_len']} | {e['num_kv_pairs']} | {e['d_model']} | {model} | "
                     f"{e['best_lr']:.2g} | {e['accuracy']:.3f} ({seeds}) | {e.get('state_floats', 0):,.0f} | "
                     f"{e.get('parameters', 0):,.0f} | {edges} | {e.get('cpu_s', 0):.0f} |")
    return "\n".join(lines)
