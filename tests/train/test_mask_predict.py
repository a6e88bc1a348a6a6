"""Mask-predict: the objective's masking, the config rules, Mask-Predict decoding, and train/eval/generate end to end."""
from __future__ import annotations

import json

import pytest
import torch

from sosm.cli import main
from sosm.model import SOSMConfig, SOSMModel
from sosm.model.mask_predict import mask_predict_decode, mask_tokens, sample_ratios
from sosm.train import TrainConfig

BIDIRECTIONAL = {"model": "transformer", "causal": False, "n_layers": 1, "d_model": 32, "n_heads": 2}


def test_mask_tokens_masks_ceil_r_t_per_row_deterministically():
    ids = torch.arange(26).view(2, 13)
    masked, mask = mask_tokens(ids, torch.tensor([0.15, 1.0]), mask_id=99, generator=torch.Generator().manual_seed(0))
    assert mask.sum(1).tolist() == [2, 13]  # ceil(0.15 * 13) = 2, and the whole row
    assert torch.equal(masked[mask], torch.full((15,), 99)) and torch.equal(masked[~mask], ids[~mask])
    again, mask_again = mask_tokens(ids, torch.tensor([0.15, 1.0]), 99, torch.Generator().manual_seed(0))
    assert torch.equal(again, masked) and torch.equal(mask_again, mask)
    assert mask_tokens(ids, 1e-6, 99)[1].sum(1).tolist() == [1, 1]  # at least one per row
    with pytest.raises(ValueError, match="masking ratios must lie in \\(0, 1\\]"):
        mask_tokens(ids, 0.0, 99)
    ratios = sample_ratios(10_000, torch.Generator().manual_seed(1))
    assert float(ratios.min()) > 0 and float(ratios.max()) <= 1 and abs(float(ratios.mean()) - 0.5) < 0.02


def test_objective_is_validated_against_the_model():
    with pytest.raises(ValueError, match="train.objective='mask_predict' is invalid; accepted: next_token, or "
                                         "mask_predict with a bidirectional model"):
        TrainConfig.from_dict({"objective": "mask_predict", "model": {"model": "transformer"}})
    with pytest.raises(ValueError, match="next_token needs a causal model"):
        TrainConfig.from_dict({"model": {"model": "transformer", "causal": False}})
    with pytest.raises(ValueError, match="train.objective='mlm' is invalid; accepted: one of"):
        TrainConfig.from_dict({"objective": "mlm"})
    config = TrainConfig.from_dict({"objective": "mask_predict", "model": {**BIDIRECTIONAL, "graph": {"causal": False}}})
    assert not config.leaky  # bidirectional by design, not the LEAKY control


class Recorder(torch.nn.Module):
    """Logits that prefer token (position + 1) % V, confidence rising with the position; records each input."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.inputs = vocab, []

    def forward(self, ids):
        self.inputs.append(ids.clone())
        B, T = ids.shape
        logits = torch.zeros(B, T, self.vocab)
        logits[:, torch.arange(T), (torch.arange(T) + 1) % self.vocab] = torch.arange(T, dtype=torch.float) + 1
        return logits


def test_mask_predict_remasks_the_least_confident_n_times_n_minus_t_over_n():
    model = Recorder(vocab=21)
    ids = torch.full((1, 10), 20)  # all masked; 20 is the [MASK] id
    out = mask_predict_decode(model, ids, mask_id=20, iterations=4)
    masked_per_pass = [int((x == 20).sum()) for x in model.inputs]
    assert masked_per_pass == [10, 7, 5, 2]  # floor(10 (4 - t) / 4), t = 0..3
    assert torch.equal(model.inputs[2][0] == 20, torch.arange(10) < 5)  # the least confident: the first positions
    assert out.tolist() == [[(t + 1) % 21 for t in range(10)]]


def test_infilling_keeps_the_given_tokens_and_is_deterministic_by_seed():
    torch.manual_seed(0)
    model = SOSMModel(SOSMConfig(vocab_size=17, max_seq_len=16, **BIDIRECTIONAL)).eval()
    ids = torch.tensor([[1, 2, 16, 16, 3, 4, 16, 5, 6, 7, 8, 16, 9]])
    given = ids != 16
    for temperature in (0.0, 1.0):
        runs = [mask_predict_decode(model, ids, 16, iterations=3, temperature=temperature,
                                    generator=torch.Generator().manual_seed(4)) for _ in range(2)]
        assert torch.equal(runs[0], runs[1])
        assert torch.equal(runs[0][given], ids[given]) and bool((runs[0] != 16).all())
    causal = SOSMModel(SOSMConfig(model="transformer", vocab_size=17, max_seq_len=16, n_layers=1, d_model=32,
                                  n_heads=2)).eval()
    with pytest.raises(ValueError, match="mask-predict decoding needs a bidirectional model"):
        mask_predict_decode(causal, ids, 16)


def test_train_eval_generate_a_mask_predict_run(tmp_path, make_config, capsys):
    config = make_config(objective="mask_predict", max_steps=4, eval_interval=4, checkpoint_interval=4,
                         model=BIDIRECTIONAL)
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["leaky"] is False

    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--leak-check", "--max-tokens", "300", "--no-progress",
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "leak check: does not apply" in printed and "masked-token loss at ratio 0.15" in printed
    result = json.loads(report.read_text())
    assert [r["ratio"] for r in result["masked"]] == [0.15, 0.5] and result["leak_check"]["applies"] is False
    assert main(["eval", "--checkpoint", str(out), "--max-tokens", "300", "--no-progress", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["masked"] == result["masked"]  # the same masks: the same losses

    capsys.readouterr()
    args = ["generate", "--checkpoint", str(out), "--prompt", "ROMEO: __ l_rd", "--mask-char", "_",
            "--iterations", "3", "--seed", "2"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    text = first.rstrip("\n")  # (predicted bytes may decode to fewer characters: compare the given pieces only)
    assert text.startswith("ROMEO: ") and " l" in text[7:] and text.endswith("rd") and "_" not in text
    assert main(["generate", "--checkpoint", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "11"]) == 2
    assert "a mask-predict model decodes one window of at most block_size=16" in capsys.readouterr().err


def test_a_resumed_mask_predict_run_draws_the_same_masks(make_config, tmp_path):
    from sosm.train import Trainer

    def config(max_steps=6):
        return make_config(objective="mask_predict", max_steps=max_steps, eval_interval=3, checkpoint_interval=3,
                           model=BIDIRECTIONAL, optim={"lr_decay_steps": 6})

    full = Trainer(config(), tmp_path / "full").train()
    Trainer(config(3), tmp_path / "part").train()
    resumed = Trainer(config(), tmp_path / "part", resume=True).train()
    assert resumed.losses == {step: full.losses[step] for step in (4, 5, 6)}  # bit for bit on CPU
    assert resumed.evals[-1] == full.evals[-1]
