"""Evaluation: loss/perplexity/bits per byte, and the leak check catching a leaky model."""
from __future__ import annotations

import math

import pytest
import torch

from sosm.evaluate import evaluate_text, evaluate_tokens, leak_check
from sosm.tokenizers import ByteTokenizer

from .toys import LeakyLM, TinyCausalLM


class Uniform(torch.nn.Module):
    """Same logits everywhere: loss = ln V exactly."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids):
        return torch.zeros(*ids.shape, self.vocab_size)


class CountingModel(Uniform):
    def __init__(self, vocab_size):
        super().__init__(vocab_size)
        self.seen = 0

    def forward(self, ids):
        self.seen += ids.shape[0] * ids.shape[1]
        return super().forward(ids)


def test_uniform_model_loss_perplexity_and_bits_per_byte():
    text = "To be, or not to be: that is the question.\n" * 5
    result = evaluate_text(Uniform(256), ByteTokenizer(), text, block_size=16, batch_size=3)
    assert result.tokens == len(text) - 1 and result.bytes == len(text) - 1
    assert result.loss == pytest.approx(math.log(256))
    assert result.perplexity == pytest.approx(256)
    assert result.bits_per_byte == pytest.approx(8.0)


def test_every_token_after_the_first_is_scored_once():
    model = CountingModel(10)
    total, count = evaluate_tokens(model, torch.arange(101) % 10, block_size=16, batch_size=4)
    assert count == 100 and model.seen == 100
    total, count = evaluate_tokens(model, torch.arange(101) % 10, block_size=16, max_tokens=40)
    assert count == 40


def test_evaluate_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"block_size=0 is invalid; accepted: an int >= 1"):
        evaluate_tokens(Uniform(4), torch.arange(10) % 4, block_size=0)
    with pytest.raises(TypeError, match="token_ids must be an integer tensor"):
        evaluate_tokens(Uniform(4), torch.rand(10), block_size=4)
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        evaluate_text(Uniform(4), ByteTokenizer(), "", block_size=4)


def test_leak_check_passes_for_a_causal_model():
    torch.manual_seed(0)
    model = TinyCausalLM(64)
    model.train()
    report = leak_check(model, torch.randint(0, 64, (2, 24)), trials=3)
    assert report.passed and report.worst <= 1e-5 and report.leaking_positions == []
    assert "PASS" in str(report)
    assert model.training, "the model's train/eval mode is restored"


def test_leak_check_fails_for_a_leaky_model():
    torch.manual_seed(0)
    report = leak_check(LeakyLM(64), torch.randint(0, 64, (2, 24)), label="LEAKY toy")
    assert not report.passed
    assert report.leaking_positions == report.positions  # every cut position sees its next token
    assert report.worst > 1e-2
    text = str(report)
    assert "LEAK DETECTED" in text and "LEAKY toy" in text
    assert report.to_dict()["verdict"] == "FAIL (LEAK DETECTED)"


def test_leak_check_catches_a_leak_at_one_position_only():
    class LateLeak(TinyCausalLM):
        def forward(self, ids):  # only position 10 peeks at the last token
            logits, state = super().forward(ids)
            logits = logits.clone()
            logits[:, 10] += self.embed(ids[:, -1]) @ self.embed.weight.T
            return logits, state

    report = leak_check(LateLeak(32), torch.randint(0, 32, (1, 20)), positions=range(0, 19))
    assert not report.passed
    assert report.leaking_positions == list(range(10, 19))


def test_leak_check_validates_arguments():
    model = TinyCausalLM(16)
    with pytest.raises(ValueError, match=r"positions \[19\] are invalid; accepted: a non-empty set in \[0, 18\]"):
        leak_check(model, torch.randint(0, 16, (1, 20)), positions=[3, 19])
    with pytest.raises(TypeError, match="model output must be logits"):
        leak_check(torch.nn.Identity(), torch.randint(0, 16, (1, 20)))
