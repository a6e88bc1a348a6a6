"""Training on several processes: process group, model wrapping, batch shards, reductions, rank-0 I/O.

``torchrun --standalone --nproc_per_node=N -m sosm.cli train --config F`` starts N copies of
``sosm train``; each finds torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and
:func:`setup` joins the process group: ``nccl`` on CUDA (one GPU per process, ``cuda:LOCAL_RANK``),
``gloo`` on CPU, with ``TrainConfig.collective_timeout_s`` on every collective, so a rank that
died or stopped answering ends the others with an error instead of a hang.

``TrainConfig.distributed`` picks how the model is spread (:func:`wrap_model`):

- ``"ddp"``: ``DistributedDataParallel``; every rank holds the whole model, gradients are averaged;
- ``"fsdp"``: FSDP2 ``fully_shard`` on every layer of the stack and on the root; parameters,
  gradients and optimizer moments are sharded across the ranks.

**Batches** (:class:`ShardedBatches`): every rank runs the one seeded batch stream of a single
process and keeps rows ``[rank * B/N, (rank + 1) * B/N)`` of each global batch of ``B =
batch_size`` sequences, so the ranks' micro-batches together are exactly the single-process
batch, in its order. With equal shards the mean of the ranks' mean losses is the global mean
loss, and DDP's averaged gradient is its gradient: the loss curve is the single process's, to
float rounding. The stream's position is the same on every rank and independent of N, which is
what lets a run resume at another world size. ``batch_size`` must divide by N.

**Rank 0 writes** the log, the progress bar, the summary and (DDP) the checkpoint in the
single-process format; an FSDP checkpoint is written by every rank through
``torch.distributed.checkpoint`` (:func:`write_sharded_checkpoint`). **Stops agree**
(:meth:`DistContext.agree`): after every step each rank's "a signal arrived" flag goes through
an all-reduce, so a SIGTERM delivered to any one rank stops every rank after the same step,
with one checkpoint. The step's loss is the mean over the ranks (:meth:`DistContext.mean`).

Randomness: every rank seeds ``seed`` before building the model (identical initial weights);
afterwards rank r > 0 reseeds with :func:`rank_seed`, so dropout masks differ between ranks.
With dropout 0 (the default of every model) nothing random remains in a step and the curve
equals the single process's; with dropout the ranks' masks are drawn per rank, so it matches in
distribution only. Each rank's RNG state is checkpointed.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from ..data import Batch
from .checkpoint import (CHECKPOINT_DIR, SHARDS_DIR, checkpoint_dir, finish_checkpoint, one_process_reads_shards,
                         prune_checkpoints, step_dir_name)

STRATEGIES = ("ddp", "fsdp")


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of rank ``rank`` after the model is built (rank 0 keeps the single-process stream)."""
    return seed + 1_000_003 * rank


def launched_world_size() -> int:
    """Processes torchrun started (``WORLD_SIZE``; 1 when not started by torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE={value!r} is invalid; accepted: an int >= 1 "
                         "(torchrun sets it)") from None


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the world size and the strategy (None: one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: Optional[str] = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs, bars, summaries and full checkpoints."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Parameters and optimizer state sharded across ranks (FSDP): checkpoints are written by every rank."""
        return self.active and self.strategy == "fsdp"

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for CUDA, else ``device``."""
        if device.type == "cuda" and self.active:
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def agree(self, flags: Sequence[bool], device: torch.device) -> list:
        """For each flag, whether any rank raised it (one all-reduce): ranks stop after the same step."""
        if not self.active:
            return list(flags)
        values = torch.tensor([float(flag) for flag in flags], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        return [bool(v > 0) for v in values.tolist()]

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.active:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.item() / self.world_size

    def scalar(self, value) -> float:
        """A float of ``value``: a tensor, or a DTensor (FSDP's gradient norm), materialised whole."""
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        return float(value)

    def all_gather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def setup(strategy: str, timeout_s: float, device: torch.device) -> DistContext:
    """Join torchrun's process group (or the one already initialised); one process gets ``DistContext()``.

    Args:
        strategy: ``"ddp"`` or ``"fsdp"`` (``TrainConfig.distributed``).
        timeout_s: timeout of every collective, in seconds.
        device: the run's device; CUDA selects ``nccl`` and ``cuda:LOCAL_RANK``, anything else ``gloo``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed={strategy!r} is invalid; accepted: one of {STRATEGIES}")
    if not dist.is_initialized() and launched_world_size() <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this build of torch; run one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                       strategy=strategy)


def teardown() -> None:
    """Leave the process group, if this process is in one (the end of ``sosm train`` under torchrun).

    Garbage from the run (an FSDP model in a reference cycle, its pending collective works) is collected
    first, while the interpreter is whole: a gloo work freed during interpreter shutdown can abort the
    process (SIGABRT, "terminate called without an active exception") after a run that finished.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def shard_units(model: torch.nn.Module) -> list:
    """The modules FSDP shards one by one: each layer of the stack (``model.stack.layers``), when there is one."""
    layers = getattr(getattr(model, "stack", None), "layers", None)
    return list(layers) if layers is not None else []


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """``model`` (already on ``device``) as the strategy trains it: DDP-wrapped, FSDP-sharded in place, or as it is."""
    if not ctx.active:
        return model
    if ctx.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (ctx.world_size,))
    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (an FSDP-sharded model is its own module)."""
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def check_batch_size(batch_size: int, ctx: DistContext, name: str = "batch_size") -> None:
    """``batch_size`` (the global batch) must split into equal shards, one per rank."""
    if batch_size % ctx.world_size:
        raise ValueError(f"{name}={batch_size} is invalid for {ctx.world_size} processes; accepted: a multiple of "
                         f"the world size {ctx.world_size} (each rank takes an equal share of the global batch)")


def local_rows(batch: Batch, ctx: DistContext) -> Batch:
    """This rank's rows of a global batch: ``[rank * B/N, (rank + 1) * B/N)``."""
    if not ctx.active:
        return batch
    rows = batch.input_ids.shape[0] // ctx.world_size
    part = slice(ctx.rank * rows, (ctx.rank + 1) * rows)
    return Batch(batch.input_ids[part], batch.targets[part])


class ShardedBatches:
    """A batch stream (``sosm.data.BatchSampler``) of global batches, yielding this rank's rows of each.

    ``state_dict``/``load_state_dict`` are the stream's own: the same on every rank and
    independent of the world size.
    """

    def __init__(self, sampler, ctx: DistContext):
        check_batch_size(sampler.batch_size, ctx)
        self.sampler, self.ctx = sampler, ctx

    def __iter__(self) -> "ShardedBatches":
        return self

    def __next__(self) -> Batch:
        return local_rows(next(self.sampler), self.ctx)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


def sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """``{"model": ..., "optimizer": ...}`` as ``torch.distributed.checkpoint`` saves and loads them (names, not ids)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def load_sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, shards_dir: Path) -> None:
    """Read a sharded checkpoint into ``model`` and ``optimizer``, resharded to this run (one process included)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = sharded_state(model, optimizer)
    with one_process_reads_shards():
        dcp.load(state, checkpoint_id=str(shards_dir))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                    optimizer_state: dict) -> None:
    """Load a full checkpoint (one process or DDP) into an FSDP-sharded ``model`` and its ``optimizer``.

    A full checkpoint's ``optimizer.state_dict()`` is keyed by position (the i-th parameter of the
    optimizer's groups); the trainer builds its optimizer the same way in every layout, so position
    i names the same parameter here. The named full state is then split into this rank's shards.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    names = {id(parameter): name for name, parameter in model.named_parameters()}
    order = [names[id(parameter)] for group in optimizer.param_groups for parameter in group["params"]]
    named = {"state": {order[index]: value for index, value in optimizer_state["state"].items()},
             "param_groups": [{**group, "params": [order[index] for index in group["params"]]}
                              for group in optimizer_state["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=named,
                   options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def write_sharded_checkpoint(run_dir, step: int, ctx: DistContext, model: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, *, config: dict, trainer_state: dict,
                             extra_json: dict, keep_last: int) -> Path:
    """Every rank writes its shards into one temporary checkpoint folder; rank 0 adds the rest and renames it in.

    Collective: all ranks call it. The folder is complete (manifest last, one rename) or absent,
    as for a single-process checkpoint (:func:`sosm.train.checkpoint.write_checkpoint`).
    """
    import torch.distributed.checkpoint as dcp

    state = sharded_state(model, optimizer)
    final = Path(run_dir) / CHECKPOINT_DIR / step_dir_name(step)
    if ctx.is_main:
        with checkpoint_dir(run_dir, step) as tmp:
            ctx.all_gather_object(str(tmp))
            dcp.save(state, checkpoint_id=str(tmp / SHARDS_DIR))
            ctx.barrier()
            finish_checkpoint(tmp, step, config=config, trainer_state=trainer_state, extra_json=extra_json)
        prune_checkpoints(run_dir, keep_last)
    else:
        tmp = Path(ctx.all_gather_object(None)[0])
        dcp.save(state, checkpoint_id=str(tmp / SHARDS_DIR))
        ctx.barrier()
    ctx.barrier()
    return final
