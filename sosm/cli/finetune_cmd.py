"""``sosm finetune``: LoRA adapters on a trained checkpoint (base frozen), saved alone and merged."""
from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help="fine-tune a checkpoint with LoRA adapters",
        description="Train low-rank adapters (LoRA, through peft) on the projections and MLPs of a trained model, "
                    "its own weights frozen, on the data of a config file: a training config without a model "
                    "section (the model, tokenizer and context length are the checkpoint's) plus a 'lora' section "
                    "(rank, alpha, dropout, target_modules). Writes checkpoints, log.jsonl and summary.json as "
                    "sosm train does (--resume, SIGTERM, torchrun alike), then <out>/adapter/ (the adapters alone: "
                    "adapter_model.safetensors, adapter_config.json) and <out>/merged/ (a checkpoint of the merged "
                    "model for sosm eval and sosm generate).")
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="the base model: a run folder (its newest checkpoint) or a checkpoint folder")
    parser.add_argument("--config", required=True, metavar="YAML", help="fine-tuning config (data, optim, lora)")
    add_run_options(parser)
    return parser


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options a run derived from a checkpoint shares with sosm train (finetune, distill)."""
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/<config file name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--max-steps", type=int, metavar="N", help="override max_steps of the config")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def run(args) -> int:
    from ..train.distributed import teardown

    try:
        return _finetune(args)
    finally:
        teardown()


def _finetune(args) -> int:
    from ..common.files import atomic_write
    from ..train import Trainer
    from ..train.derived import check_run_record, read_derived_config
    from ..train.finetune import lora_model_factory, write_finetune_outputs
    from ..train.lora import LoRAConfig, import_peft, parameter_share
    from ..train.loading import load_trained
    from .checks import check_output_dir

    out = check_output_dir(Path(args.out) if args.out else Path("runs") / Path(args.config).stem, "--out")
    base = load_trained(args.checkpoint)
    config, section = read_derived_config(args.config, "lora", base_config=base.config,
                                          base_name=f"--checkpoint {args.checkpoint}", model_from_base=True)
    lora = LoRAConfig.from_dict(section)
    config = _overrides(config, args)
    import_peft()
    record = {"base_checkpoint": str(base.checkpoint.path.resolve()), "base_step": base.checkpoint.step,
              "lora": lora.to_dict()}
    check_run_record(out, "finetune", record, resume=args.resume, write=False)
    trainer = Trainer(config, out, resume=args.resume, model_factory=lora_model_factory(base.checkpoint, lora),
                      tokenizer=base.tokenizer)
    main = trainer.dist.is_main
    say = print if main else (lambda *a, **k: None)
    check_run_record(out, "finetune", record, resume=args.resume, write=main)
    share = parameter_share(trainer.module)
    if trainer.step >= config.max_steps:
        trainer.train()
        say(f"nothing to do: {out} is already at step {trainer.step} of max_steps {config.max_steps}")
        return 0
    before = trainer.estimate_loss() if trainer.step == 0 else None
    say(f"fine-tuning {base.label} (step {base.checkpoint.step}) with LoRA r={lora.rank} on "
        f"{', '.join(lora.target_modules)}: {share['trainable']:,} of {share['total']:,} parameters trainable "
        f"({100 * share['share']:.2f}%), steps {trainer.step} -> {config.max_steps}, output {out}")
    if before is not None:
        say(f"before fine-tuning: val loss {before['val_loss']:.4f}")
    result = trainer.train()
    if result.stopped_by:
        say(f"stopped by {result.stopped_by} at step {result.final_step}; checkpoint {result.checkpoint}; continue "
            f"with: sosm finetune --checkpoint {args.checkpoint} --config {args.config} --out {out} --resume")
        return 128 + int(getattr(signal, result.stopped_by))
    if main:
        paths = write_finetune_outputs(trainer, lora, out)
        last = result.evals[-1] if result.evals else {}
        report = {**record, **share, **paths, "steps": trainer.step, "after": last}
        if before is not None:
            report["before"] = before
        atomic_write(out / "finetune_result.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
        say(f"done: step {result.final_step}, val loss {last.get('val_loss', float('nan')):.4f}; adapters "
            f"{paths['adapter']}, merged model {paths['merged']}")
    return 0


def _overrides(config, args):
    changes = {}
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps={args.max_steps} is invalid; accepted: an int >= 1")
        changes["max_steps"] = args.max_steps
    if args.device is not None:
        changes["device"] = args.device
    if args.no_progress:
        changes["progress_bar"] = False
    return config.replace(**changes) if changes else config
