"""Record one forward pass of an ``SOSMModel`` for analysis: the stack input, the shared layer context, the State.

Every analysis in this package (DePass, ablations, faithfulness) works on the function
``stack input x0 [B, T, d] -> logits`` with the graph, positions and structural encoding of
one original pass held fixed. :func:`record_forward` captures those with a forward pre-hook on
``model.stack`` (no change to the model), and :func:`logits_from_stack_input` replays the stack
on a new ``x0`` with the recorded context.

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, vocab_size=50)).eval()
    >>> rec = record_forward(model, torch.randint(0, 50, (1, 12)))
    >>> torch.allclose(logits_from_stack_input(model, rec.x0, rec.ctx), rec.logits)
    True
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from ..model import SOSMModel, State
from ..model.context import LayerContext


@dataclass
class ForwardRecord:
    """What one original forward pass computed.

    Args:
        input_ids: ``[B, T]`` long.
        x0: ``[B, T, d_model]`` input of the layer stack (after the front end / embedding).
        ctx: the ``LayerContext`` every layer read (neighbours, layout, angles, structure).
        state: the model's ``State`` (semantic/temporal states, graph, landmarks).
        logits: ``[B, T, V]`` float32.
    """

    input_ids: torch.Tensor
    x0: torch.Tensor
    ctx: LayerContext
    state: State
    logits: torch.Tensor


def check_model(model) -> SOSMModel:
    """Raise ``TypeError`` unless ``model`` is an ``SOSMModel``; ``ValueError`` if it is in training mode."""
    if not isinstance(model, SOSMModel):
        raise TypeError(f"model must be a sosm.SOSMModel, got {type(model).__name__}")
    if model.training:
        raise ValueError("model is in training mode (dropout active); call model.eval() before analysis")
    return model


@torch.no_grad()
def record_forward(model: SOSMModel, input_ids: torch.Tensor, return_hidden: bool = False) -> ForwardRecord:
    """Run ``model(input_ids)`` once (fp32, no grad) and keep the stack input and context.

    Args:
        model: an ``SOSMModel`` in eval mode.
        input_ids: ``[B, T]`` token ids.
        return_hidden: also keep the residual stream before and after every layer in
            ``state.hidden_states`` (entry i is the input of layer i).

    Returns:
        :class:`ForwardRecord`.
    """
    check_model(model)
    captured = {}

    def grab(module, args):
        captured["x0"], captured["ctx"] = args[0], args[1]

    handle = model.stack.register_forward_pre_hook(grab)
    try:
        logits, state = model(input_ids, return_hidden=return_hidden)
    finally:
        handle.remove()
    return ForwardRecord(input_ids=input_ids.long(), x0=captured["x0"].float(), ctx=captured["ctx"],
                         state=state, logits=logits.float())


def expand_context(ctx: LayerContext, batch: int) -> LayerContext:
    """A copy of a batch-1 ``ctx`` repeated to ``batch`` samples (for batched gradient methods)."""
    from ..kernels import GraphLayout

    def rep(t: Optional[torch.Tensor]):
        if t is None or t.shape[0] == batch:
            return t
        if t.shape[0] != 1:
            raise ValueError(f"expand_context needs a batch-1 context, got a tensor of batch {t.shape[0]}")
        return t.expand(batch, *t.shape[1:]).contiguous()

    out = replace(ctx, angles=rep(ctx.angles), neighbors=rep(ctx.neighbors), alibi_coords=rep(ctx.alibi_coords),
                  structure=rep(ctx.structure), semantic=rep(ctx.semantic))
    if out.neighbors is not None and out.neighbors is not ctx.neighbors:
        out.layout = GraphLayout.build(out.neighbors)
    return out


def logits_from_stack_input(model: SOSMModel, x0: torch.Tensor, ctx: LayerContext) -> torch.Tensor:
    """Replay the layer stack and head on ``x0 [B', T, d]`` with the recorded ``ctx`` -> ``[B', T, V]``.

    Differentiable in ``x0`` (used by gradient x input and Integrated Gradients). A batch-1
    ``ctx`` is repeated to ``B'``.
    """
    ctx = expand_context(ctx, x0.shape[0])
    hidden, _ = model.stack(x0, ctx)
    return model.logits_from_hidden(hidden)
