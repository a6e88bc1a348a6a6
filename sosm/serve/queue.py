"""``ModelQueue``: every use of the model runs on one worker thread, first come first served, behind a bound.

**Queued, not batched.** Requests differ in prompt length, seed, temperature and top-k, and each
answer must equal ``model.generate`` for its own seed. Batching rows of different lengths would
need padded, per-row-seeded decoding that ``model.generate`` does not do, so its numbers would no
longer be the reference's; on the CPU the one model already keeps both cores busy with its own
intra-op threads. So one worker thread runs one request at a time (generation, graph building,
attribution reports), the event loop stays free for ``/healthz``, ``/metrics`` and refusals, and
the queue in front of the worker is bounded: with ``capacity`` requests already waiting, the next
is refused at once (:class:`QueueFull`, answered 429) instead of waiting without bound.

A request whose client goes away while it waits is taken out of the queue (its job never runs);
one that is running finishes (a thread cannot be interrupted), and a streaming job checks its
``cancelled`` event between tokens.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional


class QueueFull(Exception):
    """``capacity`` requests already wait for the model."""


class ModelQueue:
    """One worker thread and a bounded count of waiting jobs.

    Args:
        capacity: jobs that may wait beyond the running one (>= 1).
        on_change: called with ``(waiting, running)`` after every change (the metrics gauges).
    """

    def __init__(self, capacity: int, on_change: Optional[Callable[[int, int], None]] = None):
        if capacity < 1:
            raise ValueError(f"capacity={capacity!r} is invalid; accepted: an int >= 1")
        self.capacity = capacity
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sosm-model")
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = 0
        self._on_change = on_change or (lambda waiting, running: None)

    def _changed(self) -> None:
        self._on_change(self.waiting, self.running)

    def submit(self, fn: Callable, *args) -> Future:
        """Queue ``fn(*args)`` for the worker; raises :class:`QueueFull` when ``capacity`` jobs already wait."""
        with self._lock:
            if self.waiting >= self.capacity:
                raise QueueFull(f"{self.waiting} requests are already waiting for the model (queue_size="
                                f"{self.capacity}); retry later")
            self.waiting += 1
            self._changed()

        def job():
            with self._lock:
                self.waiting -= 1
                self.running += 1
                self._changed()
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.running -= 1
                    self._changed()

        future = self._executor.submit(job)

        def forget_if_cancelled(done: Future) -> None:
            if done.cancelled():  # cancelled before it started: it left the queue without running
                with self._lock:
                    self.waiting -= 1
                    self._changed()

        future.add_done_callback(forget_if_cancelled)
        return future

    async def run(self, fn: Callable, *args):
        """``await`` the result of ``fn(*args)`` on the worker (:meth:`submit`'s refusal included)."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self) -> None:
        """Let the running and waiting jobs finish, then stop the worker."""
        self._executor.shutdown(wait=True)
