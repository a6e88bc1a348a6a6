"""Threshold filter and temporal-gated acceptance against their written rules."""
import torch
from hypothesis import given, settings, strategies as st

from sosm.graph.filters import gated_acceptance, threshold_filter


def test_hand_checked():
    sim = torch.tensor([0.2, 0.3, 0.31, 0.85, 0.5])
    gate = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.5])
    assert threshold_filter(sim, 0.3).tolist() == [False, False, True, True, True]
    assert gated_acceptance(sim, gate, 0.3, 0.5, 0.8).tolist() == [False, False, True, True, False]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1, width=32), st.floats(0, 1, width=32)), min_size=0, max_size=20),
       st.floats(-1, 1, width=32), st.floats(0, 1, width=32), st.floats(-1, 1, width=32))
def test_matches_rule(pairs, tau_mu, tau_t, tau_high):
    sim = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
    gate = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    got = gated_acceptance(sim, gate, tau_mu, tau_t, tau_high).tolist()
    want = [(s > tau_mu and g > tau_t) or s > tau_high for s, g in zip(sim.tolist(), gate.tolist())]
    assert got == want
    assert threshold_filter(sim, tau_mu).tolist() == [s > tau_mu for s in sim.tolist()]
