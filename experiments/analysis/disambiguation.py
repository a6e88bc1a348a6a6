"""Disambiguation probe over hand-written sentences: five ambiguous words, two senses, three sentences per sense.

Usage (the committed results):
    python experiments/analysis/disambiguation.py --checkpoint runs/analysis_tiny_hybrid \
        --out experiments/results/disambiguation
Writes ``<out>.md`` (tables and the per-sentence details) and ``<out>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sosm.analysis.probe import compare_senses, probe_sentence
from sosm.train.loading import load_trained

#: word -> {sense: [(sentence, cue word)]}; the ambiguous word comes after its cue, sentences <= 48 chars
SENTENCES = {
    "bank": {"river": [("we sat by the river on the grassy bank", "river"),
                       ("the boat drifted to the muddy river bank", "river"),
                       ("fish swam near the steep stream bank", "stream")],
             "money": [("she paid her money into the bank", "money"),
                       ("the loan came from the city savings bank", "savings"),
                       ("he took the cash to the bank", "cash")]},
    "bat": {"animal": [("in the dark cave hung a sleeping bat", "cave"),
                       ("the wings of the night flying bat", "wings"),
                       ("a vampire is a kind of bat", "vampire")],
            "sport": [("he hit the ball hard with his bat", "ball"),
                      ("the cricket player raised his bat", "cricket"),
                      ("she swung the wooden baseball bat", "baseball")]},
    "pitch": {"sound": [("the singer held the note at a high pitch", "singer"),
                        ("the music rose to a shrill pitch", "music"),
                        ("tune the voice to the right pitch", "voice")],
              "field": [("the players ran onto the football pitch", "football"),
                        ("the grass on the cricket pitch", "cricket"),
                        ("rain soaked the muddy rugby pitch", "rugby")]},
    "light": {"lamp": [("she turned on the lamp to make light", "lamp"),
                       ("the sun gave a warm bright light", "sun"),
                       ("a candle gives a soft light", "candle")],
              "weight": [("the box was empty and very light", "empty"),
                         ("a feather is soft and light", "feather"),
                         ("pack a bag that is small and light", "bag")]},
    "crane": {"bird": [("by the lake stood a tall white crane", "lake"),
                       ("the bird with long legs was a crane", "bird"),
                       ("a wading marsh crane", "marsh")],
              "machine": [("the builders lifted steel with a crane", "builders"),
                          ("the tower on the building site was a crane", "building"),
                          ("the dock used a heavy cargo crane", "cargo")]},
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="output path without suffix")
    args = parser.parse_args(argv)
    trained = load_trained(args.checkpoint)
    rows, details = [], []
    for word, senses in SENTENCES.items():
        probes = {sense: [probe_sentence(trained.model, trained.tokenizer, text, word, cue) for text, cue in items]
                  for sense, items in senses.items()}
        (name_a, a), (name_b, b) = probes.items()
        stats = compare_senses(a, b)
        cue = {sense: sum(p["cue_share"] for p in ps) / len(ps) for sense, ps in probes.items()}
        rows.append({"word": word, "senses": [name_a, name_b], **stats, "cue_share": cue})
        for sense, ps in probes.items():
            for p in ps:
                details.append({"word": word, "sense": sense, "text": p["text"], "cue": p["cue"],
                                "cue_share": p["cue_share"], "top_next": p["top_next"], "neighbors": p["neighbors"],
                                "top_words": sorted(p["attribution_by_word"].items(), key=lambda kv: -kv[1])[:3]})
    command = "python experiments/analysis/disambiguation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": command, "checkpoint": str(trained.checkpoint.path), "step": trained.checkpoint.step,
              "summary": rows, "sentences": details}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(markdown_tables(result))
    return 0


def markdown_tables(result: dict) -> str:
    lines = ["| word (senses) | JS next within | JS next across | hidden cos within | hidden cos across | "
             "neighbour Jaccard within | across | cue share (sense A / B) |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["summary"]:
        a, b = r["senses"]
        lines.append(f"| {r['word']} ({a} / {b}) | {r['js_next_within']:.4f} | {r['js_next_across']:.4f} | "
                     f"{r['hidden_cosine_within']:.3f} | {r['hidden_cosine_across']:.3f} | "
                     f"{r['neighbor_jaccard_within']:.2f} | {r['neighbor_jaccard_across']:.2f} | "
                     f"{r['cue_share'][a]:.3f} / {r['cue_share'][b]:.3f} |")
    lines += ["", "| word | sense | sentence | predicted next | top attributed words | graph neighbours |",
              "|---|---|---|---|---|---|"]
    for d in result["sentences"]:
        top = ", ".join(f"{w} {s:.2f}" for w, s in d["top_words"])
        lines.append(f"| {d['word']} | {d['sense']} | {d['text']} | {d['top_next']!r} | {top} | "
                     f"{' '.join(d['neighbors'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
