"""A small writer-preferring reader-writer lock for :class:`~sosm.memory.HNSWMemory`.

hnswlib allows many concurrent ``knn_query`` calls but not a query during
``add_items``/``resize_index``/``mark_deleted``. Readers share the lock; a writer holds it
alone, and a waiting writer blocks new readers so it cannot starve.

Example:
    >>> lock = ReadWriteLock()
    >>> with lock.read():
    ...     pass
    >>> with lock.write():
    ...     pass
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class ReadWriteLock:
    """Many readers or one writer; writers are preferred over newly arriving readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
