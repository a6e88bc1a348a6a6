"""The recall cost benchmark (experiments/bench/bench_recall_cost_cpu.py) in a short form: its record."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "bench_recall_cost_cpu.py"


def test_every_model_is_timed_beside_the_transformer_and_the_record_is_written(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_recall_cost_cpu", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "cost.json"
    record = bench.main(["--seq-lens", "32", "--batch", "2", "--d-model", "16", "--repeats", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["environment"]["torch"] and saved["shapes"]["d_model"] == 16
    assert out.with_suffix(".png").stat().st_size > 0  # the figure beside it
    models = record["rows"][0]["models"]
    assert set(models) == set(bench.MODELS) and models["transformer"]["step_ratio_over_transformer"] == 1.0
    assert models["mamba"]["attended_fraction"] is None and models["transformer"]["attended_fraction"] == 1.0
    for name in ("hybrid +successor k=1", "graph_attention +successor k=1"):
        # one semantic neighbour + its successor + the previous token: at most 3 + self of the 32 * 33 / 2 pairs
        assert 0 < models[name]["attended_fraction"] <= 4 * 32 / (32 * 33 / 2)
        assert models[name]["step_s"] > 0 and models[name]["state_floats"] > 0
    out.with_suffix(".png").unlink()
    assert bench.main(["--replot", str(out)])["rows"] == saved["rows"] and out.with_suffix(".png").exists()
