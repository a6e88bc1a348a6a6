"""Text sources: the embedded default corpus, Tiny Shakespeare, and strict UTF-8 files.

``default_corpus()`` needs no file and no network: it is the help text that ships inside
every CPython installation (``pydoc_data.topics``, the pages behind ``help("if")``).
``load_tinyshakespeare()`` finds the benchmark text locally, verifies it, and only
downloads it (to a cache) when no verified copy exists.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

from ..common.files import atomic_write

TINYSHAKESPEARE_FILE = "tinyshakespeare.txt"
TINYSHAKESPEARE_SIZE = 1_115_394
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"

#: largest text file :func:`read_text_file` reads (bytes); beyond it (or from an endless device) it refuses
MAX_TEXT_BYTES = 256 * 2 ** 20
#: bytes read at a time
READ_CHUNK = 2 ** 20

#: environment variable naming a folder that holds data files (checked first)
DATA_DIR_ENV = "SOSM_DATA_DIR"
#: default download cache
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sosm"
#: the copy beside the repository (``<repo>/../shared/data``) used by tests and runs here
REPO_SIDE_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


class DataUnavailableError(RuntimeError):
    """A data file is neither on this machine nor downloadable (offline); the message says how to provide it."""


def default_corpus() -> str:
    """The embedded default text: all pages of the standard library's ``pydoc_data.topics``.

    The pages are joined in sorted topic order with a blank line between them, so the
    text is identical on every installation of the same Python version (about 465 kB
    of English prose and code on Python 3.11).

    Example:
        >>> text = default_corpus()
        >>> len(text) > 100_000
        True
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def read_text_file(path: Union[str, os.PathLike], max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Read a UTF-8 text file strictly, in chunks of :data:`READ_CHUNK` bytes, at most ``max_bytes``.

    Endless or huge inputs (``/dev/zero``, ``/dev/urandom``, a pipe) are refused: random bytes at
    the first invalid UTF-8 sequence, anything else once it passes ``max_bytes``.

    Raises:
        ValueError: the bytes are not valid UTF-8 (the message names the file and the
            byte offset of the first bad byte), the file is longer than ``max_bytes`` (the
            message names the limit), or the file holds no text.
        FileNotFoundError: the file does not exist. IsADirectoryError: it is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; accepted: a UTF-8 text file")
    if path.is_file() and path.stat().st_size > max_bytes:
        _too_long(path, max_bytes)
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts, size = [], 0
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(READ_CHUNK)
            if size + len(chunk) > max_bytes:
                _too_long(path, max_bytes)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk
            try:
                parts.append(decoder.decode(chunk, final=not chunk))
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: not valid UTF-8 at byte offset {size - pending + err.start} "
                                 f"(byte 0x{err.object[err.start]:02x}); re-encode the file as UTF-8") from None
            if not chunk:
                break
            size += len(chunk)
    text = "".join(parts)
    if not text.strip():
        raise ValueError(f"{path}: the text is empty; need at least one non-whitespace character")
    return text


def _too_long(path: Path, max_bytes: int) -> None:
    raise ValueError(f"{path}: longer than the limit of {max_bytes:,} bytes ({max_bytes / 2 ** 20:g} MiB, "
                     f"sosm.data.corpus.MAX_TEXT_BYTES) for one text file; accepted: a UTF-8 text file of at most "
                     f"that size (split a larger corpus, or pass max_bytes from Python)")


def decode_text(data: bytes, source: str = "<bytes>") -> str:
    """Decode ``data`` as strict UTF-8; ``ValueError`` naming ``source`` and the offset, or on empty text."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{source}: not valid UTF-8 at byte offset {err.start} "
                         f"(byte 0x{data[err.start]:02x}); re-encode the file as UTF-8") from None
    if not text.strip():
        raise ValueError(f"{source}: the text is empty; need at least one non-whitespace character")
    return text


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, size: int, sha256: str) -> None:
    """Raise ``ValueError`` naming ``path`` when its size or sha256 differ from the expected ones."""
    actual_size = path.stat().st_size
    if actual_size != size:
        raise ValueError(f"{path}: size {actual_size} bytes, expected {size}; the file is truncated or "
                         f"not the expected one (delete it to download again)")
    actual = _sha256(path)
    if actual != sha256:
        raise ValueError(f"{path}: sha256 {actual}, expected {sha256}; the file is corrupt "
                         f"(delete it to download again)")


def _candidate_dirs(cache_dir: Optional[Path]) -> list[Path]:
    dirs = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]))
    dirs.append(Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR)
    dirs.append(REPO_SIDE_DATA_DIR)
    return dirs


def _download(url: str, target: Path, timeout: float = 30.0) -> None:
    """Download ``url`` to ``target`` atomically (temp file, fsync, rename)."""
    def copy(out) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)

    atomic_write(target, copy)


def load_tinyshakespeare(cache_dir: Optional[Union[str, os.PathLike]] = None, download: bool = True) -> str:
    """Tiny Shakespeare (1,115,394 bytes), verified by size and sha256.

    Looks for ``tinyshakespeare.txt`` in, in order: ``$SOSM_DATA_DIR``, ``cache_dir``
    (default ``~/.cache/sosm``), and ``../shared/data`` beside the repository. A file
    that exists but fails the checksum raises ``ValueError`` naming it (it is never
    silently replaced). When no copy exists and ``download`` is True, the file is
    downloaded into the cache directory and verified.

    Raises:
        ValueError: a copy is corrupt.
        DataUnavailableError: (a ``RuntimeError``) no local copy and the download failed
            (offline): the message says how to provide the file through ``SOSM_DATA_DIR``.
    """
    dirs = _candidate_dirs(Path(cache_dir) if cache_dir is not None else None)
    for folder in dirs:
        path = folder / TINYSHAKESPEARE_FILE
        if path.is_file():
            verify_file(path, TINYSHAKESPEARE_SIZE, TINYSHAKESPEARE_SHA256)
            return path.read_text(encoding="utf-8")
    searched = ", ".join(str(d) for d in dirs)
    if not download:
        raise DataUnavailableError(f"{TINYSHAKESPEARE_FILE} not found in {searched}; put a copy in a folder and set "
                           f"{DATA_DIR_ENV}=<folder>, or call with download=True when online")
    target = dirs[1] / TINYSHAKESPEARE_FILE if os.environ.get(DATA_DIR_ENV) else dirs[0] / TINYSHAKESPEARE_FILE
    try:
        _download(TINYSHAKESPEARE_URL, target)
    except (urllib.error.URLError, OSError) as err:
        raise DataUnavailableError(f"could not download Tiny Shakespeare from {TINYSHAKESPEARE_URL} ({err}); "
                           f"offline? Searched {searched}. Download input.txt elsewhere, save it as "
                           f"<folder>/{TINYSHAKESPEARE_FILE} and set {DATA_DIR_ENV}=<folder>") from None
    try:
        verify_file(target, TINYSHAKESPEARE_SIZE, TINYSHAKESPEARE_SHA256)
    except ValueError:
        target.unlink(missing_ok=True)
        raise
    return target.read_text(encoding="utf-8")
