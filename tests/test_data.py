"""sosm.data: default corpus, Tiny Shakespeare loading/verification, strict UTF-8, batches."""
import hashlib
import urllib.error

import pytest
import torch

from sosm.data import (BatchSampler, DataUnavailableError, TokenSplits, corpus, decode_text, default_corpus, get_batch,
                       load_tinyshakespeare, read_text_file, split_ids)


def test_default_corpus_is_embedded_and_stable():
    text = default_corpus()
    assert len(text) > 100_000
    assert text == default_corpus()
    assert "if" in text and "\ufffd" not in text


def _fake_dataset(monkeypatch, content: bytes):
    """Point the loader's expected size/sha256 at ``content`` so tests stay small."""
    monkeypatch.setattr(corpus, "TINYSHAKESPEARE_SIZE", len(content))
    monkeypatch.setattr(corpus, "TINYSHAKESPEARE_SHA256", hashlib.sha256(content).hexdigest())


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No SOSM_DATA_DIR, no repository copy, no network."""
    monkeypatch.delenv(corpus.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(corpus, "REPO_SIDE_DATA_DIR", tmp_path / "absent")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(corpus.urllib.request, "urlopen", offline)
    return tmp_path


def test_data_dir_env_is_used_and_verified(monkeypatch, isolated):
    content = "First Citizen:\nBefore we proceed any further, hear me speak.\n".encode()
    _fake_dataset(monkeypatch, content)
    folder = isolated / "data"
    folder.mkdir()
    (folder / corpus.TINYSHAKESPEARE_FILE).write_bytes(content)
    monkeypatch.setenv(corpus.DATA_DIR_ENV, str(folder))
    assert load_tinyshakespeare(cache_dir=isolated / "cache") == content.decode()


def test_corrupt_file_is_rejected_with_its_name(monkeypatch, isolated):
    content = b"All the world's a stage.\n"
    _fake_dataset(monkeypatch, content)
    bad = isolated / corpus.TINYSHAKESPEARE_FILE
    bad.write_bytes(b"All the world's a stagf.\n")
    with pytest.raises(ValueError, match="sha256.*corrupt") as info:
        load_tinyshakespeare(cache_dir=isolated)
    assert str(bad) in str(info.value)
    bad.write_bytes(b"short")
    with pytest.raises(ValueError, match="size 5 bytes"):
        load_tinyshakespeare(cache_dir=isolated)


def test_offline_without_copy_names_the_env_variable(isolated):
    with pytest.raises(DataUnavailableError, match="SOSM_DATA_DIR"):
        load_tinyshakespeare(cache_dir=isolated / "cache")
    with pytest.raises(DataUnavailableError, match="SOSM_DATA_DIR"):
        load_tinyshakespeare(cache_dir=isolated / "cache", download=False)


def test_repository_copy_is_verified():
    if not (corpus.REPO_SIDE_DATA_DIR / corpus.TINYSHAKESPEARE_FILE).is_file():
        pytest.skip("no Tiny Shakespeare copy beside the repository")
    text = load_tinyshakespeare()
    assert text.startswith("First Citizen") and len(text.encode()) == 1_115_394


def test_read_text_file_rejects_bad_utf8_and_empty(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"caf\xc3\xa9 ok \xff rest")
    with pytest.raises(ValueError, match=r"bad\.txt.*byte offset 9"):
        read_text_file(path)
    path.write_bytes(b"  \n")
    with pytest.raises(ValueError, match="empty"):
        read_text_file(path)
    path.write_text("héllo", encoding="utf-8")
    assert read_text_file(path) == "héllo"
    with pytest.raises(ValueError, match="<bytes>"):
        decode_text(b"")


def test_read_text_file_reads_in_chunks_up_to_a_named_limit(tmp_path):
    """A character cut by the 1 MiB chunk boundary decodes; offsets count from the file's start; past
    max_bytes (or MAX_TEXT_BYTES) the file is refused with the limit named, before it is all read."""
    chunk = corpus.READ_CHUNK
    path = tmp_path / "t.txt"
    path.write_bytes(b"a" * (chunk - 1) + "é".encode() + b"b" * 10)
    assert read_text_file(path) == "a" * (chunk - 1) + "é" + "b" * 10
    path.write_bytes(b"a" * (chunk + 5) + b"\xff")
    with pytest.raises(ValueError, match=rf"not valid UTF-8 at byte offset {chunk + 5} \(byte 0xff\)"):
        read_text_file(path)
    path.write_bytes(b"a" * (chunk - 1) + "é".encode()[:1])  # the file ends inside a character
    with pytest.raises(ValueError, match=rf"not valid UTF-8 at byte offset {chunk - 1}"):
        read_text_file(path)
    path.write_bytes(b"a" * 101)
    with pytest.raises(ValueError, match=r"longer than the limit of 100 bytes"):
        read_text_file(path, max_bytes=100)
    assert corpus.MAX_TEXT_BYTES == 256 * 2 ** 20
    with pytest.raises(ValueError, match=r"/dev/zero: longer than the limit of 1,048,576 bytes \(1 MiB"):
        read_text_file("/dev/zero", max_bytes=2 ** 20)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_text_file(tmp_path)


def test_split_is_contiguous_90_10():
    train, val = split_ids(torch.arange(100))
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))
    with pytest.raises(ValueError, match="val_fraction"):
        split_ids(torch.arange(100), 1.5)


def test_get_batch_targets_are_shifted_and_seeded():
    data = TokenSplits.from_ids(torch.arange(1000))
    a = data.get_batch("train", 4, 16, torch.Generator().manual_seed(3))
    b = data.get_batch("train", 4, 16, torch.Generator().manual_seed(3))
    assert a.input_ids.shape == a.targets.shape == (4, 16)
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.targets, a.input_ids + 1)
    assert int(data.get_batch("val", 2, 8, torch.Generator()).input_ids.min()) >= 900
    with pytest.raises(ValueError, match="block_size"):
        get_batch(torch.arange(10), 1, 10, torch.Generator())
    with pytest.raises(ValueError, match="split"):
        data.get_batch("test", 1, 4, torch.Generator())


def test_sampler_resumes_exactly():
    ids = torch.randint(0, 50, (2000,), generator=torch.Generator().manual_seed(0))
    full = BatchSampler(ids, 3, 12, seed=7)
    reference = [next(full) for _ in range(6)]
    resumed = BatchSampler(ids, 3, 12, seed=7)
    for _ in range(2):
        next(resumed)
    state = resumed.state_dict()
    fresh = BatchSampler(ids, 3, 12, seed=123)
    fresh.load_state_dict(state)
    assert fresh.step == 2
    for expected in reference[2:]:
        assert torch.equal(next(fresh).input_ids, expected.input_ids)
