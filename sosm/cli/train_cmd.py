"""``sosm train``: train a model from a YAML config (resumable, logged, checkpointed)."""
from __future__ import annotations

import argparse
import signal
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a model from a YAML config",
        description="Train the model described by a TrainConfig YAML file (see experiments/configs/). Writes "
                    "checkpoints (atomic, newest N kept), log.jsonl, TensorBoard logs (when installed) and "
                    "summary.json into the output folder. --resume continues the newest checkpoint on exactly "
                    "the trajectory an uninterrupted run takes. SIGTERM or one Ctrl-C stops after the current "
                    "step with a checkpoint (exit code 143 / 130; under `timeout` the shell sees 124); a second Ctrl-C "
                    "stops at once. Started by torchrun (torchrun --standalone --nproc_per_node=N -m sosm.cli train "
                    "...), every process trains its share of each global batch with DDP or FSDP (the config's "
                    "`distributed`); rank 0 prints, logs and writes.")
    parser.add_argument("--config", required=True, metavar="YAML", help="training config (TrainConfig) file")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/<config file name>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --out (starts fresh if there is none)")
    parser.add_argument("--model", metavar="MODEL",
                        help="train this model instead of the config's: hybrid, transformer or any registered mixer "
                             "(mamba, graph_attention, ...: sosm.model.mixers), sized to the config model's "
                             "parameter count (sosm.model.matched_config); the rest of the config is kept")
    parser.add_argument("--max-steps", type=int, metavar="N", help="override max_steps of the config")
    parser.add_argument("--seed", type=int, metavar="N", help="override the config's seed (a second run of the same config)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    parser.add_argument("--distributed", choices=("ddp", "fsdp"),
                        help="override the config's distributed strategy (used under torchrun only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    return parser


def run(args) -> int:
    from ..train.distributed import teardown

    try:
        return _train(args)
    finally:
        teardown()  # under torchrun: leave the process group (nothing to do in one process)


def _train(args) -> int:
    from ..train import TrainConfig, Trainer
    from .checks import check_output_dir

    config = TrainConfig.from_yaml(args.config)
    changes = {}
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ValueError(f"--max-steps={args.max_steps} is invalid; accepted: an int >= 1")
        changes["max_steps"] = args.max_steps
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.device is not None:
        changes["device"] = args.device
    if args.distributed is not None:
        changes["distributed"] = args.distributed
    if args.model is not None:
        changes["model"] = switch_model(config, args.model)
    if args.no_progress:
        changes["progress_bar"] = False
    if changes:
        config = config.replace(**changes)
    out = check_output_dir(Path(args.out) if args.out else Path("runs") / Path(args.config).stem, "--out")
    trainer = Trainer(config, out, resume=args.resume)
    say = print if trainer.dist.is_main else (lambda *a, **k: None)  # under torchrun rank 0 speaks for all
    if trainer.step >= config.max_steps:
        result = trainer.train()
        last = result.evals[-1] if result.evals else {}
        loss = f" (val loss {last['val_loss']:.4f} at step {last['step']})" if last else ""
        say(f"nothing to do: {out} is already at step {trainer.step} of max_steps {config.max_steps}{loss}; "
              f"its results are left as they are. To train further: --resume --max-steps N with N > {trainer.step}")
        return 0
    ranks = f", {trainer.dist.world_size} processes ({trainer.dist.strategy})" if trainer.dist.active else ""
    say(f"training {config.display_name}: {trainer.parameters:,} parameters, device {trainer.device}{ranks}, "
        f"steps {trainer.step} -> {config.max_steps}, output {out}")
    result = trainer.train()
    last = result.evals[-1] if result.evals else {}
    tag = "  [LEAKY: non-causal graph, not a valid LM result]" if result.leaky else ""
    if result.stopped_by:
        say(f"stopped by {result.stopped_by} at step {result.final_step} of {config.max_steps}; checkpoint "
              f"{result.checkpoint}; continue with: sosm train --config {args.config} --out {out} --resume{tag}")
        return 128 + int(getattr(signal, result.stopped_by))  # the shell's code for a signal-ended process
    say(f"done: step {result.final_step}, train loss {last.get('train_loss', float('nan')):.4f}, "
          f"val loss {last.get('val_loss', float('nan')):.4f}, {result.tokens_per_s:,.0f} tokens/s, "
          f"wall {result.wall_s:.1f} s, checkpoint {result.checkpoint}{tag}")
    return 0


def switch_model(config, model: str) -> dict:
    """The config's model section rebuilt as ``model``, matched to its parameter count."""
    from ..model import SOSMConfig, matched_config

    section = dict(config.model)
    if section.get("model", "hybrid") == model:
        return section
    vocab_size = (256 if config.data.tokenizer == "byte" else config.data.bpe_vocab_size) + (
        config.objective == "mask_predict")  # the [MASK] id
    reference = SOSMConfig.from_dict({**section, "vocab_size": vocab_size, "max_seq_len": config.data.block_size})
    matched = matched_config(reference, model).to_dict()
    return {key: value for key, value in matched.items() if key not in ("vocab_size", "max_seq_len")}
