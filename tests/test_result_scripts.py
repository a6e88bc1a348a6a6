"""The scripts that print and draw the committed results run on the committed result files."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_mixers_tables_prints_every_table_of_the_committed_files():
    done = _run("experiments/mixers_tables.py")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.count("### ") == 3
    for name in ("| mamba2 |", "| attention |", "| rwkv |", "hybrid MA +successor"):
        assert name in done.stdout


def test_recall_curves_plot(tmp_path):
    done = _run("experiments/plot_recall.py", "experiments/results/recall_4000.json", "--curves",
                "--out", str(tmp_path / "curves.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves.png").stat().st_size > 10_000
