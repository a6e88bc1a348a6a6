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
    done = _run("experiments/plot_recall.py", "experiments/results/recall.json", "--curves",
                "--out", str(tmp_path / "curves.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "curves.png").stat().st_size > 10_000


def test_recall_plot_of_chosen_lines(tmp_path):
    done = _run("experiments/plot_recall.py", "experiments/results/recall.json", "--only", "transformer",
                "hybrid MA +successor", "--out", str(tmp_path / "recall.png"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "recall.png").stat().st_size > 10_000
    assert "| transformer" in done.stdout and "rwkv" not in done.stdout
    done = _run("experiments/plot_recall.py", "experiments/results/recall.json", "--only", "nobody",
                "--out", str(tmp_path / "none.png"))
    assert done.returncode == 2 and "names:" in done.stderr


def test_recall_tables_prints_the_cells_of_the_committed_file():
    done = _run("experiments/recall_tables.py", "--only", "transformer", "hybrid MA +successor")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert lines and all(line.split(" | ")[0] in ("| transformer", "| hybrid MA +successor") for line in lines)
    assert any("1.00 / 1.00" in line for line in lines)  # the successor edges' value edge recall
