"""The RWPE benchmark (experiments/bench/bench_rwpe_cpu.py) in a short form: its PyG check and its record."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "bench_rwpe_cpu.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rwpe_cpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_causal_rwpe_equals_pyg_per_prefix_and_the_record_is_written(tmp_path):
    pytest.importorskip("torch_geometric")
    out = tmp_path / "rwpe.json"
    record = _bench().main(["--seq-lens", "12", "24", "--batch", "3", "--anchor-samples", "3", "--k", "2",
                            "--successor", "--walk-length", "4", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["environment"]["torch"] and saved["shapes"]["walk_length"] == 4
    assert [row["seq_len"] for row in saved["rows"]] == [12, 24]
    for row in record["rows"]:
        assert row["max_abs_err_vs_pyg"] <= 1e-5 and row["edges"] > 0 and row["ours_one_block_s"] > 0
        assert row["anchor_pyg_per_prefix_s_scaled_to_batch"] == row["anchor_pyg_per_prefix_s_measured"]  # 3 of 3


def test_the_pyg_anchor_sees_a_changed_walk():
    """The check inside the benchmark can fail: a prefix walk differs from the whole-sample walk."""
    pytest.importorskip("torch_geometric")
    bench = _bench()
    edges = bench.batch_graph(1, 16, 2, True, 0)
    causal = bench.pyg_causal(edges, 1, 16, 4)
    whole = bench.pyg_bidirectional(edges, 1, 16, 4)
    assert causal.shape == whole.shape == (16, 4)
    assert (causal - whole).abs().max() > 1e-3  # early rows differ: their later neighbours are cut away
    assert (causal[-1] - whole[-1]).abs().max() < 1e-6  # the last row's prefix is the whole sample
