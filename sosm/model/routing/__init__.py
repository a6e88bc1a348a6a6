"""Routing of tokens to experts and through blocks: causal capacity, routers, auxiliary losses, statistics.

The layers that route are the MoE feed-forward (:mod:`sosm.model.mixers.moe`, in the MLP slot of
the attention mixers: ``SOSMConfig.moe_experts``) and the Mixture-of-Depths wrapper
(:mod:`sosm.model.mixers.mod`: ``mod:<mixer>`` layers, ``SOSMConfig.mod_every``). This package
holds what they share and what the trainer reads:

- :mod:`.capacity` — prefix capacity, clipping in position order, prefix ranks (the causal forms);
- :mod:`.routers` — token choice (top-k, Switch), expert choice, Soft MoE;
- :mod:`.losses` — Switch load balancing and router z-loss;
- :mod:`.stats` — :func:`auxiliary_loss` and :func:`routing_stats` of any model.
"""
from .capacity import clip_to_capacity, prefix_capacity, rank_scores
from .losses import load_balancing_loss, router_z_loss
from .routers import Routing, expert_choice, soft_routing, token_choice
from .stats import auxiliary_loss, routing_layers, routing_stats, token_routes

__all__ = ["Routing", "auxiliary_loss", "clip_to_capacity", "expert_choice", "load_balancing_loss", "prefix_capacity",
           "rank_scores", "router_z_loss", "routing_layers", "routing_stats", "soft_routing", "token_choice",
           "token_routes"]
