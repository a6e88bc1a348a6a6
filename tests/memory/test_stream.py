"""Streaming evaluation (``sosm.stream`` and ``sosm eval --stream``)."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from sosm.evaluate import evaluate_tokens
from sosm.model import SOSMConfig, SOSMModel
from sosm.stream import MODES, stream_evaluate

VOCAB = 30
SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare.txt"
SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "smoke.yaml"


def _hybrid():
    torch.manual_seed(0)
    return SOSMModel(SOSMConfig(vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=4, max_seq_len=16)).eval()


def test_plain_mode_equals_windowed_evaluation_and_memory_starts_empty():
    model = _hybrid()
    ids = torch.randint(0, VOCAB, (16 * 6 + 5,), generator=torch.Generator().manual_seed(1))
    result = stream_evaluate(model, ids, 16, modes=MODES)
    total, count = evaluate_tokens(model, ids, 16, batch_size=1)
    assert result.windows == 7 and result.tokens == count == ids.numel() - 1
    assert result.mean_loss("plain") == pytest.approx(total / count, rel=1e-5)
    # window 0 sees an empty memory and no carried state: every mode agrees there
    first = {mode: losses[0] for mode, losses in result.window_loss.items()}
    assert max(first.values()) - min(first.values()) < 1e-5
    assert result.memory_entries == count  # every scored token was written
    assert model.config.memory is False  # the config switch is restored
    assert result.window_loss["memory"][1:] != result.window_loss["plain"][1:]


def test_carry_mode_of_a_mamba_model_equals_one_long_forward():
    torch.manual_seed(2)
    model = SOSMModel(SOSMConfig(vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, model="mamba",
                                 max_seq_len=32)).eval()
    ids = torch.randint(0, VOCAB, (33,), generator=torch.Generator().manual_seed(3))
    result = stream_evaluate(model, ids, 8, modes=("carry",))
    with torch.no_grad():
        full = F.cross_entropy(model(ids[None, :32])[0][0], ids[1:]).item()
    assert result.mean_loss("carry") == pytest.approx(full, rel=1e-4)


def test_stream_arguments_are_checked():
    model = _hybrid()
    ids = torch.randint(0, VOCAB, (40,))
    with pytest.raises(ValueError, match="window"):
        stream_evaluate(model, ids, 17)
    with pytest.raises(ValueError, match="modes"):
        stream_evaluate(model, ids, 8, modes=("recall",))
    mamba = SOSMModel(SOSMConfig(vocab_size=VOCAB, d_model=32, n_heads=2, model="mamba"))
    with pytest.raises(ValueError, match="graph-attention"):
        stream_evaluate(mamba, ids, 8, modes=("memory",))


def test_cli_eval_stream(tmp_path, capsys):
    from sosm.cli import main

    text = SHAKESPEARE.read_text(encoding="utf-8")[:20_000] if SHAKESPEARE.is_file() else "To be or not to be. " * 1000
    text_file = tmp_path / "text.txt"
    text_file.write_text(text, encoding="utf-8")
    config = yaml.safe_load(SMOKE.read_text())
    config["data"] = {"dataset": "text_file", "path": str(text_file), "block_size": 16}
    config.update(max_steps=2, eval_interval=2, checkpoint_interval=2, progress_bar=False, tensorboard=False,
                  device="cpu")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 0
    report = tmp_path / "stream.json"
    assert main(["eval", "--checkpoint", str(out), "--stream", "--stream-windows", "12", "--memory-k", "4",
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "carry+memory" in printed and "12 windows" in printed
    stream = json.loads(report.read_text())["stream"]
    assert stream["windows"] == 12 and set(stream["window_loss"]) == set(MODES)
    assert all(len(v) == 12 for v in stream["window_loss"].values())


def test_absent_window_ranges_are_absent_not_zero():
    """5 windows: there is no window 10 or later, so that mean is None in JSON and '—' in the table."""
    from sosm.stream import format_table

    ids = torch.randint(0, VOCAB, (16 * 5 + 1,), generator=torch.Generator().manual_seed(4))
    result = stream_evaluate(_hybrid(), ids, 16, modes=("plain",))
    summary = result.summary()["plain"]
    assert summary["loss_windows_10_end"] is None
    assert summary["loss_windows_0_10"] == pytest.approx(summary["loss"])
    assert result.mean_loss("plain", 10) is None
    assert json.loads(json.dumps(result.to_dict()))["summary"]["plain"]["loss_windows_10_end"] is None
    row = format_table(result).splitlines()[-1].split("|")
    assert row[5].strip() == "—", row
