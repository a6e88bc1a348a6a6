"""Prometheus metrics of one server, in a registry of its own (``GET /metrics``).

========================================== ========= ===================================================
name                                       type      labels / meaning
========================================== ========= ===================================================
``sosm_requests_total``                    counter   ``route``, ``status``: answered requests
``sosm_request_duration_seconds``          histogram ``route``: from the request's arrival to its last byte
``sosm_generated_tokens_total``            counter   tokens sampled by ``/v1/completions``
``sosm_prompt_tokens_total``               counter   prompt tokens fed
``sosm_queue_depth``                       gauge     requests waiting for the model (not yet running)
``sosm_requests_running``                  gauge     requests the model is running (0 or 1)
``sosm_queue_rejections_total``            counter   requests answered 429 (queue full)
``sosm_model_load_seconds``                gauge     time to load the checkpoint at start
``sosm_model_info``                        gauge     1, labels ``model``, ``checkpoint``, ``quantized``
``process_*``, ``python_*``                          the standard process collector: RSS, CPU, open fds
========================================== ========= ===================================================

Routes outside the API are counted under ``route="other"`` (no label per unknown path).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, PlatformCollector, ProcessCollector, disable_created_metrics

ROUTES = ("/v1/completions", "/v1/graph", "/v1/inspect", "/healthz", "/metrics")
#: request latency buckets in seconds: a ms-scale health check to a minute-long inspect report
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The server's collectors; ``render()`` is the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        disable_created_metrics()  # no ``*_created`` series beside each counter (process-wide: the server's process)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("sosm_requests", "Answered requests", ["route", "status"], registry=r)
        self.latency = Histogram("sosm_request_duration_seconds", "Request latency, arrival to last byte", ["route"],
                                 buckets=BUCKETS, registry=r)
        self.generated_tokens = Counter("sosm_generated_tokens", "Tokens sampled by /v1/completions", registry=r)
        self.prompt_tokens = Counter("sosm_prompt_tokens", "Prompt tokens fed to the model", registry=r)
        self.queue_depth = Gauge("sosm_queue_depth", "Requests waiting for the model", registry=r)
        self.running = Gauge("sosm_requests_running", "Requests the model is running", registry=r)
        self.rejections = Counter("sosm_queue_rejections", "Requests answered 429 (queue full)", registry=r)
        self.model_load_seconds = Gauge("sosm_model_load_seconds", "Seconds to load the checkpoint", registry=r)
        self.model_info = Gauge("sosm_model_info", "The served model", ["model", "checkpoint", "quantized"],
                                registry=r)

    @staticmethod
    def route_label(path: str) -> str:
        return path if path in ROUTES else "other"

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = self.route_label(path)
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
