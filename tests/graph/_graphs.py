"""Hand-built SemanticGraphs for the conversion/io/view tests (no GraphBuilder needed)."""
import torch

from sosm.graph.types import EDGE_TYPE_ID, STAGE_ID, SemanticGraph, empty_edge_columns


def sample_graph(causal=True, with_memory=False, seed=0):
    """B=2, T=6: window edges, a few semantic edges with provenance, one shortcut, optional memory edge."""
    gen = torch.Generator().manual_seed(seed)
    T = 6
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 3), (1, 4), (0, 5), (2, 5)]
    types = ["sequential"] * 5 + ["semantic"] * 3 + ["shortcut"]
    stages = ["window"] * 5 + ["topk", "topk", "temporal_gate", "fibonacci"]
    if not causal:
        pairs += [(5, 0)]
        types += ["semantic"]
        stages += ["mutual"]
    src = [s + b * T for b in range(2) for s, _ in pairs]
    dst = [d + b * T for b in range(2) for _, d in pairs]
    E = len(src)
    cols = empty_edge_columns(E)
    cols["edge_type"] = torch.tensor([EDGE_TYPE_ID[t] for t in types] * 2)
    cols["stage"] = torch.tensor([STAGE_ID[s] for s in stages] * 2)
    sem = cols["edge_type"] == EDGE_TYPE_ID["semantic"]
    cols["block_similarity"][sem] = torch.rand(int(sem.sum()), 16, generator=gen)
    cols["similarity"][sem] = torch.rand(int(sem.sum()), generator=gen)
    cols["dominant_block"][sem] = cols["block_similarity"][sem].argmax(1)
    cols["edge_weight"] = torch.rand(E, generator=gen)
    cols["gate_score"][cols["stage"] == STAGE_ID["temporal_gate"]] = 0.75
    edge_index = torch.tensor([src, dst])
    if with_memory:
        extra = empty_edge_columns(1)
        extra["edge_type"][:] = EDGE_TYPE_ID["memory"]
        extra["stage"][:] = STAGE_ID["memory"]
        edge_index = torch.cat([edge_index, torch.tensor([[12], [4]])], dim=1)
        cols = {k: torch.cat([v, extra[k]]) for k, v in cols.items()}
    tokens = [["the", "cat", "sat", "on", "the", "mat"], ["a", "<b>", "c&d", "d", "e", "f"]]
    return SemanticGraph(edge_index=edge_index, **cols, batch_size=2, seq_len=T, causal=causal,
                         padding_mask=torch.tensor([[True] * 6, [True] * 6]),
                         landmarks=torch.tensor([[0, 3], [0, 3]]),
                         landmark_distances=torch.randint(0, 4, (2, T, 2), generator=gen), tokens=tokens,
                         memory_meta=[{"entry": 0}] if with_memory else None).validate()
