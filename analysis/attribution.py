"""Attribution of a prediction to MU blocks and to tokens: DePass (forward), gradient x input, Integrated Gradients.

**Block attribution** (:func:`block_attribution`): the DePass ``"block"`` components of the
target logit, ``c_k`` for the 16 MU blocks, ``"temporal"`` and ``"bias"``. Shares are
``|c_k| / sum_j |c_j|`` over those 18 components, so they are non-negative and sum to 1; the
signed contributions (which sum to the logit exactly) are returned beside them.

**Token attribution** (:func:`token_attribution`): per input position, the contribution to
the target logit by ``"depass"`` (exact token components), ``"grad_x_input"`` (gradient of the
logit w.r.t. the stack input, dotted with it) or ``"integrated_gradients"`` (captum, zero
baseline). All three see the same function: stack input -> logits with the graph held fixed.

**Sampled gradient block attribution during training** (:class:`GradientBlockAttributionCallback`):
a ``Trainer(step_callback=...)`` that every ``every`` steps takes gradient x input at the
semantic state on a few training windows, sums it per block and logs the normalised shares
(``log.jsonl`` kind ``"block_attribution"``). Off unless passed to the trainer.

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="transformer", d_model=32, n_heads=2, vocab_size=50)).eval()
    >>> scores = token_attribution(model, torch.randint(0, 50, (1, 8)), method="depass")
    >>> scores.shape
    torch.Size([8])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..common.blocks import BLOCK_NAMES, block_slice
from .depass import DePass
from .recording import check_model, logits_from_stack_input, record_forward

METHODS = ("depass", "grad_x_input", "integrated_gradients")


def resolve_target(logits: torch.Tensor, position: Optional[int], target: Optional[int]) -> tuple[int, int]:
    """``(position, target id)``: default the last position and the model's top prediction there."""
    T, V = logits.shape[-2:]
    position = T - 1 if position is None else position
    if not isinstance(position, int) or not -T <= position < T:
        raise ValueError(f"position={position!r} is invalid; accepted: an int in [-{T}, {T})")
    position %= T
    if target is None:
        target = int(logits[0, position].argmax())
    if not isinstance(target, int) or not 0 <= target < V:
        raise ValueError(f"target={target!r} is invalid; accepted: a token id in [0, {V})")
    return position, target


@dataclass
class BlockAttribution:
    """Shares (sum to 1) and signed logit contributions of the MU blocks, temporal and bias."""

    names: list
    shares: list
    contributions: list
    position: int
    target: int
    logit: float

    def top(self, n: int = 5) -> list:
        """The ``n`` components with the largest share, ``[(name, share, contribution)]``."""
        rows = sorted(zip(self.names, self.shares, self.contributions), key=lambda r: -r[1])
        return rows[:n]

    def to_dict(self) -> dict:
        return {"names": self.names, "shares": self.shares, "contributions": self.contributions,
                "position": self.position, "target": self.target, "logit": self.logit}


def block_attribution(model, input_ids: torch.Tensor, target: Optional[int] = None,
                      position: Optional[int] = None) -> BlockAttribution:
    """Forward (DePass) attribution of the MU blocks to one logit; shares sum to 1.

    Args:
        model: a graph-based ``SOSMModel`` (hybrid, graph_attention) in eval mode.
        input_ids: ``[1, T]`` token ids.
        target: token id whose logit is explained (default: the top prediction).
        position: query position (default: the last).

    Returns:
        :class:`BlockAttribution` over ``BLOCK_NAMES + ("temporal", "bias")``.

    Example:
        >>> attribution = block_attribution(model, ids)            # doctest: +SKIP
        >>> round(sum(attribution.shares), 6)                      # doctest: +SKIP
        1.0
    """
    _check_single(input_ids)
    result = DePass(model).run(input_ids, by="block")
    position, target = resolve_target(result.record.logits, position, target)
    contributions = result.logits[:, 0, position, target]  # [C]
    total = contributions.abs().sum().clamp_min(1e-30)
    return BlockAttribution(names=result.names, shares=(contributions.abs() / total).tolist(),
                            contributions=contributions.tolist(), position=position, target=target,
                            logit=float(result.record.logits[0, position, target]))


def _check_single(input_ids) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be one sequence [1, T], got {shape}")


def token_attribution(model, input_ids: torch.Tensor, method: str = "depass", target: Optional[int] = None,
                      position: Optional[int] = None, ig_steps: int = 32) -> torch.Tensor:
    """Contribution of each input position to one logit, ``[T]`` float32 (positions after ``position`` get 0).

    Args:
        model: ``SOSMModel`` in eval mode.
        input_ids: ``[1, T]``.
        method: one of :data:`METHODS`.
        target, position: as :func:`block_attribution`.
        ig_steps: Riemann steps of Integrated Gradients (>= 2).
    """
    check_model(model)
    _check_single(input_ids)
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid; accepted: one of {METHODS}")
    if method == "depass":
        result = DePass(model).run(input_ids, by="token")
        position, target = resolve_target(result.record.logits, position, target)
        return result.logits[:-1, 0, position, target].clone()  # drop the bias component
    record = record_forward(model, input_ids)
    position, target = resolve_target(record.logits, position, target)

    def logit_of(x0):
        return logits_from_stack_input(model, x0, record.ctx)[:, position, target]  # [B']

    x0 = record.x0.detach()
    if method == "grad_x_input":
        x = x0.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(logit_of(x).sum(), x)
        return (grad * x0)[0].sum(-1).detach()
    if not isinstance(ig_steps, int) or ig_steps < 2:
        raise ValueError(f"ig_steps={ig_steps!r} is invalid; accepted: an int >= 2")
    from captum.attr import IntegratedGradients

    attributions = IntegratedGradients(logit_of).attribute(x0, baselines=torch.zeros_like(x0), n_steps=ig_steps,
                                                           internal_batch_size=ig_steps)
    return attributions[0].sum(-1).detach().float()


class GradientBlockAttributionCallback:
    """Trainer step callback: every ``every`` steps, gradient x input block shares at the semantic state.

    Args:
        every: run on steps divisible by ``every`` (>= 1).
        samples: training windows per measurement (>= 1).
        seed: seed of the window sampler.

    Each measurement writes ``{"kind": "block_attribution", "step", "shares": {block: share}}`` to
    the trainer's log and keeps it in ``self.history``. Example::

        Trainer(cfg, out, step_callback=GradientBlockAttributionCallback(every=100))
    """

    def __init__(self, every: int = 100, samples: int = 4, seed: int = 0):
        for name, value in (("every", every), ("samples", samples)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid; accepted: an int >= 1")
        self.every, self.samples, self.seed = every, samples, seed
        self.history: list = []

    def __call__(self, trainer, step: int, loss: float) -> None:
        if step % self.every:
            return
        generator = torch.Generator().manual_seed(self.seed + step)
        batch = trainer.splits.get_batch("train", self.samples, trainer.config.data.block_size, generator)
        shares = gradient_block_shares(trainer.model, batch.input_ids.to(trainer.device),
                                       batch.targets.to(trainer.device))
        self.history.append({"step": step, "shares": shares})
        trainer.log.write("block_attribution", step, shares=shares)


def gradient_block_shares(model, input_ids: torch.Tensor, targets: torch.Tensor) -> dict:
    """``{block: share}`` of ``|sum grad x semantic|`` per MU block for the loss on ``targets`` (shares sum to 1).

    Restores the model's training mode and leaves no gradients on the parameters.
    """
    if getattr(model, "front", None) is None:
        raise ValueError("gradient_block_shares needs a graph-based SOSMModel (it reads the MU semantic state)")
    captured = {}

    def keep(module, args, output):
        captured["semantic"] = output[1]

    was_training = model.training
    model.eval()
    handle = model.front.semantic.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits, _ = model(input_ids)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            sem = captured["semantic"]
            (grad,) = torch.autograd.grad(loss, sem)
    finally:
        handle.remove()
        model.train(was_training)
    per_block = torch.stack([(grad * sem.detach())[..., block_slice(n)].sum().abs() for n in BLOCK_NAMES])
    per_block = per_block / per_block.sum().clamp_min(1e-30)
    return {name: float(v) for name, v in zip(BLOCK_NAMES, per_block)}
