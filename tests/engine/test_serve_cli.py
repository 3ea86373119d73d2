"""`kcode serve` as users run it: a real subprocess on 127.0.0.1, `kcode fix` against it, and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from engine import make_tiny

MODEL = "k2-tiny"
KEY = "serve-key"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("serve-cli") / "k2-tiny", dtype="fp32", seed=1)


class Served:
    """`kcode serve` in a subprocess; its stderr is collected by a thread so the pipe never fills."""

    def __init__(self, checkpoint: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "kcode", "serve", "--model", str(checkpoint), "--port", "0",
                   "--api-key", KEY, "--served-model-name", MODEL, "--dtype", "float32", *extra]
        self.process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._announced = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._announced.wait(90), f"no address announced: {self.stderr}"
        self.url = next(w for line in self.lines for w in line.split() if w.startswith("http://"))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if "http://" in line:
                self._announced.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


@pytest.fixture
def served(checkpoint: Path) -> Iterator[Served]:
    server = Served(checkpoint, "--max-model-len", "8192", "--shutdown-timeout", "3")
    try:
        yield server
    finally:
        server.stop()


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_kcode_fix_runs_end_to_end_against_kcode_serve(served: Served, tmp_path: Path) -> None:
    """The random model answers in text, cut off at the profile's max_tokens: kcode ends the run as it does for
    any text-only answer, with exit code 1 (finished without changes)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    config = tmp_path / "config.toml"
    config.write_text(f'default_profile = "served"\n[profiles.served]\nbase_url = "http://127.0.0.1:9/v1"\n'
                      f'model = "{MODEL}"\napi_key_env = "SERVE_KEY"\nmax_tokens = 16\ncontext_window = 8192\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    done = subprocess.run([sys.executable, "-m", "kcode", "fix", "--config", str(config), "--base-url", served.url,
                           "--task", "add() subtracts; fix it", "--max-steps", "3", str(repo)],
                          env={**env, "HOME": str(tmp_path), "SERVE_KEY": KEY}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "done: answered" in done.stderr and done.stdout == ""
    metrics = httpx.get(f"{served.url.removesuffix('/v1')}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    finished = next(line for line in metrics.text.splitlines() if line.startswith("kcode_engine_requests_finished"))
    assert float(finished.split()[-1]) >= 1


def _stream(url: str, max_tokens: int, events: list[Any], started: threading.Event) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
            "ignore_eos": True, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
                if len(events) >= 2:
                    started.set()
    started.set()


def test_sigterm_lets_short_requests_finish_and_ends_the_rest_cleanly(served: Served) -> None:
    """--shutdown-timeout 3: an 80-token answer in flight finishes; a 3,000-token one (half a minute on CPU)
    is cancelled after the grace period, its stream ending with an error event rather than a cut connection."""
    long_events: list[Any] = []
    short_events: list[Any] = []
    streams = []
    for max_tokens, events in ((3000, long_events), (80, short_events)):
        started = threading.Event()
        thread = threading.Thread(target=_stream, args=(served.url, max_tokens, events, started))
        thread.start()
        assert started.wait(60)
        streams.append(thread)
    served.process.send_signal(signal.SIGTERM)
    signalled, short_so_far = time.monotonic(), len(short_events)
    for thread in streams:
        thread.join(30)
    assert short_so_far < 40, "the short answer was not in flight when SIGTERM came"
    assert short_events[-1] == "[DONE]" and short_events[-2]["choices"][0]["finish_reason"] == "length"
    assert "[DONE]" not in long_events and long_events[-1]["error"]["type"] == "server_error"
    assert 2.5 < time.monotonic() - signalled < 15
    served.process.wait(30)
    assert served.process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in served.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url.removesuffix('/v1')}/health")


def test_startup_problems_are_one_line_and_exit_2(checkpoint: Path, tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kcode", "serve", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    (tmp_path / "empty").mkdir()
    not_a_checkpoint = serve("--model", str(tmp_path / "empty"))
    assert not_a_checkpoint.returncode == 2 and "is not a checkpoint directory" in not_a_checkpoint.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = serve("--model", str(checkpoint), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and busy.stderr.startswith("kcode: cannot listen on 127.0.0.1:")
    assert len(busy.stderr.strip().splitlines()) == 1
    no_such_device = serve("--model", str(checkpoint), "--port", "0", "--device", "tpu9")
    assert no_such_device.returncode == 2
    assert no_such_device.stderr.splitlines()[-1].startswith("kcode: --device 'tpu9' is not a torch device")
