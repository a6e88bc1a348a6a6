"""Block attribution sums to 1, token attribution methods agree on shape and causality, ablations are sane."""
import pytest
import torch

from sosm.analysis import block_attribution, provenance_report, run_ablations
from sosm.analysis.ablation import ablation_markdown, next_token_loss
from sosm.analysis.attribution import METHODS, gradient_block_shares, token_attribution
from sosm.analysis.depass import DePass
from sosm.common.blocks import BLOCK_NAMES
from sosm.graph.types import EDGE_TYPES

from .conftest import tiny_ids, tiny_model


def test_block_attribution_shares_sum_to_one_and_contributions_to_the_logit():
    model = tiny_model("hybrid")
    ids = tiny_ids(batch=1)
    result = block_attribution(model, ids, position=5, target=3)
    assert result.names == list(BLOCK_NAMES) + ["temporal", "bias"]
    assert abs(sum(result.shares) - 1) < 1e-6 and min(result.shares) >= 0
    logit = model(ids)[0][0, 5, 3].item()
    assert abs(sum(result.contributions) - logit) <= 1e-4 * max(1.0, abs(logit))
    assert result.top(3)[0][1] == max(result.shares)
    with pytest.raises(ValueError, match="position"):
        block_attribution(model, ids, position=99)
    with pytest.raises(ValueError, match="target"):
        block_attribution(model, ids, target=10_000)
    with pytest.raises(ValueError, match=r"\[1, T\]"):
        block_attribution(model, tiny_ids(batch=2))


@pytest.mark.parametrize("method", METHODS)
def test_token_attribution_is_causal(method):
    model = tiny_model("graph_attention", "graph_alibi")
    ids = tiny_ids(batch=1)
    scores = token_attribution(model, ids, method=method, position=6, ig_steps=4)
    assert scores.shape == (ids.shape[1],)
    assert scores[7:].abs().max() == 0 and scores[:7].abs().max() > 0


def test_depass_token_attribution_sums_to_logit_minus_bias():
    model = tiny_model("transformer")
    ids = tiny_ids(batch=1)
    result = DePass(model).run(ids, by="token")
    scores = token_attribution(model, ids, method="depass", position=4, target=2)
    expected = model(ids)[0][0, 4, 2] - result.logits[-1, 0, 4, 2]
    assert torch.allclose(scores.sum(), expected, atol=1e-5)


def test_gradient_block_shares_sum_to_one_and_restore_mode():
    model = tiny_model("hybrid").train()
    ids = tiny_ids(batch=2)
    shares = gradient_block_shares(model, ids, ids.roll(-1, 1))
    assert set(shares) == set(BLOCK_NAMES) and abs(sum(shares.values()) - 1) < 1e-6
    assert model.training and all(p.grad is None for p in model.parameters())


def test_ablation_table():
    model = tiny_model("hybrid")
    ids = tiny_ids()
    rows = run_ablations(model, ids)
    assert rows[0] == {"ablation": "none", "kind": "none", "loss": next_token_loss(model, ids), "delta_loss": 0.0,
                       "note": ""}
    kinds = [r["kind"] for r in rows]
    assert kinds.count("block") == 16 and kinds.count("layer") == 2 and kinds.count("memory") == 1
    assert "edge_type:semantic" in [r["ablation"] for r in rows]
    for row in rows:
        assert abs(row["loss"] - row["delta_loss"] - rows[0]["loss"]) < 1e-9
    assert any(abs(r["delta_loss"]) > 0 for r in rows if r["kind"] == "layer")
    # hooks were removed: the loss is back to the baseline
    assert next_token_loss(model, ids) == rows[0]["loss"]
    table = ablation_markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "block:I" in table


def test_ablating_a_zero_layer_changes_nothing():
    model = tiny_model("transformer")
    with torch.no_grad():
        model.stack.layers[1].out_proj.weight.zero_()
        model.stack.layers[1].mlp.fc_out.weight.zero_()
        model.stack.layers[1].mlp.fc_out.bias.zero_()
    rows = run_ablations(model, tiny_ids())
    assert [r["ablation"] for r in rows] == ["none", "layer:0(attention)", "layer:1(attention)"]
    assert rows[2]["delta_loss"] == pytest.approx(0.0, abs=1e-6) and rows[1]["delta_loss"] != 0


def test_provenance_report_counts_and_attention_mass():
    model = tiny_model("hybrid")
    ids = tiny_ids(batch=1)
    result = DePass(model).run(ids, by="edge_type")
    graph = result.record.state.graph
    report = provenance_report(graph, tokens=list("abcdefghijkl"), seq_len=ids.shape[1], attention=result.attention)
    src, dst = graph.edge_index
    real = (src % graph.seq_len < 12) & (dst % graph.seq_len < 12)
    assert report["num_edges"] == int(real.sum())
    assert sum(v["count"] for v in report["edge_types"].values()) == report["num_edges"]
    assert report["edge_types"]["sequential"]["count"] == 11
    assert sum(report["degree"]["in"]["counts"]) == 12
    assert report["hubs"][0]["out_degree"] == max(h["out_degree"] for h in report["hubs"])
    (row,) = report["attention_mass"]  # one attention layer in "AM"
    assert row["layer"] == 0
    assert abs(row["self"] + sum(row[name] for name in EDGE_TYPES) - 1) < 1e-5
    with pytest.raises(ValueError, match="seq_len"):
        provenance_report(graph, seq_len=10_000)


def test_deletion_curve_and_probe():
    from sosm.analysis.faithfulness import deletion_curve, resample
    from sosm.analysis.probe import compare_senses, probe_sentence
    from sosm.tokenizers import ByteTokenizer

    model = tiny_model("hybrid")
    ids = tiny_ids(batch=1)
    scores = torch.arange(12, dtype=torch.float32)
    curve = deletion_curve(model, ids, scores, position=5, target=2)
    assert curve["order"] == [5, 4, 3, 2, 1, 0] and len(curve["logits"]) == 7
    assert curve["logits"][0] == pytest.approx(model(ids)[0][0, 5, 2].item(), abs=1e-5)
    assert resample([0.0, 1.0, 2.0], points=5) == [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="scores"):
        deletion_curve(model, ids, scores[:3], position=5, target=2)
    model = tiny_model("hybrid", vocab=256)
    probes = [probe_sentence(model, ByteTokenizer(), text, "bank", cue=cue)
              for text, cue in (("the river bank", "river"), ("a muddy bank", "muddy"), ("money bank", "money"))]
    assert probes[0]["position"] == len("the river bank") - 1
    assert 0 < probes[0]["cue_share"] < 1 and "river" in probes[0]["attribution_by_word"]
    stats = compare_senses(probes[:2], probes[2:])
    assert 0 <= stats["neighbor_jaccard_across"] <= 1 and stats["js_next_within"] >= 0
    with pytest.raises(ValueError, match="does not occur"):
        probe_sentence(model, ByteTokenizer(), "no such word", "bank")
