"""One rank of a distributed test run: ``torchrun ... tests/train/dist_worker.py SPEC.json`` (or one plain process).

SPEC: ``{"config": TrainConfig dict, "out": run folder, "resume": bool, "toy": bool,
"signal_at": [rank, step] or null, "crash_at": [rank, step] or null}``. Each rank writes
``<out>/rank<r>.json``: its losses by step, evaluations, start and final step, how it stopped.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch


def main(spec_path: str) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from sosm.train import TrainConfig, Trainer
    from sosm.train.distributed import teardown
    from tests.train.toys import tiny_factory

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    rank = int(os.environ.get("RANK", "0"))

    def callback(trainer, step, loss):
        if spec.get("signal_at") == [rank, step]:
            os.kill(os.getpid(), signal.SIGTERM)
        if spec.get("crash_at") == [rank, step]:
            os._exit(3)  # a rank that dies without a word

    def run() -> dict:  # the trainer lives in here only, so it is freed before the process group goes (as in the CLI)
        trainer = Trainer(TrainConfig.from_dict(spec["config"]), spec["out"], resume=spec.get("resume", False),
                          model_factory=tiny_factory if spec.get("toy") else None, step_callback=callback)
        result = trainer.train()
        return {"losses": {str(k): v for k, v in result.losses.items()}, "evals": result.evals,
                "start_step": result.start_step, "final_step": result.final_step, "stopped_by": result.stopped_by,
                "world_size": trainer.dist.world_size, "checkpoint": result.checkpoint}

    try:
        record = run()
    finally:
        teardown()
    (Path(spec["out"]) / f"rank{rank}.json").write_text(json.dumps(record))
    return 143 if record["stopped_by"] == "SIGTERM" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
