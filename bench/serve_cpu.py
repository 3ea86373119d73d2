"""`kcode serve` on CPU: continuous batching against one request at a time, and a cached prefix against none.

One run starts `kcode serve` on a tiny checkpoint (or `--model PATH`) and streams chat completions from it, as
agents do. The load generator is plain HTTP (`http.client`, one thread per client) so that it costs the two
cores little: the official SDK's per-chunk parsing would otherwise compete with the server it measures.

- throughput: the same 32 chat requests (different lengths, greedy, `--max-tokens` each with eos ignored) sent
  one after another, then all at once from 32 threads; generated tokens per second of each, and the ratio;
- time to first token of a request whose 1,000-token prefix (a long system prompt) the server has just served,
  against one whose prefix is new to it; median of `--repeats` pairs, and the ratio.

Goals (issue 10): >= 4x throughput and >= 3x faster first token. The figures are relative to a peer measured
in the same run on the same server, never absolute.
Run: `python bench/serve_cpu.py [--model PATH] [--threads N] [--max-tokens N] [--repeats N]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from engine.tiny import make_tiny

CLIENTS = 32
PREFIX_WORDS = 1000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, port: int, threads: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "kcode", "serve", "--model", str(model), "--port", str(port),
               "--dtype", "float32", "--served-model-name", "bench"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"kcode serve exited: {server.stderr.read().decode() if server.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("kcode serve did not answer within 120 s")


def stream_chat(port: int, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, int]:
    """Seconds to the first content chunk, and completion tokens."""
    body = {"model": "bench", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    first, tokens = None, 0
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise SystemExit(f"kcode serve answered {response.status}: {response.read().decode()}")
        for line in response:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    finally:
        connection.close()
    return (first if first is not None else time.perf_counter() - start), tokens


def throughput(port: int, requests: list[list[dict[str, str]]], max_tokens: int, concurrent: bool) -> float:
    """Generated tokens per second over all the requests."""
    counts: list[int] = []

    def one(messages: list[dict[str, str]]) -> None:
        counts.append(stream_chat(port, messages, max_tokens)[1])

    start = time.perf_counter()
    if concurrent:
        threads = [threading.Thread(target=one, args=(m,)) for m in requests]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for messages in requests:
            one(messages)
    return sum(counts) / (time.perf_counter() - start)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "kcode", "engine", "cache", "block"])
                    + str(rng.randrange(100)) for _ in range(count))


def first_token_times(port: int, repeats: int) -> tuple[float, float]:
    """Median time to first token with a cached 1,000-word system prompt, and with a fresh one."""
    rng = random.Random(0)
    cached, fresh = [], []
    for i in range(repeats):
        system = _words(rng, PREFIX_WORDS)
        stream_chat(port, [{"role": "system", "content": system}, {"role": "user", "content": "warm up"}], 1)
        hit = [{"role": "system", "content": system}, {"role": "user", "content": f"question {i}"}]
        miss = [{"role": "system", "content": _words(rng, PREFIX_WORDS)}, {"role": "user", "content": f"question {i}"}]
        cached.append(stream_chat(port, hit, 1)[0])
        fresh.append(stream_chat(port, miss, 1)[0])
    return statistics.median(cached), statistics.median(fresh)


def prefix_hit_rate(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text: str = response.read().decode()
    return "\n".join(line for line in text.splitlines() if "prefix" in line and not line.startswith("#"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a checkpoint directory (default: a tiny K2 written now)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or make_tiny(Path(scratch) / "tiny-k2", dtype="fp32")
        port = _free_port()
        server = start_server(model, port, args.threads)
        try:
            rng = random.Random(1)
            requests = [[{"role": "user", "content": _words(rng, 5 + 7 * i)}] for i in range(CLIENTS)]
            stream_chat(port, requests[0], 4)  # warm-up
            one_by_one = throughput(port, requests, args.max_tokens, concurrent=False)
            batched = throughput(port, requests, args.max_tokens, concurrent=True)
            cached, fresh = first_token_times(port, args.repeats)
            report: dict[str, Any] = {
                "model": str(args.model or "tiny k2 (fp32)"),
                "one at a time, tok/s": round(one_by_one, 1),
                f"{CLIENTS} concurrent, tok/s": round(batched, 1),
                "throughput ratio (goal >= 4)": round(batched / one_by_one, 2),
                "first token, cached prefix, ms": round(cached * 1000, 1),
                "first token, fresh prefix, ms": round(fresh * 1000, 1),
                "first-token ratio (goal >= 3)": round(fresh / cached, 2),
            }
            for key, value in report.items():
                print(f"{key:>34}: {value}")
            print(prefix_hit_rate(port))
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
