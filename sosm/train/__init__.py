"""Training: config, loop, schedule and checkpoints (``sosm train``)."""
from .checkpoint import Checkpoint, CheckpointError, find_checkpoint, read_checkpoint, write_checkpoint
from .config import DataConfig, OptimConfig, TrainConfig
from .schedule import lr_at
from .trainer import Trainer, TrainResult

__all__ = ["Checkpoint", "CheckpointError", "find_checkpoint", "read_checkpoint", "write_checkpoint",
           "DataConfig", "OptimConfig", "TrainConfig", "lr_at", "Trainer", "TrainResult"]
