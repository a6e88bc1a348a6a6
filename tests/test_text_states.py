"""sosm.text_states: shapes, determinism, meaning (similar words closer than random), save/load."""
import torch
import pytest

from sosm.data import default_corpus
from sosm.common.blocks import SEMANTIC_DIM, TEMPORAL_DIM, block_slice
from sosm.text_states import (StateModel, StateModelConfig, corpus_states, default_state_model,
                              temporal_states)
from sosm.tokenizers import BPETokenizer, ByteTokenizer

SIMILAR = [("true", "false"), ("class", "instance"), ("string", "literal"), ("function", "definition"),
           ("integer", "floating"), ("exception", "raised"), ("keys", "dictionary")]


def _cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_shapes_and_broadcast_to_bytes():
    states = corpus_states("The function returns.", ByteTokenizer())
    assert states.states.shape == (21, SEMANTIC_DIM) and states.temporal.shape == (21, TEMPORAL_DIM)
    assert states.states.dtype == torch.float32 and torch.isfinite(states.states).all()
    # every byte of "function" (and the space before it) carries the word's state
    assert all(torch.equal(states.states[t], states.states[4]) for t in range(3, 12))
    assert not torch.equal(states.states[4], states.states[13])
    assert states.labels[:3] == ["T", "h", "e"]


def test_similar_words_are_closer_than_random_pairs():
    model = default_state_model()
    g = torch.Generator().manual_seed(0)
    pairs = torch.randint(0, len(model.vocab), (500, 2), generator=g)
    random_mean = sum(_cos(model.vectors[i], model.vectors[j]) for i, j in pairs.tolist()) / len(pairs)
    similar = [_cos(model.word_vector(a), model.word_vector(b)) for a, b in SIMILAR]
    assert min(similar) > random_mean + 0.2, (similar, random_mean)
    top = [word for word, _ in model.nearest("true", 3)]
    assert "false" in top


def test_blocks_follow_singular_directions():
    model = default_state_model()
    energy = [float(model.vectors[:, block_slice(name)].pow(2).sum()) for name in ("I", "D", "K", "Z")]
    assert energy == sorted(energy, reverse=True)


def test_fit_is_deterministic():
    corpus = default_corpus()[:40_000]
    a, b = StateModel.fit(corpus), StateModel.fit(corpus)
    assert a.vocab == b.vocab and torch.equal(a.vectors, b.vectors)
    assert torch.equal(a.encode("a new list", ByteTokenizer()).states, b.encode("a new list", ByteTokenizer()).states)


def test_out_of_vocabulary_words_use_character_ngrams():
    model = default_state_model()
    assert "methodz" not in model.vocab
    assert _cos(model.word_vector("methodz"), model.word_vector("method")) > 0.5
    assert torch.count_nonzero(model.word_vector("日本")) == 0


def test_token_unit_with_bpe_and_save_load(tmp_path):
    corpus = default_corpus()[:30_000]
    tok = BPETokenizer.train(corpus, vocab_size=400)
    model = StateModel.fit(corpus, tok, StateModelConfig(unit="token", window=2))
    states = model.encode("the value of the object", tok)
    assert states.states.shape == (len(tok.encode("the value of the object")), SEMANTIC_DIM)
    model.save(tmp_path / "sm")
    again = StateModel.load(tmp_path / "sm")
    assert torch.equal(again.encode("the value", tok).states, model.encode("the value", tok).states)
    with pytest.raises(ValueError, match="fit with tokenizer"):
        model.encode("the value", ByteTokenizer())


def test_ids_input_and_bad_input():
    tok = ByteTokenizer()
    ids = tok.encode("a list of keys")
    assert torch.equal(corpus_states(ids, tok).states, corpus_states("a list of keys", tok).states)
    with pytest.raises(ValueError, match="empty"):
        corpus_states("   ", tok)
    with pytest.raises(ValueError, match="unit"):
        StateModelConfig(unit="char")
    with pytest.raises(ValueError, match="unknown StateModelConfig keys"):
        StateModelConfig.from_dict({"windw": 3})


def test_word_level_pools_tokens():
    states = corpus_states("A function returns a value.", ByteTokenizer()).word_level()
    assert states.labels == ["A", "function", "returns", "a", "value", "."]
    assert states.states.shape == (6, SEMANTIC_DIM) and states.temporal.shape == (6, TEMPORAL_DIM)


def test_temporal_states_are_sinusoids():
    t = temporal_states(10)
    assert torch.allclose(t[:, 0], torch.arange(10.0).sin())
    assert torch.allclose(t[:, 16], torch.arange(10.0).cos())
    assert torch.allclose(t[:, :16] ** 2 + t[:, 16:] ** 2, torch.ones(10, 16), atol=1e-6)


def test_subset_keeps_chosen_nodes():
    words = corpus_states("A function returns a value.", ByteTokenizer()).word_level()
    part = words.subset([1, 2, 4])
    assert part.labels == ["function", "returns", "value"]
    assert torch.equal(part.states[2], words.states[4]) and part.temporal.shape == (3, TEMPORAL_DIM)
    with pytest.raises(ValueError, match="ascending"):
        words.subset([2, 1])
