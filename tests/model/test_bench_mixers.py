"""experiments/bench/bench_mixers_cpu.py runs and writes a row per (mixer, T) beside the attention anchor."""
import json
import sys

import torch
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.bench import bench_mixers_cpu  # noqa: E402


def test_tiny_run_writes_rows_with_ratios(tmp_path):
    out = tmp_path / "mixers.json"
    assert bench_mixers_cpu.main(["--lengths", "16", "--repeats", "1", "--no-memory", "--mixers", "mamba",
                                  "graph_attention", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {r["mixer"]: r for r in record["rows"]}
    assert set(rows) == {"attention", "mamba", "graph_attention"}  # the anchor is always added
    assert rows["attention"]["cpu_ratio_to_attention"] == 1.0
    assert all(r["T"] == 16 and r["fwd_bwd_cpu_ms"] > 0 and r["parameters"] > 0 for r in rows.values())
    assert record["environment"]["torch"] and record["anchor"].startswith("attention")


def test_every_registered_mixer_builds_and_steps():
    """Bidirectional-only mixers are built bidirectional, graph mixers get a graph and a semantic state."""
    from sosm.model.mixers import mixer_names

    for name in mixer_names():
        layer, x, ctx = bench_mixers_cpu.build(name, 12)
        bench_mixers_cpu.step(layer, x, ctx)
        assert x.grad is not None and torch.isfinite(x.grad).all(), name
