"""Dynamic INT8 quantization: every model kind, logits near fp32, checkpoints that load like any other."""
import contextlib
import io

import pytest
import torch

from sosm.cli import main
from sosm.model import SOSMConfig, SOSMModel
from sosm.train.quantize import FLOAT_PREFIXES, SKIP, quantizable_linears, quantize_model

from .conftest import KINDS

#: measured: max |int8 - fp32 logit| / max |fp32 logit| on these models stays below 0.03 (largest seen 0.012)
RELATIVE_TOLERANCE = 0.03


def tiny(kind: str) -> SOSMModel:
    torch.manual_seed(0)
    graph = {"num_landmarks": 3} if kind in ("hybrid", "graph_attention") else {"num_landmarks": 0}
    return SOSMModel(SOSMConfig(model=kind, vocab_size=50, max_seq_len=32, d_model=32, n_heads=2, n_layers=2,
                                d_state=4, struct_dim=4, graph=graph)).eval()


@pytest.mark.parametrize("kind", [*KINDS, "graph_attention"])
def test_every_kind_quantizes_and_stays_close(kind):
    model = tiny(kind)
    quantized = quantize_model(model)
    names = quantizable_linears(model)
    modules = dict(quantized.named_modules())
    assert names and all(modules[n]._get_name() == "DynamicQuantizedLinear" for n in names)
    kept = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and n not in names]
    assert all(type(modules[n]) is torch.nn.Linear for n in kept)  # float: read directly, or the graph's states
    assert all(n.endswith(SKIP) or n.startswith(FLOAT_PREFIXES) for n in kept)
    ids = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (want, state), (got, qstate) = model(ids), quantized(ids)
    if model.config.uses_graph:  # the states the graph is built from stay float: the same graph
        assert torch.equal(state.graph.edge_index, qstate.graph.edge_index)
    relative = float((got - want).abs().max() / want.abs().max())
    assert relative < RELATIVE_TOLERANCE, relative
    out = quantized.generate(ids[:1, :5], max_new_tokens=4, seed=0)  # incremental decoding through int8 layers
    assert out.shape == (1, 9)
    assert model.stack.layers[0].__class__ is quantized.stack.layers[0].__class__  # the caller's model untouched
    assert type(model.stack.layers[0].out_proj) is torch.nn.Linear


def run_cli(*argv) -> tuple[int, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(list(argv))
    return code, printed.getvalue()


@pytest.mark.slow  # trains three tiny runs (session fixture) and round-trips each through the CLI
@pytest.mark.parametrize("kind", KINDS)
def test_quantized_checkpoint_loads_like_any_other(tiny_runs, tmp_path, kind):
    from sosm.train.loading import load_trained

    out = tmp_path / "int8"
    code, printed = run_cli("quantize", "--checkpoint", str(tiny_runs[kind]), "--out", str(out))
    assert code == 0 and "-> int8" in printed, printed
    source, loaded = load_trained(tiny_runs[kind]), load_trained(out)
    assert loaded.quantized and loaded.label.endswith("[int8]")
    assert (loaded.checkpoint.path / "model.safetensors").stat().st_size < \
        (source.checkpoint.path / "model.safetensors").stat().st_size  # (embeddings dominate this tiny model)
    ids = torch.tensor([source.tokenizer.encode("To be, or not")])
    with torch.no_grad():
        in_memory = quantize_model(source.model)(ids)[0]
        torch.testing.assert_close(loaded.model(ids)[0], in_memory, rtol=0, atol=0)  # stored scales: exact
    code, printed = run_cli("generate", "--checkpoint", str(out), "--prompt", "To be", "--max-new-tokens", "5")
    assert code == 0 and printed.startswith("To be"), printed
    code, printed = run_cli("eval", "--checkpoint", str(out), "--max-tokens", "100")
    assert code == 0 and "[int8]" in printed and "loss" in printed, printed
    code, printed = run_cli("quantize", "--checkpoint", str(out), "--out", str(tmp_path / "again"))
    assert code == 2 and "already quantized" in printed
    code, printed = run_cli("quantize", "--checkpoint", str(tiny_runs[kind]), "--out", str(out))
    assert code == 2 and "not an empty folder" in printed
    code, printed = run_cli("export", "--checkpoint", str(out), "--out", str(tmp_path / "m.onnx"))
    assert code == 2 and "INT8-quantized" in printed and "export the float checkpoint" in printed
