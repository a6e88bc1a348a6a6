import torch

from .conftest import random_ids, tiny_model


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("hybrid", "graph_alibi", seed=1, gradient_checkpointing=checkpointing).train()
        logits, _ = model(random_ids())
        logits.logsumexp(-1).mean().backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7, msg=name)
