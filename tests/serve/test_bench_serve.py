"""The load test (experiments/bench/bench_serve.py) in a short form: a tiny hybrid, 4 clients x 5, a burst of 16."""
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "bench_serve.py"


@pytest.mark.slow  # two server processes and ~40 generations (~1 min on the 2-core CPU)
def test_short_load_test_meets_the_serving_bar(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "serve.json"
    record = bench.main(["--tiny", "--clients", "4", "--requests", "5", "--single", "8", "--burst", "16",
                         "--burst-queue-size", "2", "--max-tokens", "8", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["bar"] == record["bar"] and saved["environment"]["torch"]  # device, versions, shapes recorded
    bar = record["bar"]
    assert bar["no_5xx"] and bar["answers_equal"] and bar["burst_429"] and bar["rss_growth_le_10pct"], record
    assert record["load"]["statuses"] == {"200": 20} and record["load"]["answers_checked"] == 20
    assert record["burst"]["statuses"]["429"] >= 1 and "queue_size=2" in record["burst"]["refusal_message"]
    assert record["single_client"]["overhead_ratio"] < 1.5  # the 1.1x bar is the full run's (noise at this size)
    assert saved["shapes"]["clients"] == 4 and saved["config"]["parameters"] > 0
