"""Per-window table and plot of one or more ``sosm eval --stream --json`` results.

Reads the JSON files, prints a markdown table of the token-weighted mean loss per block of
``--bin`` windows for every mode (and the difference of each mode to ``plain``), the
paired per-window comparison (how many windows each mode wins against plain, and a
bootstrap 95% interval of the mean per-window difference), and writes a PNG of the
per-window loss difference to plain (moving average over ``--smooth`` windows).

    python experiments/analysis/stream_memory_plot.py stream_memory.json --png stream_memory.png
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load_modes(paths: list[str]) -> tuple[dict, np.ndarray]:
    """Mode -> per-window losses (a mode from a later file gets its threshold in its name)."""
    modes, tokens = {}, None
    for path in paths:
        stream = json.loads(Path(path).read_text())["stream"]
        counts = np.asarray(stream["window_tokens"], dtype=np.float64)
        if tokens is not None and not np.array_equal(tokens, counts):
            raise ValueError(f"{path}: its windows differ from the first file's")
        tokens = counts
        for mode, losses in stream["window_loss"].items():
            if mode in ("plain", "carry") and mode in modes:
                continue  # no memory: the same figures in every file
            name = mode if mode not in modes else f"{mode} (threshold {stream['memory_threshold']})"
            modes[name] = np.asarray(losses, dtype=np.float64)
    return modes, tokens


def binned_table(modes: dict, tokens: np.ndarray, bin_size: int) -> str:
    names = list(modes)
    head = "| windows | " + " | ".join(names) + " | " + " | ".join(f"{n} - plain" for n in names if n != "plain") + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(names) - ("plain" in names))]
    for start in range(0, len(tokens), bin_size):
        sl = slice(start, start + bin_size)
        w = tokens[sl]
        mean = {n: float((modes[n][sl] * w).sum() / w.sum()) for n in names}
        diffs = [f"{mean[n] - mean['plain']:+.4f}" for n in names if n != "plain" and "plain" in mean]
        rows.append(f"| {start}-{min(start + bin_size, len(tokens)) - 1} | " + " | ".join(f"{mean[n]:.4f}" for n in names)
                    + " | " + " | ".join(diffs) + " |")
    return "\n".join(rows)


def paired(modes: dict, tokens: np.ndarray, seed: int = 0, resamples: int = 2000) -> str:
    rng = np.random.default_rng(seed)
    lines = ["| mode | mean loss | - plain | 95% bootstrap interval of the per-window difference | windows better than plain |",
             "|---|---|---|---|---|"]
    plain = modes["plain"]
    for name, losses in modes.items():
        mean = float((losses * tokens).sum() / tokens.sum())
        if name == "plain":
            lines.append(f"| plain | {mean:.4f} | — | — | — |")
            continue
        diff = losses - plain
        picks = rng.integers(0, len(diff), size=(resamples, len(diff)))
        boot = (diff[picks] * tokens[picks]).sum(1) / tokens[picks].sum(1)
        low, high = np.percentile(boot, [2.5, 97.5])
        lines.append(f"| {name} | {mean:.4f} | {mean - float((plain * tokens).sum() / tokens.sum()):+.4f} | "
                     f"[{low:+.4f}, {high:+.4f}] | {int((diff < 0).sum())} / {len(diff)} |")
    return "\n".join(lines)


def plot(modes: dict, smooth: int, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    kernel = np.ones(smooth) / smooth
    for i, (name, losses) in enumerate(modes.items()):
        x, color = np.arange(len(losses)), f"C{i}"
        top.plot(x[smooth - 1:], np.convolve(losses, kernel, mode="valid"), label=name, lw=1, color=color)
        if name != "plain":
            bottom.plot(x[smooth - 1:], np.convolve(losses - modes["plain"], kernel, mode="valid"),
                        label=f"{name} - plain", lw=1, color=color)
    bottom.axhline(0.0, color="black", lw=0.5)
    top.set_ylabel(f"loss (nats/token), mean of {smooth} windows")
    bottom.set_ylabel("difference to plain")
    bottom.set_xlabel("window (64 tokens each)")
    top.set_title(title)
    top.legend(fontsize=8)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="+", help="sosm eval --stream --json outputs (same text and windows)")
    parser.add_argument("--bin", type=int, default=200, help="windows per table row")
    parser.add_argument("--smooth", type=int, default=50, help="moving-average width of the plot")
    parser.add_argument("--png", help="write the plot here")
    parser.add_argument("--title", default="sosm eval --stream: per-window loss")
    args = parser.parse_args()
    modes, tokens = load_modes(args.json)
    print(binned_table(modes, tokens, args.bin))
    print()
    print(paired(modes, tokens))
    if args.png:
        plot(modes, args.smooth, args.png, args.title)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
