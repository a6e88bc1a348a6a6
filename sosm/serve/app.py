"""The HTTP API of ``sosm serve`` (FastAPI): completions, graph, inspect, health and metrics.

=========================== =================================================================
route                       answer
=========================== =================================================================
``POST /v1/completions``    OpenAI's completion object for ``prompt``, ``max_tokens``, ``temperature``
                            (0: greedy), ``top_k``, ``seed``, ``stream`` (server-sent events, then
                            ``data: [DONE]``); ``model``, ``n`` (= 1) and ``user`` are accepted. The
                            tokens are ``model.generate``'s for the seed (``token_ids`` in each choice;
                            a request without a seed gets one drawn and returned in ``seed``)
``POST /v1/graph``          ``{"text", "nodes", "k", "window", "causal", "num_landmarks"}`` -> the graph
                            JSON ``sosm graph --states CHECKPOINT`` writes for that text
``POST /v1/inspect``        ``{"text", "ablations"}`` -> the ``report.json`` of ``sosm inspect``
``GET /healthz``            ``{"status": "ok", model, checkpoint, queue, limits}``
``GET /metrics``            Prometheus text (:mod:`sosm.serve.metrics`)
=========================== =================================================================

Request bodies are read as JSON whatever their ``Content-Type`` (``curl -d`` sends form encoding).
Every model call goes through one :class:`~sosm.serve.queue.ModelQueue` (queued, not batched: see
there); limits and their statuses are :mod:`sosm.serve.limits`'s. The graph and inspect
computations are passed in (``graph_fn``, ``inspect_fn``) by ``sosm serve``, which shares them with
``sosm graph`` and ``sosm inspect``, so the answers are those commands' own.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from contextlib import asynccontextmanager
from typing import Callable, Literal, Optional

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..model.generation import iter_generate
from .limits import ServeLimits
from .metrics import Metrics
from .queue import ModelQueue, QueueFull


class ApiError(Exception):
    """An error answered with ``status`` and OpenAI's error body."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind


def error_body(message: str, kind: str = "invalid_request_error", param=None, code=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class CompletionRequest(BaseModel):
    """The subset of OpenAI's ``/v1/completions`` request served here; unknown fields are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_k: Optional[int] = Field(None, ge=1)
    seed: Optional[int] = Field(None, ge=0, lt=2 ** 63)
    stream: bool = False
    model: Optional[str] = None  # accepted for OpenAI clients; the server has one model
    n: int = Field(1, ge=1, le=1)
    user: Optional[str] = None


class GraphRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    nodes: Literal["token", "word"] = "token"
    k: Optional[int] = Field(None, ge=1)
    window: Optional[int] = Field(None, ge=0)
    causal: Optional[bool] = None
    num_landmarks: Optional[int] = Field(None, ge=0)


class InspectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    ablations: bool = False


class _Observe:
    """Pure ASGI middleware: the body-size bound (413 before parsing) and per-route metrics to the last byte."""

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive)
                if body is None:
                    too_big = JSONResponse(error_body(
                        f"request body exceeds max_body_bytes={self.max_body_bytes}", param="body",
                        code="body_too_large"), status_code=413)
                    return await too_big(scope, receive, observed_send)
                receive = _replay(body, receive)
                headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}  # JSON whatever sent
            await self.app(scope, receive, observed_send)
        except Exception:
            self.metrics.observe(scope["path"], 500, time.perf_counter() - start)
            raise

    async def _read_body(self, scope, receive) -> Optional[bytes]:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = [False]

    async def replay():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls: wait for the disconnect, as the real receive would

    return replay


def create_app(trained, *, limits: ServeLimits = ServeLimits(), graph_fn: Optional[Callable] = None,
               inspect_fn: Optional[Callable] = None, load_seconds: float = 0.0) -> FastAPI:
    """The FastAPI app serving ``trained`` (a ``sosm.train.loading.TrainedModel`` on CPU).

    Args:
        trained: the loaded checkpoint (model in eval mode, tokenizer, config).
        limits: :class:`~sosm.serve.limits.ServeLimits`.
        graph_fn: ``(text, options dict) -> graph JSON dict`` for ``/v1/graph`` (None: 501).
        inspect_fn: ``(text, ablations) -> report dict`` for ``/v1/inspect`` (None: 501).
        load_seconds: the checkpoint's load time, exported as ``sosm_model_load_seconds``.
    """
    model, tokenizer = trained.model, trained.tokenizer
    metrics = Metrics()
    metrics.model_load_seconds.set(load_seconds)
    metrics.model_info.labels(model=trained.label, checkpoint=str(trained.checkpoint.path),
                              quantized=str(bool(getattr(trained, "quantized", False))).lower()).set(1)

    def queue_changed(waiting: int, running: int) -> None:
        metrics.queue_depth.set(waiting)
        metrics.running.set(running)

    queue = ModelQueue(limits.queue_size, on_change=queue_changed)
    max_seq_len = model.config.max_seq_len
    prompt_limit = limits.prompt_limit(max_seq_len)
    context = min(max_seq_len, int(trained.config.data.block_size))

    @asynccontextmanager
    async def lifespan(app):
        yield
        queue.shutdown()  # uvicorn has drained the in-flight requests by now

    app = FastAPI(title="sosm serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.queue, app.state.metrics, app.state.limits = queue, metrics, limits

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return JSONResponse(error_body(err.message, err.kind, err.param, err.code), status_code=err.status)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, err: QueueFull):
        metrics.rejections.inc()
        return JSONResponse(error_body(str(err), "rate_limit_error", code="queue_full"), status_code=429,
                            headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        errors = err.errors()
        broken = [e for e in errors if e.get("type") == "json_invalid"]
        if broken:
            detail = broken[0].get("ctx", {}).get("error", broken[0].get("msg", ""))
            return JSONResponse(error_body(f"malformed JSON body: {detail}", code="malformed_json"), status_code=400)
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
                 for e in errors]
        first = errors[0].get("loc", ()) if errors else ()
        param = ".".join(str(p) for p in first if p != "body") or None
        return JSONResponse(error_body("; ".join(parts), param=param, code="invalid_request"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse(error_body(str(err.detail), code=f"http_{err.status_code}"), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": trained.label, "checkpoint": str(trained.checkpoint.path),
                "step": trained.checkpoint.step, "max_seq_len": max_seq_len,
                "queue": {"waiting": queue.waiting, "running": queue.running, "capacity": queue.capacity},
                "limits": {**limits.to_dict(), "max_prompt_tokens": prompt_limit}}

    @app.get("/metrics")
    async def metrics_route():
        return Response(metrics.render(), media_type=metrics.content_type)

    def encode_prompt(req: CompletionRequest) -> list[int]:
        ids = tokenizer.encode(req.prompt)
        if not ids:
            raise ApiError(400, "prompt encodes to no tokens", param="prompt", code="empty_prompt")
        if len(ids) > prompt_limit:
            raise ApiError(400, f"prompt has {len(ids)} tokens; limit max_prompt_tokens={prompt_limit}",
                           param="prompt", code="prompt_too_long")
        if req.max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens={req.max_tokens} exceeds the limit max_tokens={limits.max_tokens}",
                           param="max_tokens", code="max_tokens_too_large")
        return ids

    def tokens_of(prompt_ids, req, seed, cancelled=None, emit=None) -> list[int]:
        """Runs on the worker: ``model.generate``'s tokens for this seed, one at a time."""
        out = []
        steps = iter_generate(model, torch.tensor([prompt_ids], dtype=torch.long), req.max_tokens,
                              temperature=req.temperature, top_k=req.top_k, seed=seed)
        try:
            for next_ids in steps:
                out.append(int(next_ids[0]))
                if emit is not None:
                    emit(out[-1])
                if cancelled is not None and cancelled.is_set():
                    break
        finally:
            steps.close()
        metrics.prompt_tokens.inc(len(prompt_ids))
        metrics.generated_tokens.inc(len(out))
        return out

    def completion_text(prompt_ids, new_ids) -> str:
        prompt_text, full = tokenizer.decode(prompt_ids), tokenizer.decode(list(prompt_ids) + list(new_ids))
        return full[len(prompt_text):] if full.startswith(prompt_text) else tokenizer.decode(new_ids)

    def envelope(kind: str, choice: dict, seed: int, request_id: str, created: int) -> dict:
        return {"id": request_id, "object": kind, "created": created, "model": trained.label, "seed": seed,
                "choices": [{"index": 0, "logprobs": None, **choice}]}

    async def on_worker(fn, *args):
        try:
            return await queue.run(fn, *args)
        except (ValueError, TypeError) as err:  # bad input found on the worker (the shared CLI code's errors)
            raise ApiError(400, str(err)) from None

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        if model.config.uses_graph and not model.config.graph.causal:
            raise ApiError(400, f"the served model ({trained.label}) has a non-causal graph (the LEAKY control): it "
                                "looks at later tokens and cannot generate; /v1/graph and /v1/inspect still work",
                           code="not_causal")
        prompt_ids = encode_prompt(req)
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        request_id, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
        if req.stream:
            return stream_completion(req, prompt_ids, seed, request_id, created)
        new_ids = await on_worker(tokens_of, prompt_ids, req, seed)
        body = envelope("text_completion", {"text": completion_text(prompt_ids, new_ids), "finish_reason": "length",
                                            "token_ids": new_ids}, seed, request_id, created)
        body["usage"] = {"prompt_tokens": len(prompt_ids), "completion_tokens": len(new_ids),
                         "total_tokens": len(prompt_ids) + len(new_ids)}
        return body

    def stream_completion(req, prompt_ids, seed, request_id, created) -> StreamingResponse:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def emit(token_id: int) -> None:
            loop.call_soon_threadsafe(chunks.put_nowait, token_id)

        future = queue.submit(tokens_of, prompt_ids, req, seed, cancelled, emit)  # QueueFull -> 429 now
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(chunks.put_nowait, done))

        async def events():
            new_ids, sent_text = [], ""
            try:
                while True:
                    item = await chunks.get()
                    if item is done:
                        break
                    new_ids.append(item)
                    text = completion_text(prompt_ids, new_ids)
                    final = len(new_ids) == req.max_tokens
                    ready = text if final or not text.endswith("\ufffd") else text[:len(sent_text)]  # whole chars
                    delta, sent_text = ready[len(sent_text):], ready
                    choice = {"text": delta, "finish_reason": "length" if final else None, "token_ids": [item]}
                    yield f"data: {json.dumps(envelope('text_completion', choice, seed, request_id, created))}\n\n"
                error = future.exception() if not future.cancelled() else None
                if error is not None:
                    yield f"data: {json.dumps(error_body(f'generation failed: {error}', 'server_error'))}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()  # the client left early: the worker stops at the next token

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def count_tokens(text: str, limit: int, name: str) -> int:
        count = len(tokenizer.encode(text))
        if count > limit:
            raise ApiError(400, f"text has {count} tokens; limit {name}={limit}", param="text", code="text_too_long")
        return count

    @app.post("/v1/graph")
    async def graph(req: GraphRequest):
        if graph_fn is None:
            raise ApiError(501, "this server was started without graph support", code="not_available")
        if not model.config.uses_graph:
            raise ApiError(400, f"the served model ({trained.label}) has no semantic state to build a graph from; "
                                "accepted: a graph model's checkpoint (hybrid, graph_attention)", code="no_graph")
        count_tokens(req.text, limits.max_text_tokens, "max_text_tokens")
        options = req.model_dump(exclude={"text", "nodes"}, exclude_none=True)
        return await on_worker(graph_fn, req.text, req.nodes, options)

    @app.post("/v1/inspect")
    async def inspect(req: InspectRequest):
        if inspect_fn is None:
            raise ApiError(501, "this server was started without inspect support", code="not_available")
        if getattr(trained, "quantized", False):
            raise ApiError(400, "inspect needs the float checkpoint: DePass reads the linear weights, which this "
                                "INT8 checkpoint keeps packed", code="quantized_model")
        count = count_tokens(req.text, context, "context (the model's block size)")
        if count < 2:
            raise ApiError(400, f"text has {count} token(s); inspect needs at least 2", param="text",
                           code="text_too_short")
        return await on_worker(inspect_fn, req.text, req.ablations)

    app.add_middleware(_Observe, metrics=metrics, max_body_bytes=limits.max_body_bytes)  # before routing and parsing
    return app
