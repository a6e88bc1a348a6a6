"""Mixture-of-experts feed-forward: the MLP slot of a block, routed to one of three ways.

``MoEFeedForward`` replaces the block's MLP (``SOSMConfig.moe_experts > 0``; the attention mixers
build it through :func:`feed_forward`). ``E`` experts, each ``Linear(d, h) -> GELU -> Linear(h, d)``,
stored as batched weights ``[E, d, h]`` and ``[E, h, d]`` and applied with one batched matmul
over every expert's slots (no loop over tokens or experts). Routing
(:mod:`sosm.model.routing.routers`):

- ``"topk"``: token choice, ``k`` experts per token (``k = 1``: Switch), a capacity factor, the
  Switch load-balancing loss and the router z-loss. **Causal**: the capacity is per prefix
  (an expert keeps at most ``ceil(cf * k * (t + 1) / E)`` of the tokens ``0..t``, in position
  order; :mod:`sosm.model.routing.capacity`), so whether token t is kept or dropped depends on
  tokens ``0..t`` only. A dropped pair contributes nothing: the token keeps its residual.
- ``"expert_choice"``: each expert takes the tokens whose router probability ranks in its top
  ``ceil(cf * k * (t + 1) / E)`` among tokens ``0..t`` (**causal** prefix rank, same prefix cap);
  z-loss only (the load is balanced by construction, per prefix).
- ``"soft"``: Soft MoE, slots as convex combinations of *all* tokens: every output depends on
  every later token. **Refused in a causal model** (every ``SOSMModel`` is one); available to
  bidirectional use with ``causal=False``.

Decoding (:meth:`MoEFeedForward.step`) carries each expert's kept count (and, for expert choice,
the prefix's router probabilities ``[B, t, E]``) and equals the forward. In DePass
(:meth:`MoEFeedForward.linear_mode`) the routing, the norm scale and each expert's GELU ratio are
frozen, so the layer is a weighted sum of linear experts and decomposes exactly.

Example:
    >>> import torch
    >>> moe = MoEFeedForward(d_model=16, hidden=32, n_experts=4, k=2, routing="topk", capacity_factor=1.25)
    >>> moe(torch.randn(2, 10, 16)).shape
    torch.Size([2, 10, 16])
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..routing.capacity import prefix_capacity
from ..routing.losses import load_balancing_loss, router_z_loss
from ..routing.routers import Routing, expert_choice, soft_routing, token_choice
from .linear import activation_ratio, norm_linear

ROUTINGS = ("topk", "expert_choice", "soft")
SOFT_LEAK = ("Soft MoE is not causal: each slot is a softmax-weighted mix of every token of the sequence and "
             "every output reads every slot, so position t would see later tokens (and a prefix-only variant "
             "is not Soft MoE: it needs every slot recomputed at every position)")


class MoEFeedForward(nn.Module):
    """Routed feed-forward ``[B, T, d] -> [B, T, d]`` (input already normed; no residual: the block adds it).

    Args:
        d_model: width d.
        hidden: each expert's hidden width h.
        n_experts: E >= 2.
        k: experts per token (token choice) / average experts per token at capacity factor 1
            (expert choice); 1 <= k <= E.
        routing: ``"topk"``, ``"expert_choice"`` or ``"soft"``.
        capacity_factor: cf >= 0; each expert processes at most ``ceil(cf * k * n / E)`` of n tokens
            (0: no capacity, top-k only). Unused by Soft MoE.
        balance_weight: weight of the Switch load-balancing loss (top-k).
        z_weight: weight of the router z-loss (top-k and expert choice).
        causal: prefix capacity and prefix ranks (True); Soft MoE refuses it.
        slots_per_expert: Soft MoE's slots per expert.
        init_std: std of the expert and router weights; the output weights get ``init_std / sqrt(2 n_layers)``.
        n_layers: depth of the model (for the residual-output init).
    """

    def __init__(self, d_model: int, hidden: int, n_experts: int, k: int = 2, routing: str = "topk",
                 capacity_factor: float = 1.25, balance_weight: float = 0.01, z_weight: float = 1e-3,
                 causal: bool = True, slots_per_expert: int = 1, init_std: float = 0.02, n_layers: int = 1):
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"routing={routing!r} is invalid; accepted: one of {ROUTINGS}")
        if routing == "soft" and causal:
            raise ValueError(f"routing='soft' cannot be causal: {SOFT_LEAK}; accepted: 'topk' or 'expert_choice' "
                             "(causal), or causal=False for a bidirectional model")
        if not (isinstance(n_experts, int) and n_experts >= 2 and isinstance(k, int) and 1 <= k <= n_experts):
            raise ValueError(f"n_experts={n_experts!r}, k={k!r} are invalid; accepted: ints with 1 <= k <= n_experts, "
                             "n_experts >= 2")
        if not capacity_factor >= 0 or (routing == "expert_choice" and capacity_factor == 0):
            raise ValueError(f"capacity_factor={capacity_factor!r} is invalid; accepted: a float >= 0 "
                             "(> 0 for expert choice)")
        self.n_experts, self.k, self.routing, self.causal = n_experts, k, routing, causal
        self.capacity_factor, self.balance_weight, self.z_weight = float(capacity_factor), balance_weight, z_weight
        self.slots_per_expert = slots_per_expert if routing == "soft" else 1
        self.router = nn.Linear(d_model, n_experts * self.slots_per_expert, bias=False)
        self.w_in = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.b_in = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w_out = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        self.b_out = nn.Parameter(torch.zeros(n_experts, d_model))
        self.init_std, self.n_layers = init_std, n_layers
        self.reset_parameters()
        self.aux_loss: Optional[torch.Tensor] = None
        self._last: Optional[Routing] = None

    @classmethod
    def from_config(cls, config) -> "MoEFeedForward":
        """The MoE of ``SOSMConfig`` ``config`` (``moe_*`` fields; causal, as every SOSMModel is)."""
        return cls(config.d_model, config.moe_expert_hidden, config.moe_experts, config.moe_k, config.moe_routing,
                   config.moe_capacity, config.moe_balance_weight, config.moe_z_weight, causal=True,
                   init_std=config.init_std, n_layers=config.n_layers)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.router.weight, 0.0, self.init_std)
        nn.init.normal_(self.w_in, 0.0, self.init_std)
        nn.init.normal_(self.w_out, 0.0, self.init_std / (2 * self.n_layers) ** 0.5)
        self.b_in.zero_()
        self.b_out.zero_()

    # ---- routing ---------------------------------------------------------------------------------------------
    def route(self, h: torch.Tensor, position: int = 0, cache: Optional[dict] = None) -> tuple:
        """``(router logits [B, T, E(*S)] float32, Routing)`` of ``h [B, T, d]`` at ``position`` (cache: decoding)."""
        cache = {} if cache is None else cache
        with torch.autocast(h.device.type, enabled=False):
            logits = F.linear(h.float(), self.router.weight.float())  # router in float32 (Switch's selective precision)
        if self.routing == "soft":
            B, T, _ = h.shape
            return logits, soft_routing(logits.view(B, T, self.n_experts, self.slots_per_expert))
        if self.routing == "topk":
            return logits, token_choice(logits, self.k, self.capacity_factor, self.causal, position, cache.get("kept"))
        return logits, expert_choice(logits, self.k, self.capacity_factor, self.causal, cache.get("probs"),
                                     cache.get("kept"))

    def _record(self, logits: torch.Tensor, routing: Routing) -> None:
        """Keep the auxiliary loss (in the graph) and the detached routing of this forward."""
        aux = None
        if self.routing == "topk":
            aux = self.balance_weight * load_balancing_loss(routing.probs, routing.candidates)
        if self.routing in ("topk", "expert_choice"):
            z = self.z_weight * router_z_loss(logits)
            aux = z if aux is None else aux + z
        self.aux_loss = aux
        self._last = Routing(**{name: (value.detach() if isinstance(value, torch.Tensor) else value)
                                for name, value in vars(routing).items()})

    # ---- experts ---------------------------------------------------------------------------------------------
    def _slots(self, kept: torch.Tensor):
        """Slot tables of the kept pairs: ``(slot_token [B, E, S], token_slot [B, T, E], S)``.

        Slot s of expert e holds the s-th token (in position order) the expert kept; ``token_slot``
        is where a kept pair sits (pairs not kept point at slot 0 and are weighted 0). ``S`` is the
        capacity of the whole sequence, ``ceil(cf * k * T / E)`` (T without a capacity): it depends on
        T alone, never on the tokens, so no host sync and the same shapes whatever later tokens hold.
        """
        B, T, E = kept.shape
        S = T
        if self.capacity_factor > 0:
            share = self.capacity_factor * self.k / self.n_experts
            S = min(T, int(prefix_capacity(torch.tensor([T - 1]), share)))
        slot = kept.long().cumsum(1) - 1  # [B, T, E]
        target = torch.where(kept, slot, S).transpose(1, 2)  # [B, E, T]; S = a spill slot, dropped below
        positions = torch.arange(T, device=kept.device).expand(B, E, T)
        slot_token = torch.zeros(B, E, S + 1, dtype=torch.long, device=kept.device).scatter_(2, target, positions)
        return slot_token[..., :S], torch.where(kept, slot, 0), S

    def _pre(self, xs: torch.Tensor) -> torch.Tensor:
        """Expert pre-activations ``[..., E, S, h]`` of slot inputs ``xs [..., E, S, d]``."""
        return torch.einsum("...esd,edh->...esh", xs, self.w_in) + self.b_in[:, None]

    def _post(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...esh,ehd->...esd", hidden, self.w_out)

    def combine(self, h: torch.Tensor, routing: Routing) -> torch.Tensor:
        """The routed feed-forward of ``h [B, T, d]`` under ``routing`` -> ``[B, T, d]``."""
        B, T, d = h.shape
        if routing.dispatch is not None:  # Soft MoE
            xs = torch.einsum("btes,btd->besd", routing.dispatch, h.float()).to(h.dtype)  # [B, E, S, d]
            ys = self._post(F.gelu(self._pre(xs))) + self.b_out[:, None]
            return torch.einsum("btes,besd->btd", routing.combine, ys.float()).to(h.dtype)
        slot_token, token_slot, S = self._slots(routing.kept)
        E = self.n_experts
        xs = h.gather(1, slot_token.reshape(B, E * S, 1).expand(-1, -1, d)).view(B, E, S, d)
        ys = self._post(F.gelu(self._pre(xs))) + self.b_out[:, None]  # [B, E, S, d]
        return self._gather_back(ys, token_slot, routing.weights).to(h.dtype)

    @staticmethod
    def _gather_back(ys: torch.Tensor, token_slot: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_e weights[b, t, e] * ys[..., b, e, token_slot[b, t, e]]``: ``ys [..., B, E, S, d]`` -> ``[..., B, T, d]``."""
        lead, d = ys.shape[:-4], ys.shape[-1]
        index = token_slot.transpose(1, 2)[..., None].expand(*lead, *token_slot.transpose(1, 2).shape, d)
        picked = ys.gather(-2, index)  # [..., B, E, T, d]
        return (picked.float() * weights.transpose(1, 2)[..., None]).sum(-3)

    # ---- the forms -------------------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h [B, T, d]`` (normed, a whole sequence from position 0) -> ``[B, T, d]``; records loss and routing."""
        logits, routing = self.route(h)
        self._record(logits, routing)
        return self.combine(h, routing)

    def step(self, h: torch.Tensor, position: int, cache: dict) -> torch.Tensor:
        """One decoding step ``h [B, 1, d]`` at ``position``; ``cache`` carries the kept counts (and prefix probs)."""
        if self.routing == "soft":
            raise NotImplementedError(f"Soft MoE has no causal step: {SOFT_LEAK}")
        _, routing = self.route(h, position, cache)
        if routing.kept_after is not None:
            cache["kept"] = routing.kept_after  # [B, E]
        if self.routing == "expert_choice":
            cache["probs"] = routing.probs if "probs" not in cache else torch.cat([cache["probs"], routing.probs], 1)
        return self.combine(h, routing)

    def linear_mode(self, norm: nn.RMSNorm, x: torch.Tensor, xc: torch.Tensor, bias_index: int) -> torch.Tensor:
        """DePass components ``[C, B, T, d]`` of ``moe(norm(x))``: routing, norm scale and GELU ratios frozen."""
        h = norm(x)
        _, routing = self.route(h)
        hc = norm_linear(norm, x, xc)  # [C, B, T, d]
        C, B, T, d = hc.shape
        if routing.dispatch is not None:
            xs = torch.einsum("btes,btd->besd", routing.dispatch, h.float())
            xs_c = torch.einsum("btes,cbtd->cbesd", routing.dispatch, hc.float())
        else:
            slot_token, token_slot, S = self._slots(routing.kept)
            index = slot_token.reshape(B, -1, 1).expand(-1, -1, d)
            xs = h.gather(1, index).view(B, self.n_experts, S, d)
            xs_c = hc.gather(2, index.expand(C, -1, -1, -1)).view(C, B, self.n_experts, S, d)
        ratio = activation_ratio(self._pre(xs), F.gelu)  # [B, E, S, h] frozen
        pre_c = torch.einsum("cbesd,edh->cbesh", xs_c, self.w_in)
        pre_c[bias_index] += self.b_in[:, None]
        ys_c = self._post(pre_c * ratio)
        ys_c[bias_index] += self.b_out[:, None]
        if routing.dispatch is not None:
            return torch.einsum("btes,cbesd->cbtd", routing.combine, ys_c)
        return self._gather_back(ys_c, token_slot, routing.weights)

    def state_size(self, seq_len: int) -> int:
        """Decoding state: E kept counts, plus the prefix's router probabilities for expert choice."""
        return self.n_experts * (1 + (seq_len if self.routing == "expert_choice" else 0))

    # ---- what it reports -------------------------------------------------------------------------------------
    def routing_stats(self) -> dict:
        """Load per expert (share of processed pairs), dropped share, unrouted tokens, router entropy, aux loss."""
        r = self._last
        if r is None:
            return {}
        processed = r.kept.sum((0, 1)).float()  # [E]
        probs = r.probs.clamp_min(1e-30)
        stats = {"load": [round(v, 5) for v in (processed / processed.sum().clamp_min(1)).tolist()],
                 "dropped": float(1 - r.kept.sum() / r.candidates.sum().clamp_min(1)),
                 "unrouted": float((~r.kept.any(-1)).float().mean()),
                 "experts_per_token": float(r.kept.sum(-1).float().mean()),
                 "entropy": float(-(probs * probs.log()).sum(-1).mean())}
        if self.aux_loss is not None:
            stats["aux_loss"] = float(self.aux_loss.detach())
        return stats

    def token_routes(self) -> dict:
        """Per sequence and token: the experts that processed it, heaviest first, and their combine weights."""
        r = self._last
        if r is None:
            return {}
        weights, order = r.weights.sort(-1, descending=True)  # [B, T, E]
        counts = r.kept.sum(-1)  # [B, T]
        experts = [[order[b, t, :counts[b, t]].tolist() for t in range(order.shape[1])] for b in range(order.shape[0])]
        shares = [[[round(w, 4) for w in weights[b, t, :counts[b, t]].tolist()] for t in range(order.shape[1])]
                  for b in range(order.shape[0])]
        return {"kind": "moe", "routing": self.routing, "n_experts": self.n_experts, "experts": experts,
                "weights": shares}

