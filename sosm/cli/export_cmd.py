"""``sosm export``: a checkpoint's forward as an ONNX graph, checked against PyTorch with onnxruntime."""
from __future__ import annotations

import argparse
import json

FORMATS = ("onnx",)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX (checked with onnxruntime)",
        description="Export the model's parallel forward (input_ids [B, T] -> logits [B, T, V], dynamic batch and "
                    "length) to ONNX. Graph models take their graph as inputs (neighbors [B, T, Kn], "
                    "landmark_distances [B, T, L] or, for structure=rwpe, rwpe [B, T, W]) built by the model's "
                    "PyTorch builder: see "
                    "sosm.serve.onnx_export. The file is then run with onnxruntime at --verify-lengths and compared "
                    "with PyTorch. A model that cannot export (long-term memory, an INT8 checkpoint) is refused "
                    "with the reason (exit 2).")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default onnx)")
    parser.add_argument("--out", required=True, metavar="M.onnx", help="the file to write")
    parser.add_argument("--verify-lengths", default="1,7,16", metavar="LIST",
                        help="comma-separated lengths to compare onnxruntime with PyTorch at (default 1,7,16; "
                             "cut to the model's context; empty: no check)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest accepted max-abs logit difference (default 1e-4); above it the exit code is 1")
    parser.add_argument("--json", metavar="FILE", help="also write the export's description and errors as JSON")
    return parser


def run(args) -> int:
    from ..serve.onnx_export import export_onnx, verify_onnx
    from ..train.loading import load_trained

    try:
        lengths = [int(part) for part in args.verify_lengths.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--verify-lengths={args.verify_lengths!r} is invalid; accepted: comma-separated ints "
                         ">= 1") from None
    if any(length < 1 for length in lengths):
        raise ValueError(f"--verify-lengths={args.verify_lengths!r} is invalid; accepted: ints >= 1")
    trained = load_trained(args.checkpoint, device="cpu")
    result = export_onnx(trained.model, args.out)
    report = {"checkpoint": str(trained.checkpoint.path), "model": trained.model.config.model, **result.to_dict(),
              "versions": _versions()}
    print(f"{trained.label}: wrote {result.path} in {result.seconds:.1f} s; inputs {', '.join(result.inputs)}; "
          f"dynamic axes {result.dynamic_axes}")
    for note in result.notes:
        print(f"note: {note}")
    status = 0
    if lengths:
        max_len = trained.model.config.max_seq_len
        errors = verify_onnx(trained.model, result.path, lengths=sorted({min(n, max_len) for n in lengths}))
        report["max_abs_error"] = errors
        worst = max(errors.values())
        verdict = "PASS" if worst <= args.tolerance else "FAIL"
        print("onnxruntime vs PyTorch, max |logit difference| by length: "
              + ", ".join(f"T={n}: {e:.2e}" for n, e in errors.items()) + f" -> {verdict} (tolerance {args.tolerance:g})")
        status = 0 if verdict == "PASS" else 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    return status


def _versions() -> dict:
    import importlib.metadata
    import platform

    found = {"python": platform.python_version()}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
