"""``sosm quantize``: post-training dynamic INT8 quantization of a checkpoint's linear layers."""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quantize", help="dynamic INT8 quantization of a checkpoint (CPU serving)",
        description="Quantize every linear layer of a trained checkpoint to int8 (per-channel weights, activations "
                    "quantized per call: torch.ao.quantization.quantize_dynamic; sosm.train.quantize says which "
                    "layers and why) and write it as a new run folder. The result loads like any other checkpoint: "
                    "sosm eval / generate / serve --checkpoint OUT (CPU only).")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a run folder (its newest checkpoint is used) or a checkpoint folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="new (or empty) folder for the quantized run")
    parser.add_argument("--json", metavar="FILE", help="also write what was done (sizes, modules) as JSON")
    return parser


def run(args) -> int:
    from ..train.loading import load_trained
    from ..train.quantize import quantize_checkpoint

    trained = load_trained(args.checkpoint, device="cpu")
    result = quantize_checkpoint(trained, args.out)
    print(f"{trained.label} (step {trained.checkpoint.step}): {len(result.modules)} linear layers -> int8; weights "
          f"{result.fp32_bytes:,} -> {result.int8_bytes:,} bytes ({result.int8_bytes / result.fp32_bytes:.2f}x); "
          f"wrote {result.path}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result.to_dict(), handle, indent=2)
            handle.write("\n")
    return 0
