"""Crash-safe file writes: the one implementation every room uses (docs/ARCHITECTURE.md, invariant 5).

- :func:`atomic_path` — a temporary path beside the target; on success the file is fsynced,
  renamed over the target (``os.replace``: one atomic step) and the folder fsynced; on any
  error the temporary file is removed and the target is untouched. For writers that want a
  path (a compiler's ``-o``, ``np.save``, an index library's ``save``).
- :func:`atomic_write` — the same for bytes, text, or a callback that writes to a binary handle.
- :func:`atomic_dir` — a temporary folder beside the target, renamed into place as a whole once
  every file in it is written (checkpoints, memory versions): the folder rename is the atomic step.
- :func:`write_synced` — write and fsync one file in place (the files inside such a folder).
- :func:`fsync_dir` — make a rename inside a folder durable.

A crash at any point leaves either the old file or the new one, never a torn one. Files get
the usual permissions (0666 less the umask), not the 0600 of a temporary file.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.json", '{"x": 1}\\n').read_text()
    '{"x": 1}\\n'
    >>> with atomic_path(folder / "b.bin") as tmp:
    ...     _ = tmp.write_bytes(b"\\x00\\x01")
    >>> (folder / "b.bin").read_bytes()
    b'\\x00\\x01'
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Union

PathLike = Union[str, os.PathLike]
Content = Union[bytes, bytearray, str, Callable[[BinaryIO], object]]


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` atomically.

    Args:
        path: the final file (its folder is created if needed).
        suffix: ending of the temporary name (some writers, e.g. ``np.save``, look at it).

    The temporary file exists (empty) when the block starts; whatever the block writes there
    is fsynced, renamed over ``path`` and the folder fsynced. An exception inside the block
    removes the temporary file and re-raises; ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: PathLike, content: Content, encoding: str = "utf-8") -> Path:
    """Write ``content`` to ``path`` atomically (temp file, fsync, rename, fsync the folder); returns the path.

    Args:
        path: the final file.
        content: ``bytes``, ``str`` (encoded with ``encoding``), or a callable ``write(handle)``
            that writes to a binary file handle (for streamed or library-produced content).
        encoding: text encoding for ``str`` content (default UTF-8).
    """
    with atomic_path(path) as tmp:
        write_synced(tmp, content, encoding)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: PathLike, prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on a clean exit it becomes ``path`` in one rename.

    Args:
        path: the final folder. If it exists it is replaced (moved aside, the new one renamed in,
            the old one deleted), so a crash leaves the old folder, the new one, or both names.
        prefix: start of the temporary names (readers skip names with this prefix; a later call
            deletes leftovers of the same target).

    An exception inside the block removes the temporary folder and re-raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{prefix}{path.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        if path.exists():
            trash = path.parent / f"{prefix}old-{path.name}-{os.getpid()}"
            shutil.rmtree(trash, ignore_errors=True)
            os.rename(path, trash)
            os.rename(tmp, path)
            shutil.rmtree(trash)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


def write_synced(path: PathLike, content: Content, encoding: str = "utf-8") -> None:
    """Write ``content`` (as :func:`atomic_write` takes it) to ``path`` in place, flushed and fsynced.

    Not atomic by itself: for files inside an :func:`atomic_dir` folder, which is renamed into
    place as a whole once every file is written (the folder rename is the atomic step).
    """
    if not isinstance(content, (bytes, bytearray, str)) and not callable(content):
        raise TypeError(f"content must be bytes, str or a callable write(handle), got {type(content).__name__}")
    with open(path, "wb") as handle:
        if isinstance(content, str):
            handle.write(content.encode(encoding))
        elif isinstance(content, (bytes, bytearray)):
            handle.write(content)
        else:
            content(handle)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: PathLike) -> None:
    """fsync a folder, so that a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
