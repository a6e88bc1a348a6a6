"""Load test of ``sosm serve`` on loopback, beside plain ``model.generate`` in one process.

Starts ``python -m sosm.cli serve`` on 127.0.0.1 (port 0), then, with the server's model
worker and this process's torch both on ``--threads`` threads:

1. **single client**: ``--single`` requests one after another; per request, the server's wall
   time (HTTP, JSON, queue, generation) beside ``model.generate`` of the same request in this
   process, taken in turn (``interleaved``), so the overhead is a ratio of medians measured side
   by side;
2. **load**: ``--clients`` threads x ``--requests`` requests each (the issue's 16 x 50), queue
   bound above the client count: throughput, p50/p99 latency, statuses;
3. **burst**: ``--burst`` requests at once against a bound of ``--queue-size``: the excess must be
   answered 429, none dropped or 5xx.

Every accepted answer's tokens are compared with ``model.generate`` in this process for its
prompt, seed, temperature and top-k. On a shared machine wall times carry other users' load, so the
single-client phase also records CPU time (the server process's from ``/proc/<pid>/stat``, this
process's ``time.process_time``) and its ratio. Server RSS (``/proc/<pid>/status`` VmRSS) is read after a
warm-up and at the end. The bar (docs: ANCHORS.md, "Scale-out and serving"): no 5xx, every answer
equal, 429 on the burst, RSS growth <= 10%, single-client overhead <= 1.1x.

Usage:
    python experiments/bench/bench_serve.py --checkpoint RUN [--out results/serve_hybrid.json]
    python experiments/bench/bench_serve.py --tiny            # trains a tiny model first (the test's form)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from experiments.bench.common import write_result  # noqa: E402

PROMPTS = ("ROMEO:", "To be, or not to be", "First Citizen:\n", "KING HENRY", "O, ")  # <= 20 tokens


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="run or checkpoint folder to serve")
    source.add_argument("--tiny", action="store_true", help="train a tiny hybrid for 3 steps and serve it")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--single", type=int, default=50, help="single-client requests (overhead)")
    parser.add_argument("--burst", type=int, default=48, help="simultaneous requests of the burst")
    parser.add_argument("--queue-size", type=int, default=32, help="server queue bound (> --clients)")
    parser.add_argument("--burst-queue-size", type=int, default=8, help="queue bound of the burst's server")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, server and in-process alike")
    parser.add_argument("--out", help="JSON file (default experiments/bench/results/serve_<model>.json)")
    return parser.parse_args(argv)


class Server:
    def __init__(self, checkpoint, queue_size: int, threads: int, log: Path):
        self.log = open(log, "w+")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads)}
        self.process = subprocess.Popen([sys.executable, "-m", "sosm.cli", "serve", "--checkpoint", str(checkpoint),
                                         "--port", "0", "--queue-size", str(queue_size), "--threads", str(threads)],
                                        cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            self.log.seek(0)
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log.read())
            if found:
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.log.seek(0)
        raise RuntimeError(f"server did not start:\n{self.log.read()[-3000:]}")

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (``/proc/<pid>/stat``, clock ticks)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        self.log.close()
        return code


def post(url: str, body: dict) -> tuple[int, dict, float]:
    data = json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url + "/v1/completions", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            payload, status = json.loads(response.read()), response.status
    except urllib.error.HTTPError as err:
        payload, status = json.loads(err.read()), err.code
    return status, payload, time.perf_counter() - start


def request_body(i: int, max_tokens: int) -> dict:
    """Request ``i``: prompts, temperatures and top-k vary; the seed is ``i``."""
    return {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "seed": i,
            "temperature": (0.8, 1.0, 0.5)[i % 3], "top_k": (None, 10, None, 40)[i % 4]}


class Reference:
    """``model.generate`` in this process, per (prompt, seed, temperature, top_k): the expected tokens."""

    def __init__(self, checkpoint):
        from sosm.train.loading import load_trained

        self.trained = load_trained(checkpoint, device="cpu")
        self.cache: dict = {}

    def tokens(self, body: dict) -> list:
        import torch

        key = (body["prompt"], body["seed"], body["temperature"], body["top_k"], body["max_tokens"])
        if key not in self.cache:
            ids = torch.tensor([self.trained.tokenizer.encode(body["prompt"])])
            out = self.trained.model.generate(ids, body["max_tokens"], temperature=body["temperature"],
                                              top_k=body["top_k"], seed=body["seed"])
            self.cache[key] = out[0, ids.shape[1]:].tolist()
        return self.cache[key]


def percentile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def run_concurrent(url: str, bodies: list, clients: int) -> list:
    """``clients`` threads share ``bodies`` in order; returns (body, status, payload, seconds) per request."""
    results, lock, position = [], threading.Lock(), [0]

    def worker():
        while True:
            with lock:
                if position[0] >= len(bodies):
                    return
                body = bodies[position[0]]
                position[0] += 1
            status, payload, seconds = post(url, body)
            with lock:
                results.append((body, status, payload, seconds))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def summarise(results: list, seconds: float, reference: Reference) -> dict:
    statuses: dict = {}
    for _, status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    accepted = [(body, payload, s) for body, status, payload, s in results if status == 200]
    wrong = [body["seed"] for body, payload, _ in accepted if payload["choices"][0]["token_ids"] != reference.tokens(body)]
    latencies = [s for _, _, s in accepted]
    return {"requests": len(results), "statuses": statuses, "wall_s": round(seconds, 3),
            "throughput_rps": round(len(accepted) / seconds, 2),
            "tokens_per_s": round(sum(len(p["choices"][0]["token_ids"]) for _, p, _ in accepted) / seconds, 1),
            "latency_p50_ms": round(1e3 * percentile(latencies, 50), 2) if latencies else None,
            "latency_p99_ms": round(1e3 * percentile(latencies, 99), 2) if latencies else None,
            "answers_checked": len(accepted), "answers_wrong": len(wrong), "wrong_seeds": wrong[:10],
            "server_errors_5xx": sum(n for code, n in statuses.items() if code.startswith("5"))}


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    checkpoint = args.checkpoint
    if args.tiny:
        sys.path.insert(0, str(REPO / "tests"))
        from serve.conftest import train_tiny

        checkpoint = train_tiny(work, "hybrid")
    reference = Reference(checkpoint)
    model = reference.trained.model
    record = {"checkpoint": str(reference.trained.checkpoint.path), "model": reference.trained.label,
              "config": {"layer_types": list(model.config.layer_types), "d_model": model.config.d_model,
                         "max_seq_len": model.config.max_seq_len, "parameters": sum(p.numel() for p in model.parameters())},
              "shapes": {"clients": args.clients, "requests_per_client": args.requests, "single": args.single,
                         "burst": args.burst, "queue_size": args.queue_size, "burst_queue_size": args.burst_queue_size,
                         "max_tokens": args.max_tokens, "threads": args.threads, "prompts": list(PROMPTS)},
              "design": "queued, not batched: one model worker thread, bounded queue, 429 beyond it"}

    server = Server(checkpoint, args.queue_size, args.threads, work / "server.log")
    try:
        for i in range(3):  # warm-up: first calls build caches
            post(server.url, request_body(10_000 + i, args.max_tokens))
        rss_before = server.rss_bytes()

        single_bodies = [request_body(i, args.max_tokens) for i in range(args.single)]
        served, local, server_cpu, local_cpu = [], [], 0.0, 0.0
        for body in single_bodies:  # taken in turn: server, then the same request in this process
            cpu_start = server.cpu_seconds()
            status, payload, seconds = post(server.url, body)
            server_cpu += server.cpu_seconds() - cpu_start
            served.append((body, status, payload, seconds))
            ids = torch.tensor([reference.trained.tokenizer.encode(body["prompt"])])
            start, cpu_start = time.perf_counter(), time.process_time()
            out = model.generate(ids, body["max_tokens"], temperature=body["temperature"], top_k=body["top_k"],
                                 seed=body["seed"])
            local.append(time.perf_counter() - start)
            local_cpu += time.process_time() - cpu_start
            reference.cache[(body["prompt"], body["seed"], body["temperature"], body["top_k"], body["max_tokens"])] = \
                out[0, ids.shape[1]:].tolist()
        single = summarise(served, sum(s for *_, s in served), reference)
        server_median = statistics.median(s for *_, s in served)
        local_median = statistics.median(local)
        single.update({"server_median_ms": round(1e3 * server_median, 2), "in_process_median_ms": round(1e3 * local_median, 2),
                       "overhead_ratio": round(server_median / local_median, 4),
                       "overhead_ms": round(1e3 * (server_median - local_median), 2),
                       "server_cpu_s": round(server_cpu, 3), "in_process_cpu_s": round(local_cpu, 3),
                       "cpu_overhead_ratio": round(server_cpu / local_cpu, 4) if local_cpu else None,
                       "server_samples_ms": [round(1e3 * s, 2) for *_, s in served],
                       "in_process_samples_ms": [round(1e3 * s, 2) for s in local]})
        record["single_client"] = single

        bodies = [request_body(100_000 + i, args.max_tokens) for i in range(args.clients * args.requests)]
        start = time.perf_counter()
        results = run_concurrent(server.url, bodies, args.clients)
        record["load"] = summarise(results, time.perf_counter() - start, reference)
        rss_after = server.rss_bytes()
        record["server_rss"] = {"before_bytes": rss_before, "after_bytes": rss_after,
                                "growth_ratio": round(rss_after / rss_before - 1, 4)}
        record["server_exit_code"] = server.stop()
    finally:
        if server.process.poll() is None:
            server.process.kill()

    burst_server = Server(checkpoint, args.burst_queue_size, args.threads, work / "burst.log")
    try:
        post(burst_server.url, request_body(20_000, args.max_tokens))
        bodies = [request_body(200_000 + i, args.max_tokens) for i in range(args.burst)]
        start = time.perf_counter()
        results = run_concurrent(burst_server.url, bodies, args.burst)  # all at once
        record["burst"] = summarise(results, time.perf_counter() - start, reference)
        refused = [p for _, status, p, _ in results if status == 429]
        record["burst"]["refusal_message"] = refused[0]["error"]["message"] if refused else None
        burst_server.stop()
    finally:
        if burst_server.process.poll() is None:
            burst_server.process.kill()

    load, burst = record["load"], record["burst"]
    record["bar"] = {
        "no_5xx": load["server_errors_5xx"] == 0 and burst["server_errors_5xx"] == 0 and single["server_errors_5xx"] == 0,
        "answers_equal": load["answers_wrong"] == 0 and burst["answers_wrong"] == 0 and single["answers_wrong"] == 0,
        "burst_429": burst["statuses"].get("429", 0) > 0 and set(burst["statuses"]) <= {"200", "429"},
        "rss_growth_le_10pct": record["server_rss"]["growth_ratio"] <= 0.10,
        "single_client_overhead_le_1_1x": single["overhead_ratio"] <= 1.1,
    }
    name = "serve_" + re.sub(r"[^a-z0-9]+", "_", reference.trained.label.lower()).strip("_")
    path = write_result(name, record, args.out)
    print(json.dumps({"out": str(path), "single_client": {k: single[k] for k in ("server_median_ms", "in_process_median_ms",
                      "overhead_ratio", "cpu_overhead_ratio")}, "load": {k: load[k] for k in ("statuses", "throughput_rps", "latency_p50_ms",
                      "latency_p99_ms", "answers_wrong")}, "burst": burst["statuses"], "rss": record["server_rss"],
                      "bar": record["bar"]}, indent=1))
    return record


if __name__ == "__main__":
    main()
