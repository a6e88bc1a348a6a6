"""The inspect report of a routed model: which expert each token went to, beside its dominant MU block."""
import json

import torch

from sosm.analysis import build_report, write_report
from sosm.model import SOSMConfig, SOSMModel


def test_report_shows_each_tokens_experts_and_mod_choice_beside_its_block(tmp_path):
    torch.manual_seed(0)
    config = SOSMConfig(model="hybrid", layer_pattern="A,mod:M", n_layers=2, d_model=32, n_heads=2, vocab_size=40,
                        max_seq_len=32, d_state=4, moe_experts=4, moe_capacity=0.5,
                        graph={"k": 4, "num_landmarks": 4, "max_distance": 16})
    model = SOSMModel(config).eval()
    ids = torch.randint(0, 40, (1, 12), generator=torch.Generator().manual_seed(0))
    report = build_report(model, ids, ablations=False)
    routing = report["routing"]
    assert [layer["kind"] for layer in routing["layers"]] == ["moe", "mod"]
    moe, mod = routing["layers"]
    tokens = routing["tokens"]
    assert len(tokens) == 12 and all(tok["dominant_block"] for tok in tokens)
    assert tokens[0]["dominant_block"] == report["graph"]["nodes"][0]["dominant_block"]
    experts = [tok["routes"][moe["layer"]] for tok in tokens]
    assert sum(len(e) for e in experts) == sum(moe["load"])
    assert sum(sum(c) for c in moe["by_block"].values()) == sum(moe["load"])
    assert any(len(e) < 2 for e in experts), "capacity 0.5 leaves some token with fewer than its k experts"
    assert tokens[0]["routes"][mod["layer"]]["through"] and mod["through"] <= 6  # ceil(0.5 * 12)
    html = write_report(report, tmp_path).read_text(encoding="utf-8")
    assert "<h2>Routing</h2>" in html and "tokens per expert by dominant block" in html
    assert json.loads((tmp_path / "report.json").read_text())["routing"]["layers"][0]["routing"] == "topk"


def test_a_model_without_routing_has_no_routing_section():
    torch.manual_seed(0)
    model = SOSMModel(SOSMConfig(model="transformer", d_model=16, n_heads=2, vocab_size=20, n_layers=1)).eval()
    assert build_report(model, torch.randint(0, 20, (1, 6)), ablations=False)["routing"] is None
