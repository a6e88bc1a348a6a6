"""Atomic, checksummed persistence of :class:`~sosm.memory.HNSWMemory` (docs/ARCHITECTURE.md, invariant 5).

Layout of a memory directory ``dir``::

    dir/CURRENT              "v000007 <sha256 of v000007/manifest.json>\\n"
    dir/v000007/index.bin    hnswlib ``save_index`` output
    dir/v000007/vectors.npy  raw vectors, float32 [count, dim]
    dir/v000007/entries.jsonl one JSON line per id: {"id", "position", "deleted", "metadata"}
    dir/v000007/manifest.json format version, dim, space, count, next id, every setting that
                             changes results (M, ef_construction, ef, ef_auto: ef follows
                             the size, seed, num_threads, exact_threshold),
                             sha256 and size of each file above

A save writes a new version into ``dir/.tmp-v000008-<pid>``, fsyncs every file and the
folder, renames it to ``dir/v000008``, fsyncs ``dir``, and only then replaces
``CURRENT`` atomically (``sosm.common.files.atomic_write``: temp file, fsync, one rename) and fsyncs
``dir`` again. The previous version is deleted only after that. A crash at any step
leaves ``CURRENT`` naming a complete, verified copy; leftovers are cleaned on the next save.

Example:
    >>> import tempfile, torch
    >>> from sosm.memory import HNSWMemory
    >>> mem = HNSWMemory(dim=4); _ = mem.add(torch.randn(3, 4))
    >>> folder = tempfile.mkdtemp(); mem.save(folder)
    >>> len(HNSWMemory.load(folder))
    3
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import hnswlib
import numpy as np

from ..common.files import atomic_dir, atomic_write, fsync_dir, write_synced
from ._checks import unit_rows

FORMAT_VERSION = 1
FILES = ("index.bin", "vectors.npy", "entries.jsonl")


def save_memory(memory, directory) -> Path:
    """Write ``memory`` as a new version under ``directory``; returns the version folder."""
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise ValueError(f"directory must be a folder, got the file {root}")
    if root.is_dir() and any(root.iterdir()) and not (root / "CURRENT").exists():
        raise ValueError(f"{root} is not empty and has no CURRENT file: not an HNSWMemory folder, refusing to overwrite")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    if created:
        fsync_dir(root.parent)
    versions = [int(p.name[1:]) for p in root.glob("v[0-9]*") if p.name[1:].isdigit()]
    name = f"v{max(versions, default=0) + 1:06d}"
    with atomic_dir(root / name, prefix=".tmp-") as temp:
        _write_index(memory, temp / "index.bin")
        _write_vectors(memory, temp / "vectors.npy")
        _write_entries(memory, temp / "entries.jsonl")
        manifest = {
            "format_version": FORMAT_VERSION, "dim": memory.dim, "space": memory.space,
            "count": memory.count, "live": len(memory), "next_id": memory.count,
            "M": memory.M, "ef_construction": memory.ef_construction, "ef": memory.ef,
            "ef_auto": memory.ef_auto, "exact_threshold": memory.exact_threshold, "num_threads": memory.num_threads,
            "max_elements": memory.capacity, "seed": memory.seed,
            "files": {f: {"sha256": _sha256(temp / f), "bytes": (temp / f).stat().st_size} for f in FILES},
        }
        manifest["self_sha256"] = _self_sha256(manifest)  # tells a corrupt CURRENT from a corrupt manifest
        write_synced(temp / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    atomic_write(root / "CURRENT", f"{name} {_sha256(root / name / 'manifest.json')}\n")
    for stale in root.iterdir():
        if stale.name != name and (stale.name.startswith(".tmp-") or (stale.name.startswith("v") and stale.name[1:].isdigit())):
            shutil.rmtree(stale, ignore_errors=True)
    return root / name


def load_memory(cls, directory, *, dim: Optional[int] = None, space: Optional[str] = None):
    """Read the version named by ``directory/CURRENT`` into a new ``cls`` instance, verified."""
    root = Path(directory)
    pointer = root / "CURRENT"
    if not pointer.is_file():
        raise ValueError(f"{pointer} not found: {root} is not a saved HNSWMemory folder")
    name, manifest_sha = _read_pointer(pointer)
    folder = root / name
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} is missing (named by {pointer})")
    actual = _sha256(manifest_path)
    if actual != manifest_sha:
        if _manifest_is_intact(folder):
            raise ValueError(f"{pointer} is corrupt: it records sha256 {manifest_sha} for {name}/manifest.json, whose "
                             f"sha256 is {actual} (they {_first_difference(manifest_sha, actual)}); {name}/manifest.json "
                             f"is intact (it matches its own self_sha256, every file it lists its checksum): write "
                             f"'{name} {actual}' into {pointer} to load this version")
        _verify(manifest_path, manifest_sha)
    manifest = json.loads(manifest_path.read_text())
    _check_manifest(manifest, manifest_path, dim, space)
    for file_name in FILES:
        _verify(folder / file_name, manifest["files"][file_name]["sha256"])
    count, d = manifest["count"], manifest["dim"]
    vectors = np.load(folder / "vectors.npy", allow_pickle=False)
    if vectors.shape != (count, d) or vectors.dtype != np.float32:
        raise ValueError(f"{folder / 'vectors.npy'}: expected float32 [{count}, {d}] per manifest, got {vectors.dtype} {list(vectors.shape)}")
    entries = [json.loads(line) for line in (folder / "entries.jsonl").read_text().splitlines()]
    if [e["id"] for e in entries] != list(range(count)):
        raise ValueError(f"{folder / 'entries.jsonl'}: ids must be 0..{count - 1} in order (manifest count {count}), got {len(entries)} entries")
    capacity = max(manifest["max_elements"], count, 1)
    memory = cls(dim=d, space=manifest["space"], M=manifest["M"], ef_construction=manifest["ef_construction"],
                 ef=None if manifest.get("ef_auto", False) else manifest["ef"], max_elements=1, seed=manifest["seed"],
                 num_threads=manifest.get("num_threads", 1), exact_threshold=manifest.get("exact_threshold", 4096))
    memory._resize_arrays(capacity)
    index = hnswlib.Index(space=manifest["space"], dim=d)
    index.load_index(str(folder / "index.bin"), max_elements=capacity)
    if index.get_current_count() != count or sorted(index.get_ids_list()) != list(range(count)):
        raise ValueError(f"{folder / 'index.bin'}: holds {index.get_current_count()} labels, manifest and entries.jsonl say ids 0..{count - 1}")
    memory._index = index
    memory._vectors[:count] = vectors
    if memory._units is not None:
        memory._units[:count] = unit_rows(vectors)
    for entry in entries:
        i = entry["id"]
        memory._positions[i] = -1 if entry["position"] is None else entry["position"]
        memory._deleted[i] = entry["deleted"]
        doc = entry["metadata"].get("document")
        if doc is not None:
            memory._documents[i] = memory._document_codes.setdefault(doc, len(memory._document_codes))
    memory._metadata = [entry["metadata"] for entry in entries]
    memory._next_id = count
    memory._max_position = int(memory._positions[:count].max()) if count else -1
    if memory.ef_auto:
        memory._sync_ef(force=True)
    else:
        index.set_ef(memory.ef)
    memory._n_deleted = int(memory._deleted[:count].sum())
    _check_index_agrees(memory, folder)
    return memory


_POINTER = re.compile(r"(v[0-9]{6}) ([0-9a-f]{64})\n?")


def _read_pointer(pointer: Path) -> tuple[str, str]:
    """``(version folder name, manifest sha256)`` from CURRENT; ValueError naming CURRENT when malformed."""
    text = pointer.read_text(errors="replace")
    match = _POINTER.fullmatch(text)
    if match is None:
        raise ValueError(f"{pointer} is corrupt: expected '<version> <sha256>' (a folder name v000007 and 64 "
                         f"lowercase hex digits), got {text[:200]!r}")
    return match.group(1), match.group(2)


def _self_sha256(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON without its ``self_sha256`` field."""
    body = {key: value for key, value in manifest.items() if key != "self_sha256"}
    return hashlib.sha256(json.dumps(body, indent=1, sort_keys=True).encode()).hexdigest()


def _manifest_is_intact(folder: Path) -> bool:
    """True when ``folder/manifest.json`` parses, matches its own ``self_sha256`` and every file it lists
    has the checksum it records (manifests written before ``self_sha256`` count as not provably intact)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        files = manifest["files"]
        return manifest.get("self_sha256") == _self_sha256(manifest) and \
            all((folder / f).is_file() and _sha256(folder / f) == files[f]["sha256"] for f in FILES)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def _first_difference(expected: str, actual: str) -> str:
    i = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
    return f"differ from hex digit {i + 1} on"


def _check_manifest(manifest: dict, path: Path, dim: Optional[int], space: Optional[str]) -> None:
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {manifest.get('format_version')!r} is not supported (this build reads {FORMAT_VERSION})")
    if dim is not None and manifest["dim"] != dim:
        raise ValueError(f"{path}: dimension mismatch, the saved memory has dim={manifest['dim']} but dim={dim} was requested")
    if space is not None and manifest["space"] != space:
        raise ValueError(f"{path}: space mismatch, the saved memory uses space={manifest['space']!r} but space={space!r} was requested")
    missing = [f for f in FILES if f not in manifest.get("files", {})]
    if missing:
        raise ValueError(f"{path}: no checksum for {missing}")


def _check_index_agrees(memory, folder: Path, samples: int = 256) -> None:
    """Spot-check that index.bin holds the vectors of vectors.npy under the same ids."""
    count = memory.count
    probe = np.unique(np.linspace(0, count - 1, min(samples, count)).astype(np.int64)) if count else np.zeros(0, np.int64)
    live = probe[~memory._deleted[probe]]
    if live.size:
        stored = np.asarray(memory._index.get_items(live.tolist()), dtype=np.float32)
        expected = memory._vectors[live]
        if memory.space == "cosine":
            expected = unit_rows(expected)
        if not np.allclose(stored, expected, atol=1e-5):
            raise ValueError(f"{folder / 'index.bin'} and {folder / 'vectors.npy'} disagree about the vectors of some ids")
    for label in probe[memory._deleted[probe]]:
        try:
            memory._index.get_items([int(label)])
        except RuntimeError:
            continue
        raise ValueError(f"{folder / 'entries.jsonl'} marks id {label} deleted but {folder / 'index.bin'} does not")


def _write_index(memory, path: Path) -> None:
    memory._index.save_index(str(path))
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_vectors(memory, path: Path) -> None:
    write_synced(path, lambda handle: np.save(handle, memory._vectors[:memory.count], allow_pickle=False))


def _write_entries(memory, path: Path) -> None:
    lines = []
    for i in range(memory.count):
        position = int(memory._positions[i])
        lines.append(json.dumps({"id": i, "position": None if position < 0 else position,
                                 "deleted": bool(memory._deleted[i]), "metadata": memory._metadata[i]}))
    write_synced(path, "\n".join(lines) + ("\n" if lines else ""))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    actual = _sha256(path)
    if actual != expected:
        raise ValueError(f"checksum mismatch in {path}: expected sha256 {expected}, got {actual} (they "
                         f"{_first_difference(expected, actual)}; file corrupt or modified)")
