"""A small client for ``sosm serve`` (standard library only: copy it anywhere).

Example:
    >>> client = SOSMClient("http://127.0.0.1:8000")                       # doctest: +SKIP
    >>> client.complete("ROMEO:", max_tokens=20, seed=1)["choices"][0]["text"]  # doctest: +SKIP
    >>> for chunk in client.stream("ROMEO:", max_tokens=20, seed=1):       # doctest: +SKIP
    ...     print(chunk["choices"][0]["text"], end="", flush=True)
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Iterator, Optional


class APIError(Exception):
    """The server answered ``status`` with an error body; ``message`` is its ``error.message``."""

    def __init__(self, status: int, message: str, body: Optional[dict] = None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.body = status, message, body or {}


class SOSMClient:
    """Calls one server at ``base_url`` (``http://host:port``); each method is one request."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 120.0):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def _request(self, method: str, path: str, body: Optional[dict] = None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                payload = json.loads(raw)
                message = payload["error"]["message"]
            except (ValueError, KeyError, TypeError):
                payload, message = {}, raw.decode("utf-8", errors="replace")
            raise APIError(err.code, message, payload) from None

    def _json(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        with self._request(method, path, body) as response:
            return json.loads(response.read())

    def complete(self, prompt: str, max_tokens: int = 16, temperature: float = 1.0, top_k: Optional[int] = None,
                 seed: Optional[int] = None) -> dict:
        """``POST /v1/completions``: the completion object (``choices[0]["text"]``, ``["token_ids"]``, ``seed``)."""
        return self._json("POST", "/v1/completions", _completion(prompt, max_tokens, temperature, top_k, seed))

    def stream(self, prompt: str, max_tokens: int = 16, temperature: float = 1.0, top_k: Optional[int] = None,
               seed: Optional[int] = None) -> Iterator[dict]:
        """``POST /v1/completions`` with ``stream``: yields each server-sent chunk (one per token) until ``[DONE]``."""
        body = {**_completion(prompt, max_tokens, temperature, top_k, seed), "stream": True}
        with self._request("POST", "/v1/completions", body) as response:
            for line in response:
                line = line.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise APIError(200, chunk["error"]["message"], chunk)
                yield chunk

    def graph(self, text: str, **options) -> dict:
        """``POST /v1/graph``: the graph JSON of ``text`` (options: nodes, k, window, causal, num_landmarks)."""
        return self._json("POST", "/v1/graph", {"text": text, **options})

    def inspect(self, text: str, ablations: bool = False) -> dict:
        """``POST /v1/inspect``: the attribution report of ``text``."""
        return self._json("POST", "/v1/inspect", {"text": text, "ablations": ablations})

    def health(self) -> dict:
        """``GET /healthz``."""
        return self._json("GET", "/healthz")

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text."""
        with self._request("GET", "/metrics") as response:
            return response.read().decode("utf-8")


def _completion(prompt, max_tokens, temperature, top_k, seed) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
    if top_k is not None:
        body["top_k"] = top_k
    if seed is not None:
        body["seed"] = seed
    return body
