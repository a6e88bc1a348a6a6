"""Checks a command makes before any work: its output locations and its device.

A command that would spend minutes (evaluating, training, building a graph) first makes sure it
can write where it was told: :func:`check_output_file` and :func:`check_output_dir` raise
``ValueError`` naming the option, the path and the problem (a folder where a file is wanted, a
path under a file, a device, an unwritable or read-only location). What no check can foresee (a
disk that fills up while writing) is reported by :func:`writing` with the same naming.
:func:`check_device` refuses ``--device cuda`` where torch sees no CUDA device.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> check_output_file(folder / "g.json", "--out").name
    'g.json'
    >>> check_output_file(folder, "--out")
    Traceback (most recent call last):
    ...
    ValueError: --out ... is a directory; accepted: a file path
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _existing_ancestor(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (as a file or a folder)."""
    probe = path.absolute()
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _unwritable(folder: Path) -> str:
    """Why a file cannot be created in ``folder`` ('' when it can): tries, as the write will."""
    try:
        fd, name = tempfile.mkstemp(prefix=".sosm-write-check-", dir=folder)
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    os.unlink(name)
    return ""


def _check_location(path: Path, option: str, folder: Path) -> None:
    """``folder`` (to be created if absent) must end up a writable folder."""
    ancestor = _existing_ancestor(folder)
    if not ancestor.is_dir():
        raise ValueError(f"{option} {path} is under {ancestor}, which is a file, not a folder; "
                         f"accepted: a path whose parent folders are folders")
    problem = _unwritable(ancestor)
    if problem:
        raise ValueError(f"{option} {path} cannot be written: nothing can be created in {ancestor} ({problem}); "
                         f"accepted: a writable location")


def check_output_file(path, option: str) -> Path:
    """Refuse an output file that cannot be written: a folder, a device or pipe, under a file, unwritable.

    Args:
        path: the file the command will write (it may not exist yet; its folders are created).
        option: the command-line option that named it (``"--out"``, ``"--json"``), for the message.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a directory; accepted: a file path")
    if os.path.lexists(path) and not path.is_file():
        raise ValueError(f"{option} {path} exists and is not a regular file (a device, pipe or broken link); "
                         f"accepted: a new or a regular file")
    _check_location(path, option, path.parent)
    return path


def check_output_dir(path, option: str) -> Path:
    """Refuse an output folder that cannot be written: a file, under a file, unwritable."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; accepted: a folder (existing or new)")
    _check_location(path, option, path)
    return path


@contextlib.contextmanager
def writing(path, option: str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block (disk full, file too large) into a ``ValueError`` naming the output."""
    try:
        yield
    except OSError as err:
        raise ValueError(f"{option} {path}: could not write it: {err.strerror or err}") from None


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError`` that reached the command line: the file and the system's reason."""
    if err.strerror and err.filename:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def check_device(name: str, option: str = "--device") -> str:
    """``name`` when torch can use it; ``--device cuda`` without a usable CUDA device raises ``ValueError``."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ValueError(f"{option} cuda: no CUDA device is available (torch {torch.__version__}, {build}); "
                         f"accepted here: {option} cpu")
    return name
