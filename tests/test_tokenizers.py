"""sosm.tokenizers: byte and BPE round trips, save/load, labels, word spans."""
import pytest
from hypothesis import given, settings, strategies as st

from sosm.tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer, word_spans

CORPUS = ("The quick brown fox jumps over the lazy dog. A function returns a value; "
          "naïve café owners write ünïcode. ") * 40


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(CORPUS, vocab_size=320)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_round_trip_any_unicode(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert len(tok.token_labels(ids)) == len(ids)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_bpe_round_trip_any_unicode(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_trains_to_the_requested_size_and_compresses(bpe):
    assert bpe.vocab_size == 320
    text = "the quick brown fox"
    assert len(bpe.encode(text)) < len(text.encode())
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(CORPUS, vocab_size=10)


def test_save_load(tmp_path, bpe):
    for tok in (ByteTokenizer(), bpe):
        folder = tok.save(tmp_path / tok.name)
        again = load_tokenizer(folder)
        assert type(again) is type(tok) and again.vocab_size == tok.vocab_size
        assert again.encode("lazy café") == tok.encode("lazy café")
    assert (tmp_path / "bpe" / "tokenizer.json").is_file()
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


def test_byte_labels_show_characters():
    tok = ByteTokenizer()
    assert tok.token_labels(tok.encode("Hi you!\n")) == ["H", "i", "␣", "y", "o", "u", "!", "↵"]
    assert tok.token_labels(tok.encode("é")) == ["é", "<0xA9>"]
    assert tok.token_labels([0xFF]) == ["<0xFF>"]
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        tok.decode([256])


def test_bpe_labels_are_readable(bpe):
    labels = bpe.token_labels(bpe.encode("the lazy dog"))
    assert "".join(labels).replace("␣", "") == "thelazydog"


def test_word_spans_byte_and_bpe(bpe):
    text = "The fox, naïve!"
    for tok in (ByteTokenizer(), bpe):
        spans = word_spans(text, tok)
        assert spans.words == ["The", "fox", ",", "naïve", "!"]
        assert len(spans.token_word) == len(spans.ids)
        assert spans.token_word == sorted(spans.token_word)
        assert set(spans.token_word) == set(range(5))
    spans = word_spans("ab cd", ByteTokenizer())
    assert spans.token_word == [0, 0, 1, 1, 1]
    assert spans.token_words() == ["ab", "ab", "cd", "cd", "cd"]
    assert word_spans("   ", ByteTokenizer()).token_word == [-1, -1, -1]
