"""Incremental decoding equals the full forward; sampling is seeded."""
import pytest
import torch

from .conftest import CASE_IDS, CASES, RWPE, SEQ, VOCAB, random_ids, tiny_model


@pytest.mark.parametrize("model_name, positional, overrides",
                         [(m, p, {}) for m, p in CASES] + [("hybrid", "graph_rope", RWPE),
                                                           ("graph_attention", "graph_alibi", RWPE)],
                         ids=CASE_IDS + ["hybrid-graph_rope-rwpe", "graph_attention-graph_alibi-rwpe"])
def test_incremental_logits_equal_full_forward(model_name, positional, overrides):
    model = tiny_model(model_name, positional, **overrides)
    ids = random_ids()
    full, _ = model(ids)
    decoder = model.decoder(batch_size=2)
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(SEQ)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


def test_incremental_equals_full_forward_for_short_prefixes():
    model = tiny_model("hybrid", "graph_alibi")
    ids = random_ids(batch=1, seq=5)  # shorter than the builder's minimum T: built in the padded frame
    full, _ = model(ids)
    decoder = model.decoder()
    stepped = torch.stack([decoder.step(ids[:, t]) for t in range(5)], dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-5, atol=1e-5)


def test_generate_is_seeded_and_extends_the_prompt():
    model = tiny_model("hybrid", "graph_rope")
    prompt = random_ids(batch=1, seq=4)
    first = model.generate(prompt, max_new_tokens=6, temperature=0.9, top_k=5, seed=1)
    assert first.shape == (1, 10) and torch.equal(first[:, :4], prompt)
    assert torch.equal(first, model.generate(prompt, max_new_tokens=6, temperature=0.9, top_k=5, seed=1))
    greedy = model.generate(prompt, max_new_tokens=3, temperature=0)
    full, _ = model(greedy[:, :-1])
    assert torch.equal(greedy[:, 4:], full[:, 3:].argmax(-1))


def test_generate_past_max_seq_len_restarts_on_the_recent_window():
    model = tiny_model("mamba", max_seq_len=8)
    out = model.generate(random_ids(batch=1, seq=3), max_new_tokens=12, seed=0)
    assert out.shape == (1, 15) and int(out.max()) < VOCAB


@pytest.mark.parametrize("kwargs, match", [(dict(max_new_tokens=0), "max_new_tokens"),
                                           (dict(max_new_tokens=2, temperature=-1.0), "temperature"),
                                           (dict(max_new_tokens=2, top_k=0), "top_k")])
def test_generate_rejects_bad_arguments(kwargs, match):
    model = tiny_model("transformer")
    with pytest.raises(ValueError, match=match):
        model.generate(random_ids(batch=1, seq=3), **kwargs)


def test_decoder_rejects_a_non_causal_graph():
    model = tiny_model("hybrid", graph={"k": 4, "causal": False}, num_landmarks=0)
    with pytest.raises(ValueError, match="causal"):
        model.decoder()
