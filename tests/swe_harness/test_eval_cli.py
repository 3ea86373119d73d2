"""`kcode eval run` and `kcode eval grade` as a user runs them: real subprocesses, a real repository with a
future to hide, a scripted OpenAI-compatible model on 127.0.0.1, and the official grader at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.kcode.openai_server import Reply, ScriptedCall, ScriptedServer
from tests.swe_harness.task_repo import TaskRepo, instance_row, write_dataset

pytestmark = pytest.mark.slow


def kcode(args: list[str], home: Path, server: ScriptedServer | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    env["HOME"] = str(home)
    if server is not None:
        env |= {"KCODE_BASE_URL": server.base_url, "KCODE_API_KEY": "test-key", "KCODE_MODEL": "scripted-model"}
    return subprocess.run([sys.executable, "-m", "kcode", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def common(task: TaskRepo, dataset: Path, output: Path, env_specs: Path, env_cache: Path) -> list[str]:
    return ["--dataset", str(dataset), "--repos", str(task.mirrors_dir), "--output", str(output),
            "--env-specs", str(env_specs), "--cache-dir", str(env_cache)]


def call(name: str, **arguments: object) -> ScriptedCall:
    return ScriptedCall(name, json.dumps(arguments))


def test_run_then_grade_resolves_with_the_agent_offline_and_blind_to_the_future(
        task: TaskRepo, env_specs: Path, env_cache: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [
        instance_row(task, "acme__calc-1"), instance_row(task, "acme__calc-unknown", version="9.9")])
    output = tmp_path / "run"
    outside = Path("/var/tmp") / f"kcode-escape-{uuid.uuid4().hex}"  # writable to the user, not in the sandbox
    openai_server.add(
        Reply(tool_calls=(call("bash", command="git log --all --format=%s; git tag; git stash list; "
                                               "git cat-file -t " + task.fix_commit),)),
        Reply(tool_calls=(call("bash", command="python -c \"import socket; "
                                               "socket.create_connection(('10.255.255.1', 80), timeout=5)\""),)),
        Reply(tool_calls=(call("bash", command="python -c 'import calc, sys; print(calc.__file__, sys.prefix)'"),)),
        Reply(tool_calls=(call("bash", command=f"ls -A {task.mirrors_dir} {env_cache} {output}; echo end"),)),
        Reply(tool_calls=(call("bash", command=f"touch {outside}"),)),
        Reply(tool_calls=(call("editor", command="str_replace", path="calc/__init__.py",
                               old_str="def mul(a, b):\n    return a + b",
                               new_str="def mul(a, b):\n    return a * b"),)),
        Reply(tool_calls=(call("submit", summary="mul multiplies"),)),
    )
    run = kcode(["eval", "run", *common(task, dataset, output, env_specs, env_cache)], tmp_path, openai_server)
    assert run.returncode == 1, run.stderr  # one instance ended in an error (no spec for version 9.9)
    assert "no environment spec for acme/calc version 9.9" in run.stderr
    assert "submitted" in run.stderr

    results = [m["content"] for r in openai_server.chat_requests[1:] for m in r.body["messages"][-1:]]
    history, network, environment, hidden, escape = results[:5]
    assert "Fix mul" not in history and "Release" not in history and "v1.0" not in history
    assert "Add mul()" in history and "fatal" in history  # the fix commit's object is gone
    assert "Network is unreachable" in network
    records = [json.loads(line) for line in (output / "instances" / "acme__calc-1" / "trajectory.jsonl")
               .read_text().splitlines()]
    workspace = records[0]["workspace"]
    offered = next(r["message"] for r in records if "tools offered" in str(r.get("message", "")))
    assert "bash" in offered and "submit" in offered and "mcp__" not in offered, "the record says what the agent had"
    assert f"{workspace}/calc/__init__.py" in environment and str(env_cache) not in environment.split()[-1]
    system_message = openai_server.chat_requests[0].body["messages"][0]["content"]
    assert "Nobody\nwill answer questions" in system_message and "There is no network access" in system_message
    assert f"Workspace (the repository root; relative paths start here): {workspace}" in system_message
    assert hidden.splitlines()[-1] == "end" and "acme__calc" not in hidden and "envs" not in hidden
    assert "instances" not in hidden  # mirrors, environments and the output are empty to the agent
    assert "Read-only file system" in escape and not outside.exists()  # kcode's own sandbox
    task_message = openai_server.chat_requests[0].body["messages"][1]["content"]
    assert "mul() adds instead of multiplying" in task_message and "do not add, change or delete test" in task_message

    [prediction] = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    assert prediction["instance_id"] == "acme__calc-1" and prediction["model_name_or_path"] == "scripted-model"
    assert "-    return a + b\n+    return a * b" in prediction["model_patch"]
    assert "egg-info" not in prediction["model_patch"] and "__pycache__" not in prediction["model_patch"]
    result = json.loads((output / "instances" / "acme__calc-1" / "result.json").read_text())
    assert result["status"] == "submitted" and result["steps"] == 7
    error = json.loads((output / "instances" / "acme__calc-unknown" / "result.json").read_text())
    assert error["status"] == "error" and "known versions: 1.0" in error["reason"]

    requests_before = len(openai_server.chat_requests)
    again = kcode(["eval", "run", "--json", *common(task, dataset, output, env_specs, env_cache)], tmp_path,
                  openai_server)
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert {"type": "instance_finished", "instance_id": "acme__calc-1", "verdict": "submitted",
            "detail": "finished by an earlier run", "seconds": 0.0, "resumed": True} in events
    assert len(openai_server.chat_requests) == requests_before  # resumed: the finished instance cost nothing
    assert len((output / "predictions.jsonl").read_text().splitlines()) == 1
    other_model = kcode(["eval", "run", "--model", "another-model",
                         *common(task, dataset, output, env_specs, env_cache)], tmp_path, openai_server)
    assert other_model.returncode == 2 and "holds predictions of scripted-model, not of another-model" in \
        other_model.stderr

    graded = kcode(["eval", "grade", "--predictions", str(output / "predictions.jsonl"),
                    *common(task, dataset, output, env_specs, env_cache)], tmp_path)
    assert graded.returncode == 0, graded.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert summary["resolved_ids"] == ["acme__calc-1"] and summary["incomplete_ids"] == ["acme__calc-unknown"]
    assert "resolved 1 of 2 (50.0%)" in graded.stderr


def test_grade_gold_with_two_workers_and_json_events(task: TaskRepo, env_specs: Path, env_cache: Path,
                                                     tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl",
                            [instance_row(task, f"acme__calc-{n}") for n in range(1, 4)])
    one = kcode(["eval", "grade", "--gold", "--json", *common(task, dataset, tmp_path / "one", env_specs, env_cache)],
                tmp_path)
    two = kcode(["eval", "grade", "--gold", "--workers", "2", "acme__calc-1", "acme__calc-2", "acme__calc-3",
                 *common(task, dataset, tmp_path / "two", env_specs, env_cache)], tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    events = [json.loads(line) for line in one.stdout.splitlines()]
    assert [e["type"] for e in events].count("instance_finished") == 3 and events[-1]["type"] == "summary"
    assert events[-1]["resolved_ids"] == ["acme__calc-1", "acme__calc-2", "acme__calc-3"]
    assert json.loads((tmp_path / "two" / "summary.json").read_text()) == {
        k: v for k, v in events[-1].items() if k != "type"}


@pytest.mark.parametrize(("args", "message"), [
    (["--gold", "--predictions", "p.jsonl"], "give exactly one of --predictions FILE or --gold"),
    (["--gold", "--slice", "x"], "--slice takes START:STOP"),
    (["--gold", "nope-1"], "not in the dataset: nope-1"),
    (["--gold", "--env-specs", "specs.toml"], "specs.toml: a value has the wrong type"),
    (["--gold", "--output", "p.jsonl/sub"], "cannot use"),
    (["--predictions", "p.jsonl"], "1 prediction(s) name instances that are not in"),
])
def test_bad_input_is_one_line_and_exit_2(task: TaskRepo, tmp_path: Path, args: list[str], message: str) -> None:
    dataset = write_dataset(tmp_path / "dataset.jsonl", [instance_row(task)])
    (tmp_path / "p.jsonl").write_text('{"instance_id": "other__repo-1", "model_patch": "x"}\n')
    (tmp_path / "specs.toml").write_text('["acme/calc"]\nversions = ["1.0"]\npython = "3.11"\ninstall = ""\n'
                                         'variables = {A = 1}\n')
    where = {"p.jsonl": str(tmp_path / "p.jsonl"), "specs.toml": str(tmp_path / "specs.toml")}
    done = kcode(["eval", "grade", "--dataset", str(dataset), "--repos", str(task.mirrors_dir), "--output",
                  str(tmp_path / "out"), *[where.get(a.split("/")[0], a) + ("/sub" if a.endswith("/sub") else "")
                                           for a in args]], tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
