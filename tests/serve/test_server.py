"""``sosm serve`` in a real process on 127.0.0.1: answers equal to the CLI's, every limit, metrics, 429, SIGTERM drain."""
import contextlib
import io
import json
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from sosm.cli import main
from sosm.serve.client import APIError, SOSMClient

from .conftest import ServerProcess, get

pytestmark = pytest.mark.slow  # a server process per fixture (~5-10 s to start on the 2-core CPU)


def post(url: str, body, raw: bool = False) -> tuple[int, dict]:
    data = body if raw else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def cli(*argv) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(list(argv)) == 0
    return printed.getvalue()


@pytest.mark.parametrize("temperature,top_k", [(0.8, None), (1.0, 5), (0.0, None)])
def test_completion_equals_sosm_generate_and_model_generate(hybrid_server, tiny_runs, temperature, top_k):
    from sosm.train.loading import load_trained

    client = SOSMClient(hybrid_server.url)
    prompt, seed = "To be, or", 11
    answer = client.complete(prompt, max_tokens=20, temperature=temperature, top_k=top_k, seed=seed)
    choice = answer["choices"][0]
    trained = load_trained(tiny_runs["hybrid"])
    ids = torch.tensor([trained.tokenizer.encode(prompt)])
    want = trained.model.generate(ids, 20, temperature=temperature, top_k=top_k, seed=seed)[0, ids.shape[1]:]
    assert choice["token_ids"] == want.tolist()
    assert answer["usage"] == {"prompt_tokens": ids.shape[1], "completion_tokens": 20, "total_tokens": ids.shape[1] + 20}
    assert answer["object"] == "text_completion" and answer["seed"] == seed and choice["finish_reason"] == "length"
    if temperature > 0:  # sosm generate refuses temperature 0 (greedy is the API's extension)
        argv = ["generate", "--checkpoint", str(tiny_runs["hybrid"]), "--prompt", prompt, "--max-new-tokens", "20",
                "--temperature", str(temperature), "--seed", str(seed)] + (["--top-k", str(top_k)] if top_k else [])
        assert cli(*argv).rstrip("\n") == prompt + choice["text"]
    streamed = list(client.stream(prompt, max_tokens=20, temperature=temperature, top_k=top_k, seed=seed))
    assert [c["choices"][0]["token_ids"][0] for c in streamed] == choice["token_ids"]  # one event per token
    assert "".join(c["choices"][0]["text"] for c in streamed) == choice["text"]
    assert streamed[-1]["choices"][0]["finish_reason"] == "length"


def test_a_request_without_seed_gets_one_back_that_reproduces_it(hybrid_server):
    client = SOSMClient(hybrid_server.url)
    first = client.complete("ab", max_tokens=8)
    again = client.complete("ab", max_tokens=8, seed=first["seed"])
    assert again["choices"][0]["token_ids"] == first["choices"][0]["token_ids"]


def test_graph_equals_sosm_graph(hybrid_server, tiny_runs, tmp_path):
    text = "To be, or not to be: that is the question."
    out = tmp_path / "g.json"
    cli("graph", "--text", text, "--states", str(tiny_runs["hybrid"]), "--k", "3", "--out", str(out), "--quiet")
    status, body = post(hybrid_server.url + "/v1/graph", {"text": text, "k": 3})
    assert status == 200
    assert body == json.loads(out.read_text())
    cli("graph", "--text", text, "--states", str(tiny_runs["hybrid"]), "--nodes", "word", "--out", str(out), "--quiet")
    assert post(hybrid_server.url + "/v1/graph", {"text": text, "nodes": "word"})[1] == json.loads(out.read_text())


def test_inspect_equals_sosm_inspect(hybrid_server, tiny_runs, tmp_path):
    text = "To be, or not to be."
    cli("inspect", "--checkpoint", str(tiny_runs["hybrid"]), "--text", text, "--out", str(tmp_path / "r"),
        "--no-ablations")
    status, body = post(hybrid_server.url + "/v1/inspect", {"text": text})
    assert status == 200
    assert body == json.loads((tmp_path / "r" / "report.json").read_text())


#: (route, body, status, words the message must hold); the server runs with --max-tokens 64,
#: --max-body-bytes 4096, --max-text-tokens 200 and the model's context of 24 tokens
LIMITS = [
    ("/v1/completions", {"prompt": "x" * 25}, 400, ["prompt has 25 tokens", "max_prompt_tokens=24"]),
    ("/v1/completions", {"prompt": "ab", "max_tokens": 65}, 400, ["max_tokens=65", "limit max_tokens=64"]),
    ("/v1/completions", {"prompt": "x" * 5000}, 413, ["max_body_bytes=4096"]),
    ("/v1/completions", b'{"prompt": "ab",', 400, ["malformed JSON"]),
    ("/v1/completions", b"\xff\xfe", 400, ["malformed JSON"]),
    ("/v1/completions", {"max_tokens": 3}, 422, ["prompt", "Field required"]),
    ("/v1/completions", {"prompt": ""}, 422, ["prompt", "at least 1 character"]),
    ("/v1/completions", {"prompt": "ab", "temperature": -1}, 422, ["temperature", "greater than or equal to 0"]),
    ("/v1/completions", {"prompt": "ab", "top_k": 0}, 422, ["top_k"]),
    ("/v1/completions", {"prompt": "ab", "max_tokens": "many"}, 422, ["max_tokens"]),
    ("/v1/completions", {"prompt": "ab", "n": 2}, 422, ["n", "less than or equal to 1"]),
    ("/v1/completions", {"prompt": "ab", "stop": "\n"}, 422, ["stop", "Extra inputs are not permitted"]),
    ("/v1/completions", [1, 2], 422, ["valid dictionary"]),
    ("/v1/graph", {"text": "y" * 201}, 400, ["text has 201 tokens", "max_text_tokens=200"]),
    ("/v1/graph", {"text": "ab", "k": 0}, 422, ["k"]),
    ("/v1/graph", {"text": "ab", "nodes": "char"}, 422, ["nodes"]),
    ("/v1/inspect", {"text": "z" * 30}, 400, ["text has 30 tokens", "context"]),
    ("/v1/inspect", {"text": "z"}, 400, ["at least 2"]),
]


@pytest.mark.parametrize("route,body,status,words", LIMITS, ids=[f"{r}-{s}-{w[0][:20]}" for r, _, s, w in LIMITS])
def test_every_limit_and_malformed_input_is_answered_with_its_status(hybrid_server, route, body, status, words):
    got, answer = post(hybrid_server.url + route, body, raw=isinstance(body, bytes))
    assert got == status, answer
    message = answer["error"]["message"]
    assert all(word in message for word in words), message
    assert set(answer["error"]) == {"message", "type", "param", "code"}


def test_unknown_route_and_method(hybrid_server):
    with pytest.raises(urllib.error.HTTPError) as err:
        get(hybrid_server.url + "/v1/chat/completions")
    assert err.value.code == 404 and json.loads(err.value.read())["error"]["code"] == "http_404"
    with pytest.raises(urllib.error.HTTPError) as err:
        get(hybrid_server.url + "/v1/completions")
    assert err.value.code == 405


def test_health_and_metrics_parse_with_prometheus_client(hybrid_server):
    from prometheus_client.parser import text_string_to_metric_families

    client = SOSMClient(hybrid_server.url)
    health = client.health()
    assert health["status"] == "ok" and health["queue"]["capacity"] == 4 and health["limits"]["max_prompt_tokens"] == 24
    client.complete("ab", max_tokens=3, seed=1)
    with pytest.raises(APIError):
        client.complete("ab", max_tokens=1000)
    families = {f.name: f for f in text_string_to_metric_families(client.metrics())}
    for name in ("sosm_requests", "sosm_request_duration_seconds", "sosm_generated_tokens", "sosm_queue_depth",
                 "sosm_model_load_seconds", "sosm_requests_running", "process_resident_memory_bytes"):
        assert name in families, sorted(families)
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["sosm_requests"].samples}
    assert requests[("/v1/completions", "200")] >= 1 and requests[("/v1/completions", "400")] >= 1
    assert families["sosm_generated_tokens"].samples[0].value >= 3
    assert families["sosm_model_load_seconds"].samples[0].value > 0
    counts = [s for s in families["sosm_request_duration_seconds"].samples
              if s.name.endswith("_count") and s.labels["route"] == "/v1/completions"]
    assert counts and counts[0].value >= 2


def _concurrent(url: str, bodies: list) -> list:
    results = [None] * len(bodies)

    def one(i):
        results[i] = post(url, bodies[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_burst_beyond_the_queue_is_answered_429(tiny_runs, tmp_path):
    server = ServerProcess(tiny_runs["mamba"], "--queue-size", "2", log_dir=tmp_path)
    try:
        bodies = [{"prompt": "To be", "max_tokens": 200, "seed": i} for i in range(10)]
        results = _concurrent(server.url + "/v1/completions", bodies)
        statuses = sorted(status for status, _ in results)
        assert set(statuses) == {200, 429} and statuses.count(200) >= 3, statuses  # running + 2 waiting at least
        refused = next(body for status, body in results if status == 429)
        assert "queue_size=2" in refused["error"]["message"] and refused["error"]["type"] == "rate_limit_error"
        from prometheus_client.parser import text_string_to_metric_families

        families = {f.name: f for f in text_string_to_metric_families(get(server.url + "/metrics").decode())}
        assert families["sosm_queue_rejections"].samples[0].value == statuses.count(429)
        assert families["sosm_queue_depth"].samples[0].value == 0  # all answered
    finally:
        server.stop()


def test_sigterm_drains_in_flight_requests_then_exits(tiny_runs, tmp_path):
    from sosm.train.loading import load_trained

    server = ServerProcess(tiny_runs["mamba"], log_dir=tmp_path)
    bodies = [{"prompt": "To be", "max_tokens": 250, "seed": i} for i in range(3)]
    results = [None] * 3
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, post(server.url + "/v1/completions",
                                                                                bodies[i]))) for i in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until one runs and the others wait
        health = json.loads(get(server.url + "/healthz"))
        if health["queue"]["running"] == 1 and health["queue"]["waiting"] == 2:
            break
        time.sleep(0.02)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(urllib.error.URLError):  # no longer accepting
        get(server.url + "/healthz")
    for thread in threads:
        thread.join(timeout=120)
    assert server.process.wait(timeout=60) == 143  # as sosm train after a clean SIGTERM stop
    trained = load_trained(tiny_runs["mamba"])
    ids = torch.tensor([trained.tokenizer.encode("To be")])
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        assert body["choices"][0]["token_ids"] == trained.model.generate(ids, 250, seed=i)[0, ids.shape[1]:].tolist()
    server.stderr.seek(0)
    assert "draining 1 running and 2 waiting" in server.stderr.read()
    server.stop()
