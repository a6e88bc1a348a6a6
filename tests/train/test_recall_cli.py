"""``sosm recall --tiny`` through the real command line, in a subprocess, and its resume."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

from sosm.train.recall_grid import load_rows


def _sosm(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sosm.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_recall_tiny_runs_and_resumes(tmp_path):
    out = tmp_path / "recall.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = _sosm("recall", "--tiny", "--out", str(out), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu_s < 30, f"the CI grid took {cpu_s:.1f} s of CPU"  # CPU, not wall: the CI machine is shared
    rows = load_rows(out)
    assert sorted(r["model"] for r in rows) == ["graph_attention", "hybrid", "mamba", "transformer"]
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["steps_run"] == 30 and r["state_floats"] > 0 for r in rows)
    assert all("edge_recall_value" in r for r in rows if r["model"] in ("hybrid", "graph_attention"))
    assert "| mqar | 16 | 2 | 32 | transformer |" in done.stdout
    before = out.read_bytes()
    again = _sosm("recall", "--tiny", "--out", str(out), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "4 of 4 cells already done, skipped" in again.stdout and out.read_bytes() == before
    more = _sosm("recall", "--tiny", "--models", "transformer", "--lrs", "0.003", "0.01", "--out", str(out),
                 "--no-progress", "--save", str(tmp_path / "models"), cwd=tmp_path)
    assert more.returncode == 0 and "1 of 2 cells already done" in more.stdout
    assert len(json.loads(out.read_text())["rows"]) == 5
    (saved,) = (tmp_path / "models").iterdir()  # only the cell trained now
    assert saved.name == "001-transformer-T16-kv2-d32-lr0.01-s0"
    assert {p.name for p in saved.iterdir()} == {"config.json", "model.safetensors", "cell.json"}


def test_recall_bad_arguments_exit_2(tmp_path):
    bad_shape = _sosm("recall", "--tiny", "--shapes", "64x4", "--out", str(tmp_path / "r.json"), cwd=tmp_path)
    assert bad_shape.returncode == 2 and "T:KV" in bad_shape.stderr
    too_short = _sosm("recall", "--tiny", "--shapes", "8:4", "--out", str(tmp_path / "r.json"), cwd=tmp_path)
    assert too_short.returncode == 2 and "seq_len=8" in too_short.stderr
    assert not (tmp_path / "r.json").exists()
    (tmp_path / "a_file").write_text("")
    for option in ("--save", "--inspect", "--out"):
        bad_dir = _sosm("recall", "--tiny", "--out", str(tmp_path / "r.json"), option, str(tmp_path / "a_file" / "x"),
                        cwd=tmp_path)
        assert bad_dir.returncode == 2 and option in bad_dir.stderr and "is a file, not a folder" in bad_dir.stderr
        assert len(bad_dir.stderr.strip().splitlines()) == 1, bad_dir.stderr
    assert not (tmp_path / "r.json").exists()
