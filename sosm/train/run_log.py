"""Run logging: one JSON object per line in ``log.jsonl``, mirrored to TensorBoard when installed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ..common.files import atomic_write
from .components import warn_once

LOG_FILE = "log.jsonl"


class RunLog:
    """Append-only JSONL log (``<out>/log.jsonl``) plus optional TensorBoard scalars (``<out>/tb``).

    Every record has ``kind`` (``"train"``, ``"eval"``, ``"event"``, ``"routing"``: routing layers' statistics) and ``step``. Numeric
    fields other than ``step`` go to TensorBoard as ``<kind>/<field>``.
    """

    def __init__(self, out_dir, *, tensorboard: bool = True, resume_step: Optional[int] = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / LOG_FILE
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warn_once("tensorboard", "tensorboard is not installed; logging to log.jsonl only "
                          "(pip install 'sosm[tensorboard]' for TensorBoard)")
            else:
                self.writer = SummaryWriter(str(self.out_dir / "tb"), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        """Drop records written after ``step`` (by a run that died before its next checkpoint)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if record.get("step", 0) <= step:
                kept.append(line)
        atomic_write(self.path, "".join(line + "\n" for line in kept))

    def write(self, kind: str, step: int, **fields) -> dict:
        record = {"kind": kind, "step": step, **fields}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for name, value in fields.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{kind}/{name}", value, step)
        return record

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def read_log(out_dir) -> list[dict]:
    """All records of ``<out_dir>/log.jsonl``."""
    path = Path(out_dir) / LOG_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
