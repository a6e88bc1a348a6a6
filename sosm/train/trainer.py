"""The training loop: AdamW, warmup + cosine, clipping, bf16 autocast, eval, logs, checkpoints.

``Trainer(config, out_dir).train()`` runs ``config.max_steps`` optimiser steps. With
``resume=True`` it continues from the newest checkpoint in ``out_dir`` on exactly the
trajectory the uninterrupted run would have taken (on the same device): weights,
optimizer moments, the batch sampler's position and every RNG state are restored.

Started by torchrun, the same trainer runs on every process (DDP or FSDP, ``config.distributed``;
:mod:`sosm.train.distributed`): each rank trains on its share of every global batch, rank 0
logs and writes, and a checkpoint of any world size resumes at any other.

Example:
    >>> from sosm.train import TrainConfig, Trainer
    >>> cfg = TrainConfig.from_yaml("experiments/configs/smoke.yaml")   # doctest: +SKIP
    >>> result = Trainer(cfg, "runs/smoke").train()                       # doctest: +SKIP
"""
from __future__ import annotations

import base64
import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..common.files import atomic_write
from ..common.progress import progress_bar
from ..data import BatchSampler
from ..evaluate import model_logits
from ..model.mask_predict import mask_tokens, masked_cross_entropy, sample_ratios
from ..model.routing import auxiliary_loss, routing_stats
from . import distributed
from .checkpoint import (CHECKPOINT_DIR, CONFIG_FILE, CheckpointError, capture_rng_state, check_model_matches,
                         list_checkpoints, load_model_state, read_checkpoint, restore_rng_state, step_dir_name,
                         write_checkpoint)
from .components import (ModelFactory, build_splits, count_parameters, mask_token_id, model_config_dict,
                         model_vocab_size, optimizer_groups, sosm_model_factory, tokenizer_files, tokenizer_from_files)
from .config import TrainConfig, diff_dicts
from .run_log import LOG_FILE, RunLog, read_log
from .schedule import lr_at

SUMMARY_FILE = "summary.json"
LEAKY_BANNER = ("LEAKY run: the graph is built with causal=False, so positions see later tokens. Its losses are "
                "NOT valid language-model results; it exists to show that the leak check catches the leak.")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda when available else cpu; ``"cuda"`` without a GPU raises ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; accepted here: 'cpu' or 'auto'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is invalid; accepted: 'auto', 'cpu', 'cuda'")
    return torch.device(name)


def autocast_dtype(dtype: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 for autocast, or None for plain fp32. ``"auto"`` picks bf16 on CUDA GPUs that support it."""
    if dtype == "bfloat16":
        return torch.bfloat16
    if dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass
class TrainResult:
    """What one ``train()`` call did."""

    start_step: int
    final_step: int
    losses: dict = field(default_factory=dict)       # step (1-based) -> training loss of that step
    evals: list = field(default_factory=list)        # {"step", "train_loss", "val_loss"}
    wall_s: float = 0.0                              # wall time of the whole run (all resumed parts)
    tokens_per_s: Optional[float] = 0.0              # training tokens / training-loop time, this call (None: nothing run)
    parameters: int = 0
    leaky: bool = False
    checkpoint: Optional[str] = None
    stopped_by: Optional[str] = None                 # "SIGTERM" / "SIGINT" when a signal ended it early
    nothing_to_do: bool = False                      # resumed at max_steps: nothing trained, nothing written


class _StopSignals:
    """SIGTERM / SIGINT while training: the first one ends the run cleanly after the current step.

    ``received`` names the signal once one arrived. The trainer then saves a checkpoint and
    returns (``TrainResult.stopped_by``), so ``timeout``, a batch scheduler's preemption or one
    Ctrl-C leave a run that ``--resume`` continues exactly. A second SIGINT raises
    ``KeyboardInterrupt`` at once. Handlers are installed only in the main thread and restored after.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.received: Optional[str] = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)

    def _handle(self, number, frame) -> None:
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = self.received or signal.Signals(number).name

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


class _NoLog:
    """The run log of ranks other than 0: they write nothing."""

    def write(self, kind: str, step: int, **fields) -> dict:
        return {"kind": kind, "step": step, **fields}

    def close(self) -> None:
        pass


class Trainer:
    """Train a model described by a :class:`TrainConfig` into ``out_dir``.

    Args:
        config: the run's configuration.
        out_dir: where checkpoints, ``log.jsonl``, ``tb/`` and ``summary.json`` go.
        resume: continue from the newest checkpoint in ``out_dir`` (starts fresh when there is none).
        model_factory: ``(model_section, vocab_size, block_size) -> nn.Module``;
            default builds ``sosm.SOSMModel``. Tests pass toy models here.
        step_callback: called as ``step_callback(trainer, step, loss)`` after every step (and its
            checkpoint); an exception from it stops training like a crash would.
        tokenizer: the tokenizer to train with instead of one built from the data (fine-tuning and
            distillation keep the base model's); a resumed run uses its checkpoint's.
    """

    def __init__(self, config: TrainConfig, out_dir, *, resume: bool = False,
                 model_factory: Optional[ModelFactory] = None,
                 step_callback: Optional[Callable[["Trainer", int, float], None]] = None,
                 tokenizer=None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.out_dir = Path(out_dir)
        self.dist = distributed.setup(config.distributed, config.collective_timeout_s, resolve_device(config.device))
        self.device = self.dist.device(resolve_device(config.device))
        self.amp_dtype = autocast_dtype(config.dtype, self.device)
        self.model_factory = model_factory or sosm_model_factory
        self.step_callback = step_callback
        self.step = 0
        self.elapsed_before = 0.0
        self.best_val = math.inf
        checkpoint = None
        if resume and list_checkpoints(self.out_dir):
            checkpoint = read_checkpoint(self.out_dir)
            config = self._reconcile(config, checkpoint)
            if checkpoint.step > config.max_steps:
                raise ValueError(f"max_steps={config.max_steps} is below step {checkpoint.step} of the newest checkpoint "
                                 f"in {self.out_dir}, and a run is never rewound; accepted: max_steps >= "
                                 f"{checkpoint.step} ({checkpoint.step}: nothing to do, more: train further), "
                                 f"or another output directory for a new run")
        elif not resume and list_checkpoints(self.out_dir):
            raise ValueError(f"out_dir {self.out_dir} already holds checkpoints; pass resume=True (--resume) to "
                             f"continue that run, or choose another output directory")
        elif resume and self.dist.is_main:
            print(f"no checkpoint in {self.out_dir}: starting from step 0")
        if config.optim.lr_decay_steps is None:  # pin the schedule so extending max_steps later keeps it
            config = TrainConfig.from_dict({**config.to_dict(),
                                            "optim": {**config.to_dict()["optim"], "lr_decay_steps": config.max_steps}})
        self.config = config
        torch.manual_seed(config.seed)
        tokenizer = tokenizer_from_files(checkpoint.extra) if checkpoint else tokenizer
        self.tokenizer, self.splits = build_splits(config.data, tokenizer)
        distributed.check_batch_size(config.batch_size, self.dist)
        self.module = self._build_model()  # the model itself; self.model is what trains it (DDP wrapper or itself)
        if self.dist.active and self.dist.rank:
            torch.manual_seed(distributed.rank_seed(config.seed, self.dist.rank))  # rank 0 keeps the one-process stream
        if self.dist.sharded:  # FSDP shards in place, before the optimizer takes the (now sharded) parameters
            distributed.wrap_model(self.module, self.dist, self.device)
        self.optimizer = self._build_optimizer(self.module)
        self.sampler = distributed.ShardedBatches(
            BatchSampler(self.splits.train, config.batch_size, config.data.block_size, seed=config.seed), self.dist)
        if checkpoint is not None:
            self._restore(checkpoint)
        self.model = self.module if self.dist.sharded else distributed.wrap_model(self.module, self.dist, self.device)
        self.parameters = count_parameters(self.module)
        self.log = (RunLog(self.out_dir, tensorboard=config.tensorboard,
                           resume_step=self.step if checkpoint is not None else None)
                    if self.dist.is_main else _NoLog())

    @property
    def leaky(self) -> bool:
        return self.config.leaky

    def _reconcile(self, config: TrainConfig, checkpoint) -> TrainConfig:
        """The config to resume with; raises ``CheckpointError`` when it would change the trajectory."""
        try:
            stored = TrainConfig.from_dict(checkpoint.config)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint file {checkpoint.path / CONFIG_FILE} holds an invalid config: {err}") from None
        if config.optim.lr_decay_steps is None:
            config = TrainConfig.from_dict({**config.to_dict(), "optim": {
                **config.to_dict()["optim"], "lr_decay_steps": stored.optim.lr_decay_steps}})
        differences = diff_dicts(stored.trajectory_dict(), config.trajectory_dict())
        if differences:
            raise CheckpointError(f"config does not match checkpoint file {checkpoint.path / CONFIG_FILE}; resuming "
                                  f"would not continue the same run. Differences (checkpoint -> new): "
                                  + "; ".join(differences))
        return config

    def _build_model(self) -> torch.nn.Module:
        vocab_size = model_vocab_size(self.config.objective, self.tokenizer)  # mask-predict: + the [MASK] id
        return self.model_factory(self.config.model, vocab_size, self.config.data.block_size).to(self.device)

    def _build_optimizer(self, model: torch.nn.Module) -> torch.optim.AdamW:
        """AdamW over :func:`~sosm.train.components.optimizer_groups` (no decay on biases, norms, state matrices)."""
        o = self.config.optim
        groups = optimizer_groups(model, o.weight_decay)
        # the fused kernel: one pass per tensor (CPU: 0.84 vs 2.74 ms per step over the 0.8M hybrid's 64 tensors,
        # experiments/bench/results/cpu_components.json)
        extra = {"fused": True} if self.device.type in ("cuda", "cpu") else {}
        return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, **extra)

    def _restore(self, checkpoint) -> None:
        self._restore_weights(checkpoint)
        state = checkpoint.trainer_state
        try:
            self.step = int(state["step"])
            sampler = state["sampler"]
            self.sampler.load_state_dict({"generator_state": torch.frombuffer(
                bytearray(base64.b64decode(sampler["generator_state"])), dtype=torch.uint8).clone(),
                "step": sampler["step"]})
            self._restore_rng(state)
            self.elapsed_before = float(state.get("elapsed_s", 0.0))
            best = state.get("best_val_loss")  # None until the first evaluation
            self.best_val = math.inf if best is None else float(best)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"checkpoint file {checkpoint.path / 'trainer_state.json'} is malformed: "
                                  f"{type(err).__name__}: {err}") from None
        if self.step != checkpoint.step:
            raise CheckpointError(f"checkpoint file {checkpoint.path / 'trainer_state.json'} says step {self.step} "
                                  f"but its manifest says step {checkpoint.step}")

    def _restore_weights(self, checkpoint) -> None:
        """Model and optimizer state from a checkpoint of either layout, into this run's layout."""
        check_model_matches(self.module, checkpoint)
        try:
            if checkpoint.layout == "sharded":
                distributed.load_sharded_state(self.module, self.optimizer, checkpoint.shards_dir)
            elif self.dist.sharded:
                distributed.load_full_state(self.module, self.optimizer, checkpoint.model_state,
                                            checkpoint.optimizer_state)
            else:
                load_model_state(self.module, checkpoint)
                self.optimizer.load_state_dict(checkpoint.optimizer_state)
        except (ValueError, KeyError, RuntimeError) as err:
            where = checkpoint.shards_dir if checkpoint.layout == "sharded" else checkpoint.path / "optimizer.pt"
            raise CheckpointError(f"checkpoint file {where} does not match the optimizer of this model: "
                                  f"{type(err).__name__}: {err}") from None

    def _restore_rng(self, state: dict) -> None:
        """This rank's RNG states (rank 0: ``rng``; rank r: ``rng_by_rank[r]``, or a fresh seed if the run had fewer ranks)."""
        if not self.dist.rank:
            restore_rng_state(state["rng"])
        elif str(self.dist.rank) in state.get("rng_by_rank", {}):
            restore_rng_state(state["rng_by_rank"][str(self.dist.rank)])
        else:
            torch.manual_seed(distributed.rank_seed(self.config.seed, self.dist.rank) + int(state["step"]))

    def save_checkpoint(self, elapsed_s: float) -> Path:
        """Write a checkpoint of the state after ``self.step`` steps (atomic, keeps the newest N).

        Under torchrun every rank calls it: rank 0 writes a full checkpoint (DDP), or every rank
        its shards (FSDP); each rank's RNG state is kept.
        """
        sampler = self.sampler.state_dict()
        rng = self.dist.all_gather_object(capture_rng_state())
        trainer_state = {
            "step": self.step,
            "sampler": {"generator_state": base64.b64encode(sampler["generator_state"].numpy().tobytes()).decode(),
                        "step": int(sampler["step"])},
            "rng": rng[0],
            "elapsed_s": elapsed_s,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "tokens_seen": self.step * self.config.batch_size * self.config.data.block_size,
            "leaky": self.leaky,
        }
        if self.dist.active:
            trainer_state.update(world_size=self.dist.world_size, distributed=self.dist.strategy,
                                 rng_by_rank={str(rank): state for rank, state in enumerate(rng) if rank})
        extra = tokenizer_files(self.tokenizer)
        resolved = model_config_dict(self.module)
        if resolved is not None:
            extra["model_config.json"] = resolved
        if self.dist.sharded:
            return distributed.write_sharded_checkpoint(
                self.out_dir, self.step, self.dist, self.module, self.optimizer, config=self.config.to_dict(),
                trainer_state=trainer_state, extra_json=extra, keep_last=self.config.keep_last)
        path = self.out_dir / CHECKPOINT_DIR / step_dir_name(self.step)
        if self.dist.is_main:
            path = write_checkpoint(self.out_dir, self.step, model_state=self.module.state_dict(),
                                    config=self.config.to_dict(), optimizer_state=self.optimizer.state_dict(),
                                    trainer_state=trainer_state, extra_json=extra, keep_last=self.config.keep_last)
        self.dist.barrier()  # nobody goes on (or leaves) before the checkpoint is in place
        return path

    def _loss(self, input_ids: torch.Tensor, targets: torch.Tensor,
              mask_generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Next-token cross-entropy; for ``objective="mask_predict"`` the cross-entropy on the masked tokens of
        ``input_ids`` (a ratio ``r ~ U(0, 1]`` per sequence, positions from ``mask_generator``; ``targets`` unused)."""
        mask = None
        if self.config.objective == "mask_predict":
            ratios = sample_ratios(input_ids.shape[0], mask_generator)
            targets = input_ids
            input_ids, mask = mask_tokens(input_ids, ratios, mask_token_id(self.tokenizer), mask_generator)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            logits = model_logits(self.model, input_ids)
        if mask is not None:
            return masked_cross_entropy(logits, targets, mask)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def training_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss a training step minimises (cross-entropy; ``sosm.train.distill`` adds the teacher's term).

        Mask-predict draws the step's masks from a generator seeded by ``(seed, step)``: the same masks on a
        resumed run. Evaluation always reports the plain objective (:meth:`estimate_loss`).
        """
        generator = None
        if self.config.objective == "mask_predict":
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        return self._loss(input_ids, targets, generator)

    @torch.no_grad()
    def estimate_loss(self) -> dict:
        """Mean loss over ``eval_iters`` batches of each split; the same batches at every eval.

        Under torchrun each rank scores its rows of every batch and the means are averaged over the ranks.
        """
        self.model.eval()
        out = {}
        try:
            for index, split in enumerate(("train", "val")):
                generator = torch.Generator().manual_seed(self.config.seed + 1_000_003 * (index + 1))
                losses = []
                for _ in range(self.config.eval_iters):
                    batch = self.splits.get_batch(split, self.config.batch_size, self.config.data.block_size, generator)
                    batch = distributed.local_rows(batch, self.dist)
                    losses.append(self._loss(batch.input_ids.to(self.device), batch.targets.to(self.device),
                                             generator).item())  # mask-predict: the same masks at every eval
                out[f"{split}_loss"] = self.dist.mean(sum(losses) / len(losses), self.device)
        finally:
            self.model.train()
        return out

    def train_step(self) -> tuple[float, float, float]:
        """One optimiser step; returns (loss, learning rate, gradient norm before clipping).

        Under torchrun the loss is the mean over the ranks, which is the loss of the whole global batch.
        """
        o = self.config.optim
        lr = lr_at(self.step, lr=o.lr, min_lr=o.min_lr, warmup_steps=o.warmup_steps, decay_steps=o.lr_decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = next(self.sampler)
        loss = self.training_loss(batch.input_ids.to(self.device), batch.targets.to(self.device))
        (loss + auxiliary_loss(self.module)).backward()  # routing layers' balance / z-losses (0 without them)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = o.grad_clip if o.grad_clip > 0 else math.inf
        grad_norm = self.dist.scalar(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return self.dist.mean(loss.item(), self.device), lr, grad_norm

    def train(self) -> TrainResult:
        """Run until ``config.max_steps``; returns a :class:`TrainResult` and writes ``summary.json``."""
        cfg = self.config
        result = TrainResult(start_step=self.step, final_step=self.step, parameters=self.parameters, leaky=self.leaky)
        if self.step >= cfg.max_steps:
            return self._nothing_to_do(result)
        if self.leaky and self.dist.is_main:
            print(f"WARNING: {LEAKY_BANNER}")
        self.log.write("event", self.step, event="start" if self.step == 0 else "resume", name=cfg.display_name,
                       leaky=self.leaky, parameters=self.parameters, device=str(self.device),
                       autocast=str(self.amp_dtype), config=cfg.to_dict())
        tokens_per_step = cfg.batch_size * cfg.data.block_size
        start = time.perf_counter()
        loop_time, window_start, window_steps = 0.0, time.perf_counter(), 0
        bars = contextlib.ExitStack()  # the bar, and warnings printed above it rather than into its line
        bar = bars.enter_context(progress_bar(total=cfg.max_steps, initial=self.step, desc=cfg.display_name,
                                              disable=not (cfg.progress_bar and self.dist.is_main), unit="step"))
        say = bar.write if self.dist.is_main else (lambda message: None)
        self.model.train()
        last_saved, saved_step = None, None
        stop = _StopSignals()
        try:
            stop.install()
            while self.step < cfg.max_steps:
                t0 = time.perf_counter()
                loss, lr, grad_norm = self.train_step()
                loop_time += time.perf_counter() - t0
                window_steps += 1
                result.losses[self.step] = loss
                if not math.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss} at step {self.step}; lower optim.lr "
                                             f"(now {cfg.optim.lr}) or check the data")
                bar.update(1)
                if self.step % cfg.log_interval == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    rate = window_steps * tokens_per_step / max(now - window_start, 1e-9)
                    window_start, window_steps = now, 0
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
                    self.log.write("train", self.step, loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=rate,
                                   elapsed_s=self.elapsed_before + now - start, leaky=self.leaky)
                    routing = routing_stats(self.module)  # expert load, dropped share, entropy ({} without routing)
                    if routing:
                        self.log.write("routing", self.step, **routing)
                if self.step % cfg.eval_interval == 0 or self.step == cfg.max_steps:
                    losses = self.estimate_loss()
                    self.best_val = min(self.best_val, losses["val_loss"])
                    result.evals.append({"step": self.step, **losses})
                    self.log.write("eval", self.step, **losses, best_val_loss=self.best_val, leaky=self.leaky)
                    tag = " [LEAKY]" if self.leaky else ""
                    say(f"step {self.step}: train loss {losses['train_loss']:.4f}, "
                              f"val loss {losses['val_loss']:.4f}{tag}")
                if (cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0) or self.step == cfg.max_steps:
                    last_saved = self.save_checkpoint(self.elapsed_before + time.perf_counter() - start)
                    saved_step = self.step
                if self.step_callback is not None:
                    self.step_callback(self, self.step, loss)
                received = self.dist.agree([stop.received == name for name in stop.SIGNALS], self.device)
                stopped_by = next((name for name, flag in zip(stop.SIGNALS, received) if flag), None)
                if stopped_by and self.step < cfg.max_steps:  # finish this step, save, leave (every rank alike)
                    if saved_step != self.step:
                        last_saved = self.save_checkpoint(self.elapsed_before + time.perf_counter() - start)
                    result.stopped_by = stopped_by
                    self.log.write("event", self.step, event="stopped", signal=stopped_by,
                                   checkpoint=str(last_saved), leaky=self.leaky)
                    say(f"{stopped_by}: stopped at step {self.step}, checkpoint {last_saved}; "
                              "continue with --resume")
                    break
        finally:
            stop.restore()
            bars.close()
        wall = self.elapsed_before + time.perf_counter() - start
        if last_saved is None and not list_checkpoints(self.out_dir):
            last_saved = self.save_checkpoint(wall)
        result.final_step = self.step
        result.wall_s = wall
        steps_run = self.step - result.start_step
        result.tokens_per_s = steps_run * tokens_per_step / loop_time if loop_time > 0 else 0.0
        result.checkpoint = str(last_saved or list_checkpoints(self.out_dir)[-1])
        self.log.write("event", self.step, event="end", wall_s=wall, tokens_per_s=result.tokens_per_s, leaky=self.leaky)
        self.log.close()
        if self.dist.is_main:
            self._write_summary(result)
        return result

    def _nothing_to_do(self, result: TrainResult) -> TrainResult:
        """A resumed run already at ``max_steps``: train nothing, overwrite nothing.

        The result carries the run's evaluations from ``log.jsonl``; ``summary.json`` is written
        only when it is missing (a run killed between its last checkpoint and its summary).
        """
        self.log.close()
        result.nothing_to_do = True
        result.wall_s = self.elapsed_before
        result.tokens_per_s = None
        result.checkpoint = str(list_checkpoints(self.out_dir)[-1])
        log = self.out_dir / LOG_FILE
        records = read_log(self.out_dir) if log.is_file() else []
        result.evals = [{key: r[key] for key in ("step", "train_loss", "val_loss")}
                        for r in records if r.get("kind") == "eval" and r.get("step", 0) <= self.step]
        if not (self.out_dir / SUMMARY_FILE).is_file() and self.dist.is_main:
            self._write_summary(result)
        return result

    def _write_summary(self, result: TrainResult) -> None:
        last = result.evals[-1] if result.evals else {}
        summary = {"name": self.config.name, "display_name": self.config.display_name, "leaky": self.leaky,
                   "model": self.config.model.get("model"), "parameters": self.parameters, "steps": self.step,
                   "final_train_loss": last.get("train_loss"), "final_val_loss": last.get("val_loss"),
                   "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                   "tokens_per_s": result.tokens_per_s, "wall_s": result.wall_s, "device": str(self.device),
                   "checkpoint": result.checkpoint, "finished": self.step >= self.config.max_steps,
                   "stopped_by": result.stopped_by}
        atomic_write(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
