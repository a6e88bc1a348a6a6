"""Tiny models for the analysis tests."""
import torch

from sosm.model import SOSMConfig, SOSMModel

VOCAB = 40
SEQ = 12

#: (model, positional) covering every layer type (A, M, T) and every attention positional encoding
CASES = [("transformer", "rope"), ("mamba", "rope"), ("graph_attention", "graph_rope"),
         ("graph_attention", "graph_alibi"), ("hybrid", "rope")]


def tiny_model(model: str, positional: str = "rope", seed: int = 0, n_layers: int = 2, vocab: int = VOCAB) -> SOSMModel:
    """A small random model with perturbed weights (so no component is trivially zero), in eval mode."""
    torch.manual_seed(seed)
    graph = model in ("hybrid", "graph_attention")
    config = SOSMConfig(model=model, vocab_size=vocab, max_seq_len=24, d_model=16, n_heads=2, n_layers=n_layers,
                        d_state=4, expand=2, struct_dim=4, positional=positional,
                        graph={"k": 3, "window": 1, "num_landmarks": 3 if graph else 0})
    net = SOSMModel(config).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def tiny_ids(batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))
