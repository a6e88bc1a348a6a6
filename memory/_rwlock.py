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


class ReadWriteLock:
    """Many readers or one writer; writers are preferred over newly arriving readers.

    ``read()`` and ``write()`` return reusable context managers (plain classes rather than
    generator-based ones: this lock sits on the single-query hot path).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._read = _ReadGuard(self)
        self._write = _WriteGuard(self)

    def read(self) -> "_ReadGuard":
        return self._read

    def write(self) -> "_WriteGuard":
        return self._write

    # The uncontended read path takes the plain mutex once per acquire/release and never
    # touches the Condition (its Python-level wait/notify cost ~5 us per query); notify is
    # only sent when someone waits.
    def acquire_read(self) -> None:
        with self._mutex:
            if not (self._writer or self._writers_waiting):
                self._readers += 1
                return
            self._readers_waiting += 1
            try:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
            finally:
                self._readers_waiting -= 1
            self._readers += 1

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if self._readers == 0 and self._writers_waiting:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._mutex:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release_write(self) -> None:
        with self._mutex:
            self._writer = False
            if self._writers_waiting or self._readers_waiting:
                self._cond.notify_all()


class _ReadGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_read()

    def __exit__(self, *exc) -> None:
        self._lock.release_read()


class _WriteGuard:
    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire_write()

    def __exit__(self, *exc) -> None:
        self._lock.release_write()
