"""The local backend: kcode's agent driving its own engine in process, on a tiny real-format checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from engine import LLM, SamplingParams
from engine.tiny import make_tiny
from kcode.agent.events import Event
from kcode.agent.loop import Agent
from kcode.backends.base import Finish, TextDelta, ToolCallReady, Usage
from kcode.backends.local import DEMO_NOTICE, LocalBackend
from kcode.messages import system, user
from tools.standard import standard_toolset


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> LLM:
    return LLM(make_tiny(tmp_path_factory.mktemp("ckpt") / "tiny", dtype="fp32"), dtype="float32")


class ScriptedTurns:
    """Forces the model's tokens: one script per completion, so the real parser sees real marker ids."""

    def __init__(self, scripts: Sequence[Sequence[int]]) -> None:
        self.scripts = list(scripts)
        self.completion = -1

    def __call__(self, generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if not generated:
            self.completion += 1
        forced = torch.full_like(logits, float("-inf"))
        forced[self.scripts[self.completion][len(generated)]] = 0.0
        return forced


def _tool_call(llm: LLM, name: str, arguments: dict[str, object], index: int) -> list[int]:
    tok = llm.tokenizer
    return [tok.special_id("<|tool_calls_section_begin|>"), tok.special_id("<|tool_call_begin|>"),
            *tok.encode(f"functions.{name}:{index}"), tok.special_id("<|tool_call_argument_begin|>"),
            *tok.encode(json.dumps(arguments)), tok.special_id("<|tool_call_end|>"),
            tok.special_id("<|tool_calls_section_end|>"), tok.special_id("<|im_end|>")]


def test_greedy_stream_matches_the_engines_own_chat(llm: LLM) -> None:
    backend = LocalBackend(llm, model="local", temperature=0.0, max_tokens=24)
    messages = [system("You are terse."), user("Say something.")]
    events = list(backend.stream(messages))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reference = llm.chat([m.to_openai() for m in messages], sampling_params=SamplingParams(temperature=0,
                                                                                           max_tokens=24))
    assert text == reference["choices"][0]["message"]["content"]
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.prompt_tokens == reference["usage"]["prompt_tokens"]
    assert usage.completion_tokens == reference["usage"]["completion_tokens"]
    assert isinstance(events[-1], Finish)
    assert backend.context_window == llm.max_model_len


def test_the_agent_fixes_a_file_through_the_engine(llm: LLM, tmp_path: Path) -> None:
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    edit = {"command": "str_replace", "path": "calc.py", "old_str": "a - b", "new_str": "a + b"}
    scripts = [_tool_call(llm, "editor", edit, 0), _tool_call(llm, "submit", {"summary": "fixed"}, 1)]
    backend = LocalBackend(llm, model="local", temperature=0.0, max_tokens=200,
                           logits_processors=[ScriptedTurns(scripts)])
    seen: list[Event] = []
    with standard_toolset(tmp_path, submit=True) as toolset:
        agent = Agent(backend, toolset, seen.append)
        reason = agent.run_turn(user("add() subtracts; fix it"))
    assert reason == "submitted"
    assert (tmp_path / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    calls = [m.tool_calls[0] for m in agent.conversation.messages if m.tool_calls]
    assert [(c.id, c.name) for c in calls] == [("functions.editor:0", "editor"), ("functions.submit:1", "submit")]
    assert json.loads(calls[0].arguments) == edit


def test_a_tool_call_streams_out_as_one_ready_call(llm: LLM) -> None:
    script = _tool_call(llm, "bash", {"command": "ls"}, 0)
    backend = LocalBackend(llm, model="local", temperature=0.0, max_tokens=100,
                           logits_processors=[ScriptedTurns([script])])
    events = list(backend.stream([user("list files")], tools=[{"type": "function", "function": {
        "name": "bash", "description": "run", "parameters": {"type": "object", "properties": {}}}}]))
    ready = [e.call for e in events if isinstance(e, ToolCallReady)]
    assert [(c.name, json.loads(c.arguments)) for c in ready] == [("bash", {"command": "ls"})]
    assert events[-1] == Finish("tool_calls")


def test_model_local_makes_the_demo_checkpoint_once_and_says_what_it_is(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    env.update(HOME=str(tmp_path))

    def fix() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kcode", "fix", str(repo), "--task", "hello", "--model",
                               "local", "--max-steps", "1"], env=env, capture_output=True, text=True, timeout=300)

    first = fix()
    assert first.returncode in (1, 4), first.stderr  # gibberish: no change, or a call that hit the step limit
    assert DEMO_NOTICE in first.stderr
    checkpoint = tmp_path / ".local" / "share" / "kcode" / "engine" / "tiny-k2-demo"
    assert (checkpoint / "config.json").exists() and (checkpoint / "tiktoken.model").exists()
    made = (checkpoint / "config.json").stat().st_mtime_ns
    second = fix()
    assert second.returncode in (1, 4), second.stderr
    assert (checkpoint / "config.json").stat().st_mtime_ns == made
    assert [p.name for p in checkpoint.parent.iterdir()] == ["tiny-k2-demo"]  # no scratch left behind


def test_a_path_that_is_no_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    done = subprocess.run([sys.executable, "-m", "kcode", "fix", str(tmp_path), "--task", "x", "--model",
                           f"local:{tmp_path}"], env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode in (2, 3)
    assert "has no config.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_kcode_engine_make_tiny_writes_a_checkpoint_the_engine_loads(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kcode", "engine", "make-tiny", str(tmp_path / "t"), "--dtype",
                           "fp8", "--shards", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "t" / "model.safetensors.index.json").read_text())
    assert any(name.endswith("weight_scale_inv") for name in index["weight_map"])
    reply = LLM(tmp_path / "t", dtype="float32").generate("hello", SamplingParams(temperature=0, max_tokens=4))
    assert len(reply[0].token_ids) >= 1
    bad = subprocess.run([sys.executable, "-m", "kcode", "engine", "make-tiny", str(tmp_path / "u"), "--preset",
                          "gpt"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown preset 'gpt'" in bad.stderr
