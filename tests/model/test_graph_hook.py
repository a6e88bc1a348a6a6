"""Which top-k the model's graph builder uses on CUDA (issue 12 item 14): the fused kernel only for the k it holds."""
import torch

from sosm.kernels.topk_similarity import MAX_K, topk_similarity

from .conftest import tiny_model


def test_cuda_builder_uses_the_kernel_only_within_its_k_limit():
    cuda = torch.device("cuda")  # building a GraphBuilder allocates nothing: no GPU needed
    small = tiny_model("hybrid", graph={"k": 4, "window": 1, "max_distance": 16})
    assert small.graph_builder(cuda).topk_fn is topk_similarity
    large = tiny_model("hybrid", graph={"k": MAX_K + 1, "k_max": MAX_K + 1, "window": 1, "max_distance": 16},
                       max_seq_len=64)
    assert large.graph_builder(cuda).topk_fn is None  # streaming top-k instead of the kernel's ValueError
    assert small.graph_builder(torch.device("cpu")).topk_fn is None
