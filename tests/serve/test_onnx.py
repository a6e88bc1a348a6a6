"""ONNX export: the wrapper equals the forward; onnxruntime equals PyTorch within 1e-4 at several lengths."""
import contextlib
import io

import pytest
import torch

from sosm.cli import main
from sosm.model import SOSMConfig, SOSMModel
from sosm.serve.onnx_export import ExportError, OnnxForward, check_exportable, export_onnx, graph_inputs, verify_onnx

from .conftest import KINDS

TOLERANCE = 1e-4  # fp32 max |logit difference|, the bar (measured: ~1e-7 random, ~5e-6 trained Mamba)


def tiny(kind: str, **extra) -> SOSMModel:
    torch.manual_seed(0)
    graph = {"k": 3, "window": 1, "num_landmarks": 3} if kind in ("hybrid", "graph_attention") else {"num_landmarks": 0}
    return SOSMModel(SOSMConfig(model=kind, vocab_size=40, max_seq_len=24, d_model=16, n_heads=2, n_layers=2,
                                d_state=4, struct_dim=4, graph=graph, **extra)).eval()


@pytest.mark.parametrize("kind,positional,structure", [
    ("transformer", "rope", "landmarks"), ("mamba", "rope", "landmarks"), ("hybrid", "rope", "landmarks"),
    ("graph_attention", "graph_rope", "landmarks"), ("graph_attention", "graph_alibi", "landmarks"),
    ("hybrid", "rope", "rwpe"), ("graph_attention", "graph_alibi", "rwpe")])
def test_wrapper_with_graph_inputs_equals_the_forward(kind, positional, structure):
    model = tiny(kind, positional=positional, structure=structure)
    for length in (1, 9, 24):
        ids = torch.randint(0, 40, (2, length), generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            got = OnnxForward(model)(**graph_inputs(model, ids))
            torch.testing.assert_close(got, model(ids)[0], rtol=0, atol=0)


def test_models_that_cannot_export_say_why():
    with pytest.raises(ExportError, match="long-term memory .*hnswlib"):
        check_exportable(tiny("hybrid", memory=True))
    from sosm.train.quantize import quantize_model

    with pytest.raises(ExportError, match="INT8-quantized.*export the float checkpoint"):
        check_exportable(quantize_model(tiny("mamba")))


def test_rwpe_models_take_the_walk_as_their_graph_input():
    model = tiny("hybrid", structure="rwpe", rwpe_steps=5, positional="graph_alibi")
    check_exportable(model)  # exports (the walk is a graph input, like the landmark BFS)
    feeds = graph_inputs(model, torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(1)))
    assert list(feeds) == ["input_ids", "neighbors", "rwpe"] and feeds["rwpe"].shape == (2, 7, 5)
    assert feeds["rwpe"].dtype == torch.float32 and 0 <= feeds["rwpe"].min() and feeds["rwpe"].max() <= 1
    with torch.no_grad():  # the input is read: another walk gives other logits
        base = OnnxForward(model)(**feeds)
        other_walk = torch.rand(feeds["rwpe"].shape, generator=torch.Generator().manual_seed(2))
        other = OnnxForward(model)(**{**feeds, "rwpe": other_walk})
    assert (base - other).abs().max() > 1e-4


@pytest.mark.slow  # one export takes ~10-40 s on the 2-core CPU
@pytest.mark.parametrize("kind", KINDS)
def test_onnxruntime_equals_pytorch_at_several_lengths(kind, tmp_path):
    model = tiny(kind)
    result = export_onnx(model, tmp_path / f"{kind}.onnx")
    assert result.dynamic_axes["input_ids"] == {"0": "batch", "1": "seq"}
    errors = verify_onnx(model, result.path, lengths=(1, 2, 9, 17, 24), batch=3)
    assert max(errors.values()) <= TOLERANCE, errors
    errors = verify_onnx(model, result.path, lengths=(5,), batch=1)  # another batch size: dynamic
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.slow  # one export, ~20 s on the 2-core CPU
def test_an_rwpe_hybrid_exports_and_onnxruntime_equals_pytorch(tmp_path):
    model = tiny("hybrid", structure="rwpe", positional="graph_alibi", rwpe_steps=4)
    result = export_onnx(model, tmp_path / "rwpe.onnx")
    assert result.inputs == ["input_ids", "neighbors", "rwpe"]
    assert result.dynamic_axes["rwpe"] == {"0": "batch", "1": "seq"}
    errors = verify_onnx(model, result.path, lengths=(1, 9, 24), batch=2)
    assert max(errors.values()) <= TOLERANCE, errors


@pytest.mark.slow
def test_cli_exports_a_trained_checkpoint_and_checks_it(tiny_runs, tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        code = main(["export", "--checkpoint", str(tiny_runs["hybrid"]), "--format", "onnx", "--out",
                     str(tmp_path / "h.onnx"), "--verify-lengths", "1,6,24", "--json", str(tmp_path / "h.json")])
    assert code == 0, printed.getvalue()
    assert "PASS" in printed.getvalue() and "neighbors" in printed.getvalue()
    import json

    report = json.loads((tmp_path / "h.json").read_text())
    assert set(report["max_abs_error"]) == {"1", "6", "24"} and max(report["max_abs_error"].values()) <= TOLERANCE
    assert report["inputs"] == ["input_ids", "neighbors", "landmark_distances"]
