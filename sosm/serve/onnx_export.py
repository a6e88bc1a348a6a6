"""ONNX export of a model's parallel forward: ``input_ids [B, T]`` (+ the graph) -> ``logits [B, T, V]``.

**The graph is an input.** The graph models (``hybrid``, ``graph_attention``) build their semantic
graph with ``sosm.graph.GraphBuilder``: a top-k whose kept edges depend on the values (adaptive K,
the mutual filter, the similarity threshold), landmark BFS distances computed by scipy or the
native C code, Python loops over windows. None of that is a tensor program ``torch.export`` can
trace, and an ONNX copy of it would be a second implementation to keep equal to the first. So
the exported graph takes what the layers read from the graph, built by the same PyTorch builder
(:func:`graph_inputs`, i.e. ``SOSMModel.build_graph``):

==================== ===================== =====================================================
input                shape, dtype          meaning
==================== ===================== =====================================================
``input_ids``        ``[B, T]`` int64      token ids in ``[0, vocab_size)``, ``1 <= T <= max_seq_len``
``neighbors``        ``[B, T, Kn]`` int64  graph models: key positions of each query's edges, -1 padded
``landmark_distances`` ``[B, T, L]`` int64 graph models with landmarks: hop distances (``UNREACHABLE`` = 32767)
``rwpe``             ``[B, T, W]`` float32 graph models with ``structure="rwpe"``: causal random-walk return
                                           probabilities, ``W = rwpe_steps`` (``SOSMModel.random_walk``)
==================== ===================== =====================================================

Batch, length and ``Kn`` are dynamic axes; ``L`` and ``W`` are the config's. The Transformer and
Mamba take ``input_ids`` only. The front end, the structural encoding of the landmark distances
or the walk (each computed outside, as the graph is), positions, every mixer and the head are
inside the ONNX graph. While ``torch.compiler.is_exporting()``, the kernels take traceable paths
(``sosm.kernels``): graph attention its dense reference, the causal convolution ``F.conv1d``, the
selective scan one ``torch.ops.higher_order.scan`` (an ONNX ``Scan``), so any length runs. The
exported program is checked against PyTorch by :func:`verify_onnx` (onnxruntime, several lengths;
the tests hold it within 1e-4 at fp32).

Models that cannot export raise :class:`ExportError` saying why: a model with long-term memory
(HNSW retrieval through hnswlib, outside any tensor program), an INT8 checkpoint (dynamic
quantized linears have no ONNX mapping in the exporter: export the float checkpoint), a mixer
whose forward does not trace (the exporter's first error line is quoted).

Example:
    >>> from sosm.model import SOSMConfig, SOSMModel
    >>> model = SOSMModel(SOSMConfig(model="transformer", d_model=16, n_heads=2, n_layers=1, vocab_size=20))
    >>> result = export_onnx(model.eval(), "/tmp/tiny.onnx")          # doctest: +SKIP
    >>> verify_onnx(model, "/tmp/tiny.onnx", lengths=(1, 5))          # doctest: +SKIP
    {'1': 2.9e-08, '5': 5.9e-08}
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..model.context import LayerContext
from ..model.positional import landmark_coordinates, walk_coordinates

INPUT_NAMES = ("input_ids", "neighbors", "landmark_distances", "rwpe")
OUTPUT_NAMES = ("logits",)
MAX_BATCH = 4096


class ExportError(ValueError):
    """This model cannot be exported; the message says why and what can be done instead."""


class OnnxForward(nn.Module):
    """``SOSMModel.forward`` with the graph given as inputs (module docstring), logits only.

    Args:
        model: a ``SOSMModel`` in eval mode.

    Shapes: ``forward(input_ids [B, T], neighbors [B, T, Kn] = None, landmark_distances [B, T, L] = None,
    rwpe [B, T, W] = None) -> logits [B, T, V]``; equal to ``model(input_ids)[0]`` given :func:`graph_inputs`
    (tested).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, neighbors=None, landmark_distances=None, rwpe=None):
        model = self.model
        ids = model.check_input_ids(input_ids)  # [B, T]
        ctx = LayerContext()
        if model.config.uses_graph:
            _, _, _, x = model.front(ids)  # [B, T, d]
            ctx.neighbors = neighbors  # [B, T, Kn]
            if model.use_structure:
                max_distance = model.config.graph.max_distance
                coords = (landmark_coordinates(landmark_distances, max_distance) if model.use_landmarks
                          else walk_coordinates(rwpe, max_distance))  # [B, T, L or W]
                ctx.structure, ctx.alibi_coords = model.structure(coords), coords  # [B, T, S]
        else:
            x = model.embedding(ids)  # [B, T, d]
        ctx.angles = model.positions(ids.shape[1], 0, ctx.alibi_coords, ids.device)
        x, _ = model.stack(x, ctx)
        return model.logits_from_hidden(x)  # [B, T, V] float32


def input_names(model) -> list[str]:
    """The exported graph's input names for this model (module docstring's table)."""
    if not model.config.uses_graph:
        return ["input_ids"]
    if not model.use_structure:
        return list(INPUT_NAMES[:2])
    return [*INPUT_NAMES[:2], "landmark_distances" if model.use_landmarks else "rwpe"]


@torch.no_grad()
def graph_inputs(model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The exported graph's inputs for ``input_ids [B, T]``: ids, and the graph built by the model's PyTorch builder."""
    ids = model.check_input_ids(input_ids)
    feeds = {"input_ids": ids}
    if model.config.uses_graph:
        _, semantic, temporal, _ = model.front(ids)
        graph, neighbors, distances = model.build_graph(semantic, temporal)
        feeds["neighbors"] = neighbors.long().contiguous()  # [B, T, Kn] (a copy: the builder's frame is longer)
        if model.use_landmarks:
            feeds["landmark_distances"] = distances.long().contiguous()  # [B, T, L]
        elif model.use_structure:
            feeds["rwpe"] = model.random_walk(graph, ids.shape[1]).float().contiguous()  # [B, T, W]
    return feeds


def check_exportable(model) -> None:
    """Raise :class:`ExportError` when ``model`` cannot be exported (module docstring)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "stack"):
        raise ExportError(f"{type(model).__name__} is not a SOSMModel; only SOSMModel checkpoints export")
    quantized = [name for name, module in model.named_modules() if type(module).__module__.startswith("torch.ao.nn")]
    if quantized:
        raise ExportError("this checkpoint is INT8-quantized (dynamic quantized linear layers such as "
                          f"{quantized[0]!r} have no ONNX mapping in torch.onnx's exporter); export the float "
                          "checkpoint it was made from, then quantize with onnxruntime if wanted")
    if config.memory:
        raise ExportError("this model reads a long-term memory (memory=True): HNSW retrieval runs in hnswlib, outside "
                          "any tensor program, so it cannot be part of an ONNX graph; export a model without memory")


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote."""

    path: Path
    inputs: list
    dynamic_axes: dict
    seconds: float
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "inputs": self.inputs, "outputs": list(OUTPUT_NAMES),
                "dynamic_axes": self.dynamic_axes, "export_seconds": round(self.seconds, 2), "notes": self.notes}


def _example(model, batch: int, length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
    return graph_inputs(model, ids)


def export_onnx(model, path, *, example_length: int = 9) -> ExportResult:
    """Export ``model`` (eval mode, CPU, float32) to the ONNX file ``path`` with dynamic batch and length.

    Args:
        model: a ``SOSMModel``.
        path: the ``.onnx`` file to write (its folder is created).
        example_length: length of the example the program is traced on (any length runs afterwards).

    Raises:
        ExportError: the model cannot export (the message says why).
    """
    check_exportable(model)
    model = model.eval()
    names = input_names(model)
    max_len = model.config.max_seq_len
    example = _example(model, 2, max(2, min(example_length, max_len)))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=max_len)
    axes = {"input_ids": {0: batch, 1: seq}, "neighbors": {0: batch, 1: seq, 2: torch.export.Dim("neighbors", min=1)},
            "landmark_distances": {0: batch, 1: seq}, "rwpe": {0: batch, 1: seq}}
    kwargs = {name: example[name] for name in names}  # by name: the structure input is landmark_distances or rwpe
    dynamic = {name: axes[name] for name in names}
    start = time.perf_counter()
    wrapper = OnnxForward(model).eval()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.export.export(wrapper, (), kwargs=kwargs, dynamic_shapes=dynamic, strict=False)
            onnx_program = torch.onnx.export(program, (), kwargs=kwargs, input_names=names,
                                             output_names=list(OUTPUT_NAMES), dynamo=True, verbose=False)
    except Exception as err:  # torch.export raises many types; the first line says what did not trace
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"the {model.config.model} model ({','.join(model.config.layer_types)}) did not export: "
                          f"{type(err).__name__}: {first}") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path))
    seconds = time.perf_counter() - start
    dims = {name: {str(axis): dim.__name__ for axis, dim in axes[name].items()} for name in names}
    notes = []
    if model.config.uses_graph:
        walk = " and SOSMModel.random_walk" if "rwpe" in names else ""
        notes.append(f"graph inputs come from SOSMModel.build_graph{walk} (sosm.serve.onnx_export.graph_inputs)")
    return ExportResult(path, names, dims, seconds, notes)


@torch.no_grad()
def verify_onnx(model, path, *, lengths: Sequence[int] = (1, 7, 16), batch: int = 2, seed: int = 0) -> dict[str, float]:
    """Max absolute difference between onnxruntime and PyTorch logits at each length (random ids, ``batch`` rows)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = [node.name for node in session.get_inputs()]
    generator = torch.Generator().manual_seed(seed)
    errors = {}
    for length in lengths:
        if not 1 <= length <= model.config.max_seq_len:
            raise ValueError(f"lengths holds {length}; accepted: 1..max_seq_len={model.config.max_seq_len}")
        ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=generator)
        feeds = graph_inputs(model, ids)
        out = session.run(None, {name: feeds[name].numpy() for name in wanted})[0]
        reference = model(ids)[0]
        errors[str(length)] = float((torch.from_numpy(out) - reference).abs().max())
    return errors
