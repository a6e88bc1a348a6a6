"""Serving a trained model: ONNX export, the HTTP server and its client (``sosm export`` / ``sosm serve``).

=================================== ===============================================================
module                              what
=================================== ===============================================================
:mod:`~sosm.serve.onnx_export`      the forward as ONNX, the graph as inputs; checked with onnxruntime
:mod:`~sosm.serve.app`              the FastAPI app: /v1/completions, /v1/graph, /v1/inspect, /healthz, /metrics
:mod:`~sosm.serve.queue`            one model worker behind a bounded queue (429 beyond it)
:mod:`~sosm.serve.limits`           the limits and the status each is answered with
:mod:`~sosm.serve.metrics`          the Prometheus metrics
:mod:`~sosm.serve.server`           uvicorn, with a drain on SIGTERM
:mod:`~sosm.serve.client`           a standard-library client
=================================== ===============================================================

INT8 quantization lives with the checkpoints (``sosm.train.quantize``) so that every loader reads
quantized checkpoints. Names are imported on first use, so ``import sosm.serve`` needs neither
FastAPI nor onnxruntime.
"""
import importlib

_WHERE = {"ServeLimits": "limits", "ModelQueue": "queue", "QueueFull": "queue", "create_app": "app",
          "serve": "server", "SOSMClient": "client", "APIError": "client", "ExportError": "onnx_export",
          "OnnxForward": "onnx_export", "export_onnx": "onnx_export", "graph_inputs": "onnx_export",
          "verify_onnx": "onnx_export"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'sosm.serve' has no attribute {name!r}")
