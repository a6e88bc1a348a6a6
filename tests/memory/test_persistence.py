"""Atomic, checksummed save/load: round trip, simulated crash, corruption, mismatches."""
import json

import pytest
import torch

from sosm.memory import HNSWMemory
from sosm.memory import persistence


def _memory(n=60, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    memory = HNSWMemory(dim=dim, max_elements=8)
    memory.add(torch.randn(n, dim, generator=g), positions=torch.arange(n),
               metadata=[{"document": f"doc{i % 3}", "offset": i} for i in range(n)])
    memory.delete(torch.tensor([3, 7]))
    return memory


def _current_folder(root):
    return root / (root / "CURRENT").read_text().split()[0]


def test_round_trip_keeps_ids_metadata_vectors_and_results(tmp_path):
    memory = _memory()
    memory.save(tmp_path / "mem")
    loaded = HNSWMemory.load(tmp_path / "mem", dim=16, space="cosine")
    assert (loaded.count, len(loaded), loaded.M, loaded.ef) == (memory.count, len(memory), memory.M, memory.ef)
    assert torch.equal(loaded.get_states(torch.arange(60)), memory.get_states(torch.arange(60)))
    queries = torch.randn(5, 16, generator=torch.Generator().manual_seed(9))
    for kwargs in ({}, {"max_position": torch.tensor([5, 10, 20, 40, 60])}, {"document": "doc1"}):
        a, b = memory.retrieve(queries, k=8, **kwargs), loaded.retrieve(queries, k=8, **kwargs)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.similarities, b.similarities)
        assert a.metadata == b.metadata and torch.equal(a.states, b.states) and torch.equal(a.positions, b.positions)
    assert loaded.add(torch.randn(2, 16)).tolist() == [60, 61]


def test_second_save_replaces_the_first_and_cleans_up(tmp_path):
    memory = _memory()
    memory.save(tmp_path / "mem")
    memory.add(torch.randn(4, 16))
    memory.save(tmp_path / "mem")
    assert HNSWMemory.load(tmp_path / "mem").count == 64
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == ["CURRENT", "v000002"]


@pytest.mark.parametrize("failing", ["_write_vectors", "_write_entries", "write_synced"])
def test_crash_midway_leaves_the_old_copy_loadable(tmp_path, monkeypatch, failing):
    memory = _memory()
    memory.save(tmp_path / "mem")
    memory.add(torch.randn(10, 16))

    def crash(*args, **kwargs):
        raise OSError("simulated crash")
    monkeypatch.setattr(persistence, failing, crash)
    with pytest.raises(OSError, match="simulated crash"):
        memory.save(tmp_path / "mem")
    monkeypatch.undo()
    old = HNSWMemory.load(tmp_path / "mem")
    assert old.count == 60 and len(old) == 58
    memory.save(tmp_path / "mem")  # the next save cleans the leftovers
    assert HNSWMemory.load(tmp_path / "mem").count == 70
    assert sorted(p.name for p in (tmp_path / "mem").iterdir()) == ["CURRENT", "v000002"]


def test_crash_after_rename_before_pointer_swap_keeps_old_copy(tmp_path, monkeypatch):
    memory = _memory()
    memory.save(tmp_path / "mem")
    memory.add(torch.randn(1, 16))

    def crash(path, content):
        raise OSError("simulated crash before CURRENT swap")
    monkeypatch.setattr(persistence, "atomic_write", crash)
    with pytest.raises(OSError):
        memory.save(tmp_path / "mem")
    monkeypatch.undo()
    assert HNSWMemory.load(tmp_path / "mem").count == 60


@pytest.mark.parametrize("name", ["index.bin", "vectors.npy", "entries.jsonl", "manifest.json"])
def test_flipped_byte_gives_checksum_error_naming_the_file(tmp_path, name):
    _memory().save(tmp_path / "mem")
    path = _current_folder(tmp_path / "mem") / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"checksum mismatch in .*{name}"):
        HNSWMemory.load(tmp_path / "mem")


def test_dimension_space_and_version_mismatch_are_clear(tmp_path):
    _memory().save(tmp_path / "mem")
    with pytest.raises(ValueError, match=r"manifest.json: dimension mismatch.*dim=16.*dim=32"):
        HNSWMemory.load(tmp_path / "mem", dim=32)
    with pytest.raises(ValueError, match=r"manifest.json: space mismatch"):
        HNSWMemory.load(tmp_path / "mem", space="l2")
    folder = _current_folder(tmp_path / "mem")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    sha = persistence._sha256(folder / "manifest.json")
    (tmp_path / "mem" / "CURRENT").write_text(f"{folder.name} {sha}\n")
    with pytest.raises(ValueError, match="format_version 99 is not supported"):
        HNSWMemory.load(tmp_path / "mem")


def test_missing_or_foreign_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="CURRENT not found"):
        HNSWMemory.load(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        _memory().save(tmp_path / "other")


def test_empty_memory_round_trip(tmp_path):
    HNSWMemory(dim=4).save(tmp_path / "m")
    loaded = HNSWMemory.load(tmp_path / "m")
    assert len(loaded) == 0 and (loaded.retrieve(torch.randn(1, 4), k=2).ids == -1).all()


def test_round_trip_keeps_the_ef_rule(tmp_path, monkeypatch):
    from sosm.memory import hnsw

    monkeypatch.setattr(hnsw, "EF_MIN", 1)
    auto, fixed = HNSWMemory(dim=8), HNSWMemory(dim=8, ef=37)
    for memory in (auto, fixed):
        memory.add(torch.randn(200, 8, generator=torch.Generator().manual_seed(1)))
    auto.save(tmp_path / "auto")
    fixed.save(tmp_path / "fixed")
    loaded_auto, loaded_fixed = HNSWMemory.load(tmp_path / "auto"), HNSWMemory.load(tmp_path / "fixed")
    assert loaded_auto.ef_auto and loaded_auto.ef == loaded_auto._index.ef == hnsw.auto_ef(200) == 11
    assert not loaded_fixed.ef_auto and loaded_fixed.ef == loaded_fixed._index.ef == 37
    loaded_auto.add(torch.randn(200, 8))
    assert loaded_auto.ef == loaded_auto._index.ef == hnsw.auto_ef(400)


def test_every_result_changing_setting_survives_a_round_trip(tmp_path):
    """Issue 12 item 11: exact_threshold (and num_threads, ef, M, ...) come back as saved; load(save(m))
    retrieves identically, on the path the threshold picks."""
    rng = torch.Generator().manual_seed(3)
    memory = HNSWMemory(dim=16, M=8, ef_construction=40, ef=12, exact_threshold=10, num_threads=2, seed=5)
    memory.add(torch.randn(3000, 16, generator=rng), positions=torch.arange(3000),
               metadata=[{"document": "a" if i % 6 else "b"} for i in range(3000)])  # 500 entries of "b"
    memory.save(tmp_path / "mem")
    loaded = HNSWMemory.load(tmp_path / "mem")
    settings = ("dim", "space", "M", "ef_construction", "ef", "ef_auto", "seed", "num_threads", "exact_threshold")
    assert {s: getattr(loaded, s) for s in settings} == {s: getattr(memory, s) for s in settings}
    queries = torch.randn(16, 16, generator=rng)
    for kwargs in ({}, {"document": "b"}, {"document": "a"}, {"max_position": 2000}):
        a, b = memory.retrieve(queries, k=8, **kwargs), loaded.retrieve(queries, k=8, **kwargs)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.similarities, b.similarities), kwargs
    default = HNSWMemory.load(tmp_path / "mem")
    default.exact_threshold = 4096  # what load gave before: "b" (500 matches) takes the exact path
    assert not torch.equal(default.retrieve(queries, k=8, document="b").similarities,
                           memory.retrieve(queries, k=8, document="b").similarities)


def test_a_corrupt_current_file_is_blamed_with_distinguishable_hashes(tmp_path):
    """Issue 12 item 23: CURRENT's recorded hash damaged (after the first 16 hex digits): the error names
    CURRENT, not the intact manifest.json, and shows where the two hashes differ."""
    _memory().save(tmp_path / "mem")
    pointer = tmp_path / "mem" / "CURRENT"
    name, sha = pointer.read_text().split()
    damaged = sha[:40] + ("0" if sha[40] != "0" else "1") + sha[41:]
    pointer.write_text(f"{name} {damaged}\n")
    with pytest.raises(ValueError) as caught:
        HNSWMemory.load(tmp_path / "mem")
    message = str(caught.value)
    assert "CURRENT is corrupt" in message and f"{name}/manifest.json is intact" in message
    assert damaged in message and sha in message and "differ from hex digit 41" in message


@pytest.mark.parametrize("text", ["v000001\n", "v000001 xyz\n", "../v000001 " + "0" * 64 + "\n", ""])
def test_a_malformed_current_file_is_blamed(tmp_path, text):
    _memory().save(tmp_path / "mem")
    (tmp_path / "mem" / "CURRENT").write_text(text)
    with pytest.raises(ValueError, match=r"CURRENT is corrupt: expected '<version> <sha256>'"):
        HNSWMemory.load(tmp_path / "mem")


def test_a_damaged_manifest_is_still_blamed_on_the_manifest(tmp_path):
    _memory().save(tmp_path / "mem")
    path = _current_folder(tmp_path / "mem") / "manifest.json"
    text = path.read_text()
    assert '"M": 32' in text
    path.write_text(text.replace('"M": 32', '"M": 33'))
    with pytest.raises(ValueError, match=r"checksum mismatch in .*manifest.json"):
        HNSWMemory.load(tmp_path / "mem")
