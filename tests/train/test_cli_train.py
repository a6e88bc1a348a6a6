"""``sosm train`` / ``eval`` / ``generate`` end to end, in process, on tiny real models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sosm.cli import main

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "smoke.yaml"


def write_config(tmp_path, text_file, **model) -> Path:
    """smoke.yaml pointed at the small text file, with model overrides."""
    config = yaml.safe_load(SMOKE.read_text())
    config["data"] = {"dataset": "text_file", "path": str(text_file), "block_size": 24}
    config.update(max_steps=6, eval_interval=3, checkpoint_interval=3, progress_bar=False, tensorboard=False,
                  device="cpu")
    config["model"].update(model)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("model", ["transformer", "hybrid"])
def test_train_resume_eval_generate(tmp_path, text_file, capsys, model):
    overrides = {"model": model} if model != "hybrid" else {}
    config = write_config(tmp_path, text_file, **overrides)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "4"]) == 0
    assert main(["train", "--config", str(config), "--out", str(out), "--resume"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["model"] == model and summary["leaky"] is False

    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--leak-check", "--max-tokens", "200", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["tokens"] == 200 and result["leak_check"]["passed"] is True
    assert result["bits_per_byte"] == pytest.approx(result["loss"] / 0.6931471805599453, rel=1e-6)
    assert main(["eval", "--checkpoint", str(out), "--text-file", str(text_file), "--max-tokens", "100"]) == 0
    assert "PASS" in capsys.readouterr().out

    args = ["generate", "--checkpoint", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "12", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("ROMEO:")


def test_leaky_graph_is_labelled_and_caught(tmp_path, text_file, capsys):
    config = write_config(tmp_path, text_file, graph={"causal": False})
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "3"]) == 0
    assert "LEAKY" in capsys.readouterr().out
    report = tmp_path / "eval.json"
    status = main(["eval", "--checkpoint", str(out), "--leak-check", "--max-tokens", "100", "--json", str(report)])
    printed = capsys.readouterr().out
    assert status == 1, "the leak check must fail (exit 1) for a non-causal graph"
    assert "LEAK DETECTED" in printed and "LEAKY" in printed
    assert json.loads(report.read_text())["leak_check"]["passed"] is False


def test_cli_errors_are_clear(tmp_path, text_file, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: 3\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "bad.yaml: unknown keys ['learning_rate']" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path / "missing")]) == 2
    assert "no checkpoint found" in capsys.readouterr().err
    config = write_config(tmp_path, text_file, model="transformer")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "r"), "--max-steps", "0"]) == 2
    assert "--max-steps=0 is invalid" in capsys.readouterr().err


def test_help_lists_the_documented_flags(capsys):
    for command, flags in (("train", ["--config", "--resume", "--out", "--max-steps", "--device"]),
                           ("eval", ["--checkpoint", "--text-file", "--leak-check"]),
                           ("generate", ["--checkpoint", "--prompt", "--max-new-tokens", "--seed"])):
        with pytest.raises(SystemExit):
            from sosm.cli import build_parser
            build_parser().parse_args([command, "--help"])
        text = capsys.readouterr().out
        assert all(flag in text for flag in flags), (command, text)


@pytest.mark.slow  # a subprocess that imports torch and trains (~3 s); the in-process SIGTERM tests are fast
def test_sigterm_stops_the_command_with_a_checkpoint_and_exit_143(tmp_path, text_file):
    """``timeout`` sends SIGTERM: the run saves the step it finished, says how to resume, exits 143."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = write_config(tmp_path, text_file, model="transformer")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "sosm.cli", "train", "--config", str(config), "--out", str(out), "--max-steps",
           "100000", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until training steps are logged
        if log.is_file() and '"kind": "train"' in log.read_text():
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["finished"] is False and summary["steps"] >= 1
    assert f"step_{summary['steps']:07d}" in summary["checkpoint"]
    assert "stopped by SIGTERM" in output and "--resume" in output


@pytest.mark.slow  # 20 s of wall time under `timeout`
def test_under_timeout_the_shell_sees_124_and_the_run_is_saved(tmp_path, text_file):
    """Issue 12 item 30, as the README now says: sosm train exits 143 on SIGTERM, but the shell running
    `timeout 20s sosm train ...` sees timeout's 124; the step it finished is saved either way."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("timeout") is None:
        pytest.skip("no coreutils timeout")
    config = write_config(tmp_path, text_file, model="transformer")
    out = tmp_path / "run"
    child = subprocess.run(["timeout", "20s", sys.executable, "-m", "sosm.cli", "train", "--config", str(config),
                            "--out", str(out), "--max-steps", "1000000", "--no-progress"],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert child.returncode == 124, (child.returncode, child.stdout, child.stderr)
    assert "stopped by SIGTERM" in child.stdout, "the trainer got the SIGTERM and saved (started within 20 s)"
    assert json.loads((out / "summary.json").read_text())["stopped_by"] == "SIGTERM"


def test_seed_option_overrides_the_config_seed(tmp_path, text_file):
    config = write_config(tmp_path, text_file, model="transformer")
    runs = {}
    for name, extra in (("a", []), ("b", ["--seed", "1337"]), ("c", ["--seed", "7"])):
        out = tmp_path / name
        assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "2", *extra]) == 0
        runs[name] = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    seeds = {name: next(r for r in log if r.get("event") == "start")["config"]["seed"] for name, log in runs.items()}
    assert seeds == {"a": 1337, "b": 1337, "c": 7}
    loss = {name: [r["loss"] for r in log if r["kind"] == "train"] for name, log in runs.items()}
    assert loss["a"] == loss["b"] != loss["c"]


def test_train_resume_of_a_finished_run_says_nothing_to_do(tmp_path, text_file, capsys):
    config = write_config(tmp_path, text_file, model="transformer")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "3"]) == 0
    summary = (out / "summary.json").read_bytes()
    capsys.readouterr()
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "3", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "nothing to do" in printed and "nan" not in printed and "--max-steps" in printed
    assert (out / "summary.json").read_bytes() == summary
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "2", "--resume"]) == 2
    assert "max_steps=2 is below step 3" in capsys.readouterr().err
    assert (out / "summary.json").read_bytes() == summary


def test_eval_progress_leak_check_and_canary(tiny_run, tmp_path, capsys):
    report = tmp_path / "eval.json"
    code = main(["eval", "--checkpoint", str(tiny_run), "--max-tokens", "200", "--leak-check", "--canary",
                 "--canary-steps", "3", "--json", str(report)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "eval: 100%" in captured.err and "200/200" in captured.err, "a progress bar while evaluating"
    assert "leak check: 100%" in captured.err and "canary: 100%" in captured.err
    result = json.loads(report.read_text())
    leak, canary = result["leak_check"], result["canary"]
    assert leak["passed"] and leak["tolerance"] == 0.0 and leak["positions"] == list(range(47)) and leak["rows"] == 2
    assert canary["passed"] and canary["steps"] == 3 and canary["uniform_loss"] == pytest.approx(5.545177, abs=1e-6)
    assert "canary [tiny]: PASS" in captured.out
    assert main(["eval", "--checkpoint", str(tiny_run), "--max-tokens", "50", "--no-progress"]) == 0
    assert "eval:" not in capsys.readouterr().err


@pytest.mark.slow  # a 100-step canary run (~8 s)
def test_canary_of_the_leaky_control_fails(tmp_path, text_file, capsys):
    config = write_config(tmp_path, text_file, graph={"causal": False, "num_landmarks": 4})
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "1"]) == 0
    report = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out), "--max-tokens", "50", "--canary", "--canary-steps", "100",
                 "--no-progress", "--json", str(report)]) == 1
    canary = json.loads(report.read_text())["canary"]
    assert not canary["passed"] and canary["loss"] < canary["uniform_loss"] - 0.2
    assert "FAIL (LEAK: learns i.i.d. tokens)" in capsys.readouterr().out


def test_generate_prints_each_token_as_it_is_sampled(tiny_run, capsys, monkeypatch):
    from sosm.cli import generate_cmd

    pieces = []
    emit = generate_cmd.TextStreamer._emit
    monkeypatch.setattr(generate_cmd.TextStreamer, "_emit", lambda self, piece: (pieces.append(piece), emit(self, piece)))
    assert main(["generate", "--checkpoint", str(tiny_run), "--prompt", "ROMEO:", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert pieces[0] == "ROMEO:" and len(pieces) >= 5, pieces  # the prompt at once, then piece by piece
    assert "".join(pieces) == out and out.endswith("\n")


def test_text_streamer_holds_back_a_cut_character():
    import io

    from sosm.cli.generate_cmd import TextStreamer
    from sosm.tokenizers import ByteTokenizer

    out = io.StringIO()
    streamer = TextStreamer(ByteTokenizer(), list(b"caf"), out=out)
    assert out.getvalue() == "caf"
    streamer(torch.tensor([0xC3]))  # the first byte of "é"
    assert out.getvalue() == "caf", "half a character is not printed"
    streamer(torch.tensor([0xA9]))
    assert out.getvalue() == "café"
    streamer(torch.tensor([0xC3]))  # a character that never completes: printed as U+FFFD at the end
    assert streamer.end() == "café\ufffd" and out.getvalue() == "café\ufffd\n"
