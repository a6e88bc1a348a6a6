"""``sosm distill``: train a student on a teacher's temperature-softened logits plus the labels."""
from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from .finetune_cmd import add_run_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "distill", help="train a student model on a teacher checkpoint's softened logits",
        description="Knowledge distillation: train the student of a config file (a training config with the "
                    "student's model section, plus a 'distill' section: temperature, kl_weight, ce_weight) on "
                    "kl_weight * T^2 * KL(teacher_T || student_T) + ce_weight * cross-entropy, the teacher in eval "
                    "mode without gradients. The student uses the teacher's tokenizer and context length. Writes "
                    "what sosm train writes (--resume, SIGTERM, torchrun alike); the run folder is a checkpoint for "
                    "sosm eval and sosm generate.")
    parser.add_argument("--teacher", required=True, metavar="PATH",
                        help="the teacher: a run folder (its newest checkpoint) or a checkpoint folder")
    parser.add_argument("--config", required=True, metavar="YAML", help="distillation config (student, data, optim, distill)")
    add_run_options(parser)
    return parser


def run(args) -> int:
    from ..train.distributed import teardown

    try:
        return _distill(args)
    finally:
        teardown()


def _distill(args) -> int:
    from ..train.derived import check_run_record, read_derived_config
    from ..train.distill import DistillConfig, DistillTrainer
    from ..train.loading import load_trained
    from .checks import check_output_dir
    from .finetune_cmd import _overrides

    out = check_output_dir(Path(args.out) if args.out else Path("runs") / Path(args.config).stem, "--out")
    teacher = load_trained(args.teacher)
    config, section = read_derived_config(args.config, "distill", base_config=teacher.config,
                                          base_name=f"--teacher {args.teacher}", model_from_base=False)
    distill = DistillConfig.from_dict(section)
    config = _overrides(config, args)
    record = {"teacher": str(teacher.checkpoint.path.resolve()), "teacher_step": teacher.checkpoint.step,
              "distill": distill.to_dict()}
    check_run_record(out, "distill", record, resume=args.resume, write=False)
    trainer = DistillTrainer(config, out, resume=args.resume, teacher=teacher.model, distill=distill,
                             tokenizer=teacher.tokenizer)
    say = print if trainer.dist.is_main else (lambda *a, **k: None)
    check_run_record(out, "distill", record, resume=args.resume, write=trainer.dist.is_main)
    if trainer.step >= config.max_steps:
        trainer.train()
        say(f"nothing to do: {out} is already at step {trainer.step} of max_steps {config.max_steps}")
        return 0
    teacher_parameters = sum(p.numel() for p in teacher.model.parameters())
    say(f"distilling {teacher.label} ({teacher_parameters:,} parameters) into {config.display_name} "
        f"({trainer.parameters:,} parameters): T={distill.temperature}, kl_weight={distill.kl_weight}, "
        f"ce_weight={distill.ce_weight}, steps {trainer.step} -> {config.max_steps}, output {out}")
    result = trainer.train()
    if result.stopped_by:
        say(f"stopped by {result.stopped_by} at step {result.final_step}; checkpoint {result.checkpoint}; continue "
            f"with: sosm distill --teacher {args.teacher} --config {args.config} --out {out} --resume")
        return 128 + int(getattr(signal, result.stopped_by))
    last = result.evals[-1] if result.evals else {}
    say(f"done: step {result.final_step}, val loss {last.get('val_loss', float('nan')):.4f} (cross-entropy), "
        f"checkpoint {result.checkpoint}")
    if trainer.dist.is_main:
        from ..common.files import atomic_write

        atomic_write(out / "distill_result.json", json.dumps(
            {**record, "teacher_parameters": teacher_parameters, "student_parameters": trainer.parameters,
             "steps": trainer.step, "after": last}, indent=2, sort_keys=True) + "\n")
    return 0
