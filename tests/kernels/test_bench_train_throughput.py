"""Smoke test of experiments/bench/bench_train_throughput.py at its tiny preset (CPU, 1 step each).

The script is the GPU training-throughput benchmark of issue 4; here it runs end to end on CPU
and its JSON rows are checked for the right models, lengths, batch rule and sane figures.
"""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "bench_train_throughput.py"
FAST = ["--size", "tiny", "--device", "cpu", "--warmup", "0", "--steps", "1", "--repeats", "1", "--strict"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_preset_writes_sane_rows(bench, tmp_path):
    out = tmp_path / "throughput.json"
    bench.main(FAST + ["--out", str(out)])
    data = json.loads(out.read_text())
    lengths = list(bench.PRESETS["tiny"]["lengths"])
    models = list(bench.DEFAULT_VARIANTS)
    assert data["lengths"] == lengths and data["environment"]["device"] == "cpu"
    assert len(data["load_average_before"]) == 3
    rows = data["rows"]
    assert sorted((r["model"], r["T"]) for r in rows) == sorted((m, t) for m in models for t in lengths)
    transformer = {r["T"]: r for r in rows if r["model"] == "transformer"}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["batch"] == 1024 // r["T"] and r["tokens_per_step"] == 1024
        assert math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0
        assert r["step_ms"] > 0 and r["repeats"] == 1
        # parameter counts matched to the Transformer's (5 %); random tokens: loss near ln(256)
        assert abs(r["params"] - transformer[r["T"]]["params"]) <= 0.05 * transformer[r["T"]]["params"]
        assert abs(r["last_loss"] - math.log(256)) < 1.0
        assert math.isclose(r["speed_ratio_to_transformer"] * transformer[r["T"]]["tokens_per_s"],
                            r["tokens_per_s"], rel_tol=1e-9)
    hybrid = [r for r in rows if r["model"] == "hybrid"]
    assert all(set(r["config"]["layer_types"]) == {"graph_attention", "mamba"} for r in hybrid)  # a real hybrid, not one layer kind
    from sosm.kernels.selective_scan import scan_path

    assert all(r["kernel_paths"]["selective_scan"] == scan_path("cpu") for r in hybrid)  # native when it builds
    reference = [r for r in rows if r["model"] == "hybrid_reference"]
    for r in reference:
        paths = r["kernel_paths"]
        assert r["forced_backend"] == "vectorized"
        assert paths["graph_attention"] == paths["selective_scan"] == "vectorized"
        assert paths["topk_similarity"].startswith("not called")  # the model uses sosm.graph's top-k on CPU
    assert set(data["ratios"]) >= {f"hybrid_kernels_over_reference_T{t}{s}" for t in lengths for s in ("", "_cpu_time")}
    assert all(r["tokens_per_cpu_s"] > 0 for r in rows)


def test_out_of_memory_is_recorded_not_raised(bench, tmp_path, monkeypatch):
    step = bench.Runner.step

    def failing(self):
        if self.name == "hybrid_reference":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return step(self)

    monkeypatch.setattr(bench.Runner, "step", failing)
    out = tmp_path / "oom.json"
    bench.main(FAST + ["--lengths", "128", "--models", "transformer", "hybrid_reference", "--warmup", "1",
                       "--out", str(out)])
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["transformer"]["status"] == "ok"
    oom = rows["hybrid_reference"]
    assert oom["status"] == "oom" and oom["phase"] == "warmup" and oom["alone"] is True
    assert "OutOfMemoryError" in oom["error"]


def test_is_oom(bench):
    assert bench.is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert bench.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not bench.is_oom(RuntimeError("shape mismatch"))
    assert not bench.is_oom(ValueError("out of memory"))


def test_other_failures_are_recorded_and_strict_raises(bench, tmp_path, monkeypatch):
    def broken(self):
        raise IndexError("index 9 is out of bounds")

    monkeypatch.setattr(bench.Runner, "step", broken)
    args = FAST + ["--lengths", "128", "--models", "transformer", "--warmup", "1", "--out", str(tmp_path / "e.json")]
    with pytest.raises(SystemExit, match="index 9 is out of bounds"):
        bench.main(args)
    row = json.loads((tmp_path / "e.json").read_text())["rows"][0]
    assert row["status"] == "error" and "IndexError" in row["error"] and "broken" in row["error"]
