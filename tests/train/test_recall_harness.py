"""The recall harness (sosm.train.recall, recall_grid): answer-only logits, metrics, determinism, resume."""
from __future__ import annotations

import json
import math

import pytest
import torch

from sosm.data import IGNORE_INDEX, RecallData, mqar
from sosm.graph.types import SemanticGraph, empty_edge_columns
from sosm.model import SOSMConfig, SOSMModel
from sosm.model.state import State
from sosm.train.recall import RecallCell, edge_recall, evaluate, state_floats, train_cell
from sosm.train.recall_grid import CELL_FIELDS, best_lr_summary, cell_key, grid_cells, load_rows, run_grid

TOY = dict(seq_len=16, num_kv_pairs=2, vocab_size=64, d_model=32, batch_size=8, num_train=64, num_test=16,
           progress=False)


@pytest.mark.parametrize("model", ["transformer", "hybrid"])
def test_logits_mask_equals_full_logits_at_those_positions(model):
    torch.manual_seed(0)
    net = SOSMModel(SOSMConfig(model=model, n_layers=2, d_model=32, n_heads=2, vocab_size=64, max_seq_len=16,
                               layer_pattern="MA")).eval()
    x, y = mqar(3, 16, 2, 64, seed=0)
    mask = y != IGNORE_INDEX
    full, _ = net(x)
    part, _ = net(x, logits_mask=mask)
    assert part.shape == (6, 64)
    torch.testing.assert_close(part, full[mask], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="logits_mask"):
        net(x, logits_mask=mask.long())


def test_state_floats_follow_zoology_convention():
    def build(**kw):
        return SOSMModel(SOSMConfig(n_layers=2, d_model=64, max_seq_len=64, **kw))

    assert state_floats(build(model="transformer"), None) == 2 * (2 * 64 * 64)       # KV cache per layer
    assert state_floats(build(model="mamba"), None) == 2 * (128 * 16 + 128 * 3)      # SSM + conv state
    assert state_floats(build(model="hybrid", layer_pattern="MA"), 7.0) == 128 * 19 + 8 * 64 * 2 * 64  # M + (k+1) T 2d


class _FixedGraphModel(torch.nn.Module):
    """Stands in for a graph model: a fixed graph, logits that always say token 5."""

    def __init__(self, edges, batch_size, seq_len, vocab=16):
        super().__init__()
        edge_index = torch.tensor(edges, dtype=torch.long).T  # [2, E] (source, target) node ids
        self.graph = SemanticGraph(edge_index=edge_index, **empty_edge_columns(len(edges)), batch_size=batch_size,
                                   seq_len=seq_len)
        self.vocab = vocab

    def forward(self, x, logits_mask):
        logits = torch.zeros(int(logits_mask.sum()), self.vocab)
        logits[:, 5] = 1.0
        return logits, State(graph=self.graph)


def test_edge_recall_and_accuracy_on_a_hand_built_graph():
    # row 0: key 3 at 0, value 5 at 1, query 3 at 6 -> answer 5; row 1: key 4 at 2, value 7 at 3, query at 5 -> 7
    inputs = torch.tensor([[3, 5, 4, 7, 0, 0, 3, 0], [3, 5, 4, 7, 0, 4, 0, 0]])
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[0, 6], targets[1, 5] = 5, 7
    data = RecallData(inputs, targets)
    T = 8
    edges = [(0, 6), (1, 6), (5, 6),          # row 0: query 6 sees key 0 and value 1
             (T + 2, T + 5), (T + 4, T + 5)]  # row 1: query 5 sees key 2, not value 3
    stats = edge_recall(_FixedGraphModel(edges, 2, T), data)
    assert stats["edge_recall_key"] == 1.0 and stats["edge_recall_value"] == 0.5
    assert stats["avg_neighbors"] == pytest.approx(5 / 16)
    assert stats["attended_fraction"] == pytest.approx((5 / 16 + 1) * T / (T * (T + 1) / 2))
    scores = evaluate(_FixedGraphModel(edges, 2, T), data)
    assert scores["accuracy"] == 0.5
    log_p = torch.log_softmax(torch.tensor([0.0] * 5 + [1.0] + [0.0] * 10), 0)
    assert scores["loss"] == pytest.approx(float(-(log_p[5] + log_p[7]) / 2))


def test_train_cell_is_deterministic_and_learns():
    cell = RecallCell(model="transformer", steps=40, lr=3e-3, **TOY)
    first, second = train_cell(cell), train_cell(cell)
    for key in ("accuracy", "loss", "train_loss", "parameters", "state_floats"):
        assert first[key] == second[key], key
    assert first["train_loss"] < math.log(64) - 0.5            # below the loss of a uniform guess
    assert first["steps_run"] == 40 and first["examples_seen"] == 320 and first["wall_s"] > 0


def test_graph_cells_report_edge_recall_and_fresh_data_differs():
    row = train_cell(RecallCell(model="hybrid", steps=3, **TOY))
    assert 0.0 <= row["edge_recall_value"] <= 1.0 and row["edge_recall_key"] > 0.9  # equal tokens link
    assert row["state_floats"] > state_floats(SOSMModel(SOSMConfig(model="mamba", n_layers=1, d_model=32,
                                                                   max_seq_len=16)), None)
    fixed = train_cell(RecallCell(model="mamba", steps=5, **TOY))
    fresh = train_cell(RecallCell(model="mamba", steps=5, fresh_data=True, **TOY))
    assert fixed["train_loss"] != fresh["train_loss"]


def test_selective_copying_graph_cells_count_their_edges_without_edge_recall():
    """No answer sits at a key's earlier occurrence, but the graph's pairs and state are still counted."""
    cell = RecallCell(model="hybrid", task="selective_copying", steps=2, **{**TOY, "vocab_size": 16, "seq_len": 40})
    row = train_cell(cell)
    assert "edge_recall_key" not in row and "reads" not in row
    assert row["avg_neighbors"] > 0 and 0 < row["attended_fraction"] < 1
    without_graph = state_floats(SOSMModel(cell.model_config()), None)  # the graph layer counted as 0
    assert row["state_floats"] > without_graph


def test_early_stop_records_the_curve():
    row = train_cell(RecallCell(model="mamba", steps=6, eval_every=2, eval_rows=8, stop_at=0.0, **TOY))
    assert row["steps_run"] == 2 and [c["step"] for c in row["curve"]] == [2]


@pytest.mark.parametrize("kwargs, name", [(dict(model="rnn"), "model"), (dict(lr=0.0), "lr"),
                                          (dict(steps=0), "steps"), (dict(warmup_frac=1.0), "warmup_frac"),
                                          (dict(seq_len=6, num_kv_pairs=2), "seq_len")])
def test_bad_cells_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RecallCell(**{**TOY, **kwargs})


def test_grid_resumes_and_keeps_finished_rows(tmp_path):
    path = tmp_path / "recall.json"
    cells = grid_cells(["transformer", "mamba"], [(16, 2)], [32], [1e-3, 3e-3], [0], steps=2,
                       **{k: v for k, v in TOY.items() if k not in ("seq_len", "num_kv_pairs", "d_model")})
    run_grid(cells[:1], path, log=None)                        # a grid stopped after its first cell
    first = load_rows(path)[0]
    messages = []
    rows = run_grid(cells, path, log=messages.append)
    assert len(rows) == 4 and rows[0] == first                 # kept as it was, not retrained
    assert messages[0].endswith("1 of 4 cells already done, skipped") and len(messages) == 4
    assert {cell_key(r) for r in rows} == {c.key() for c in cells}
    again = []
    assert len(run_grid(cells, path, log=again.append)) == 4 and again == [f"{path}: 4 of 4 cells already done, skipped"]
    summary = best_lr_summary(rows)
    assert len(summary) == 2 and all(len(e["lrs_tried"]) == 2 for e in summary)
    for entry in summary:
        candidates = [r["accuracy"] for r in rows if r["model"] == entry["model"]]
        assert entry["accuracy"] == max(candidates)
        assert len(entry["steps_run_seeds"]) == len(entry["accuracy_seeds"]) >= 1


def test_damaged_results_file_is_named(tmp_path):
    path = tmp_path / "recall.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="recall.json.*not valid JSON"):
        load_rows(path)
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not a sosm.recall_results file"):
        load_rows(path)


def test_recall_inspection_reports_each_query_and_its_edges(tmp_path):
    from sosm.data import make_recall_splits

    cell = RecallCell(model="hybrid", steps=2, model_overrides={"graph": {"successor_edges": True}}, **TOY)
    splits = make_recall_splits(cell.task_config())
    row = train_cell(cell, splits, inspect_dir=tmp_path / "inspect")
    report = json.loads((tmp_path / "inspect" / "report.json").read_text())
    recall = report["recall"]
    assert row["inspect"].endswith("index.html") and (tmp_path / "inspect" / "graph.html").is_file()
    answers = int((splits.test.targets[0] != IGNORE_INDEX).sum())
    assert len(recall["queries"]) == answers
    for q in recall["queries"]:
        assert q["value_position"] == q["key_position"] + 1 and q["key_position"] < q["position"]
        assert q["key_linked"] is True and q["value_linked"] is True  # equal tokens link; successors reach the value
    assert recall["edge_recall_value"] == 1.0
    page = (tmp_path / "inspect" / "index.html").read_text()
    assert "<h2>Recall</h2>" in page and "value linked" in page
    plain = recall_diagnostics_of(SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, vocab_size=64,
                                                       max_seq_len=16)), splits)
    assert plain["edge_recall_key"] is None and all(q["key_linked"] is None for q in plain["queries"])


def recall_diagnostics_of(model, splits):
    from sosm.train.recall import recall_diagnostics

    return recall_diagnostics(model, splits.test.inputs[:1], splits.test.targets[:1])


def test_rows_written_before_a_field_existed_load_with_its_default(tmp_path):
    """A results file from before ``label`` existed (the committed recall_2000.json) loads with the default label."""
    from sosm.train.recall_grid import _FIELD_DEFAULTS, write_rows

    row = {name: 1 for name in CELL_FIELDS if name != "label"}
    write_rows(tmp_path / "old.json", [row])
    (loaded,) = load_rows(tmp_path / "old.json")
    assert loaded["label"] == "" and all(loaded[k] == 1 for k in row)
    required = sorted(set(CELL_FIELDS) - set(_FIELD_DEFAULTS))
    del row[required[0]]
    write_rows(tmp_path / "bad.json", [row])
    with pytest.raises(ValueError, match=required[0]):
        load_rows(tmp_path / "bad.json")


@torch.no_grad()
def _reads_oracle(model, data):
    """attention_reads by loops over answers and python sets of the graph's edges (no dense type matrix)."""
    from sosm.analysis.recording import record_forward
    from sosm.data.recall import answer_sources
    from sosm.graph.types import EDGE_TYPE_ID

    model.eval()
    x, y = data.inputs, data.targets
    rec = record_forward(model, x)
    _, hidden = model.stack(rec.x0, rec.ctx, return_hidden=True)  # the stack replayed: an independent route
    frame = rec.state.graph.seq_len
    types = {}
    for (s, d), t in zip(rec.state.graph.edge_index.T.tolist(), rec.state.graph.edge_type.tolist()):
        types[(d // frame, d % frame, s % frame)] = t
    attn = model.stack.layers[1].attention_probs(hidden[1], rec.ctx).mean(1)  # [B, T, T]
    totals = dict.fromkeys(("value", "key", "successor", "semantic", "local", "other"), 0.0)
    answers = errors = decoy = 0
    for b, q, k, v in zip(*(t.tolist() for t in answer_sources(x, y))):
        if k < 0:
            continue
        answers += 1
        predicted = int(rec.logits[b, q].argmax())
        hit = False
        for j in range(q + 1):
            t = types.get((b, q, j))
            name = ("value" if j == v else "key" if j == k else "local" if j == q or t == EDGE_TYPE_ID["sequential"]
                    else "successor" if t == EDGE_TYPE_ID["successor"] else "semantic"
                    if t == EDGE_TYPE_ID["semantic"] else "other")
            totals[name] += float(attn[b, q, j])
            hit |= name == "successor" and int(x[b, j]) == predicted
        if predicted != int(y[b, q]):
            errors += 1
            decoy += hit
    return {name: value / answers for name, value in totals.items()}, answers, errors, decoy


def test_attention_reads_match_a_loop_over_the_graph_edges():
    """Shares per edge kind (value, key, distractor successors, ...) of the graph layer's attention at the answers."""
    from sosm.data import make_recall_splits
    from sosm.train.recall import attention_reads

    cell = RecallCell(model="hybrid", model_overrides={"graph": {"successor_edges": True, "k": 3}},
                      **{**TOY, "seq_len": 32, "num_kv_pairs": 4, "num_test": 12})
    splits = make_recall_splits(cell.task_config())
    torch.manual_seed(0)
    model = SOSMModel(cell.model_config())
    reads = attention_reads(model, splits.test, batch_size=5)  # batches that do not divide the rows
    shares, answers, errors, decoy = _reads_oracle(model, splits.test)
    (layer,) = reads["layers"]
    assert layer["layer"] == 1 and reads["answers"] == answers and reads["errors"] == errors
    for name, value in shares.items():
        assert layer[name] == pytest.approx(value, abs=1e-5), name
    assert sum(v for k, v in layer.items() if k != "layer") == pytest.approx(1.0, abs=1e-5)
    assert layer["value"] > 0 and layer["successor"] > 0 and layer["semantic"] > 0  # every kind occurs here
    assert reads["errors_distractor"] == pytest.approx(decoy / errors)
    assert attention_reads(SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, vocab_size=64,
                                                max_seq_len=16)), splits.test) == {}


def test_saved_cell_reloads_with_the_same_test_accuracy(tmp_path):
    from sosm.data import make_recall_splits

    cells = grid_cells(["hybrid"], [(16, 2)], [32], [1e-3], [0], steps=2,
                       model_overrides={"graph": {"successor_edges": True}},
                       **{k: v for k, v in TOY.items() if k not in ("seq_len", "num_kv_pairs", "d_model")})
    (row,) = run_grid(cells, tmp_path / "recall.json", log=None, save_dir=tmp_path / "models")
    saved = tmp_path / "models" / "001-hybrid-T16-kv2-d32-lr0.001-s0"
    assert row["saved"] == str(saved) and "reads" in row and row["reads"]["answers"] > 0
    cell = RecallCell.from_dict(json.loads((saved / "cell.json").read_text()))
    assert cell.key() == cells[0].key()
    model = SOSMModel.from_pretrained(saved)
    assert evaluate(model, make_recall_splits(cell.task_config()).test)["accuracy"] == row["accuracy"]
