"""`kcode fix` end to end: a real subprocess, a real git repo, a scripted OpenAI-compatible server on 127.0.0.1.

The server streams in small chunks with tool-call arguments split across them, and on demand answers 429
and 500, drops the connection or sends malformed tool-call JSON: the fix must still land, or kcode must
exit with its documented code and one clear line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.kcode.openai_server import Drop, HttpError, Reply, ScriptedCall, ScriptedServer

BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "calc.py").write_text(BUGGY)
    _git(root, "add", "-A")
    _git(root, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init")
    return root


def _kcode(args: list[str], server: ScriptedServer, home: Path, *, stdin: str = "",
           **env: str) -> subprocess.CompletedProcess[str]:
    """kcode run with `stdin` piped in (empty by default: a terminal there would wait for a task)."""
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    full_env = {**base_env, "HOME": str(home), "KCODE_BASE_URL": server.base_url, "KCODE_API_KEY": "test-key",
                "KCODE_MODEL": "scripted-model", **env}
    return subprocess.run([sys.executable, "-m", "kcode", *args], env=full_env, capture_output=True, text=True,
                          input=stdin, timeout=120)


def _edit(old: str, new: str) -> ScriptedCall:
    return ScriptedCall("editor", json.dumps({"command": "str_replace", "path": "calc.py", "old_str": old,
                                              "new_str": new}))


VIEW = ScriptedCall("editor", json.dumps({"command": "view", "path": "calc.py"}))
SUBMIT = ScriptedCall("submit", json.dumps({"summary": "add adds"}))


def test_the_fix_lands_and_the_diff_is_printed(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(
        Reply(text="Let me look at the code.", tool_calls=(VIEW,), chunk_chars=2),
        Reply(tool_calls=(_edit("a - b", "a + b"),), chunk_chars=4),
        Reply(tool_calls=(SUBMIT,)),
    )
    done = _kcode(["fix", str(repo), "--task", "add() subtracts"], openai_server, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (repo / "calc.py").read_text() == FIXED
    assert "-    return a - b\n+    return a + b" in done.stdout
    assert done.stdout.startswith("diff --git a/calc.py b/calc.py")
    assert "editor" in done.stderr  # progress goes to stderr
    first = openai_server.chat_requests[0].body
    assert first["model"] == "scripted-model"
    assert first["stream"] is True
    assert {t["function"]["name"] for t in first["tools"]} >= {"bash", "editor", "search_text", "submit"}
    assert "add() subtracts" in first["messages"][1]["content"]
    third = openai_server.chat_requests[2].body["messages"]
    tool_results = [m for m in third if m["role"] == "tool"]
    assert "return a - b" in tool_results[0]["content"]  # the view's output reached the model
    assert tool_results[1]["tool_call_id"] == third[-2]["tool_calls"][0]["id"]
    assert openai_server.chat_requests[0].headers["authorization"] == "Bearer test-key"


def test_faults_are_retried_and_bad_json_is_answered_so_the_fix_still_lands(
        repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(
        HttpError(429, "slow down", headers={"Retry-After": "0"}),
        HttpError(500, "boom"),
        Drop(),
        Reply(text="partial answer that will be dropped", drop_after_chunks=3),
        Reply(tool_calls=(ScriptedCall("editor", '{"command": "str_replace", "path": "calc.py", "old_str'),)),
        Reply(tool_calls=(_edit("a - b", "a + b"),)),
        Reply(tool_calls=(SUBMIT,)),
    )
    done = _kcode(["fix", str(repo), "--task", "fix add"], openai_server, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (repo / "calc.py").read_text() == FIXED
    assert "+    return a + b" in done.stdout
    assert "retry" in done.stderr.lower()
    after_bad_json = openai_server.chat_requests[-2].body["messages"]
    assert "invalid JSON" in after_bad_json[-1]["content"]


def test_a_model_api_that_keeps_failing_exits_3_with_one_clear_line(
        repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(HttpError(500, "overloaded"), HttpError(500, "overloaded"))
    done = _kcode(["fix", str(repo), "--task", "fix add"], openai_server, tmp_path, KCODE_MAX_ATTEMPTS="2")
    assert done.returncode == 3
    assert "500" in done.stderr and openai_server.base_url in done.stderr
    assert "Traceback" not in done.stderr
    assert (repo / "calc.py").read_text() == BUGGY
    assert done.stdout == ""


def test_a_bad_key_fails_at_once(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(HttpError(401, "invalid api key"))
    done = _kcode(["fix", str(repo), "--task", "fix add"], openai_server, tmp_path)
    assert done.returncode == 3
    assert "401" in done.stderr and "KCODE_API_KEY" in done.stderr
    assert len(openai_server.chat_requests) == 1


def test_without_yes_commands_are_refused_but_edits_land(repo: Path, tmp_path: Path,
                                                         openai_server: ScriptedServer) -> None:
    marker = repo / "ran.txt"
    openai_server.add(
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": f"touch {marker}"})),)),
        Reply(tool_calls=(_edit("a - b", "a + b"),)),
        Reply(tool_calls=(SUBMIT,)),
    )
    done = _kcode(["fix", str(repo), "--task", "fix add"], openai_server, tmp_path)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    refusal = openai_server.chat_requests[1].body["messages"][-1]
    assert refusal["role"] == "tool" and "--yes" in refusal["content"]
    assert (repo / "calc.py").read_text() == FIXED
    told_first = openai_server.chat_requests[0].body["messages"][1]["content"]
    assert "without --yes" in told_first  # the model knew before its first call
    assert done.stderr.splitlines()[-1] == ("note: 1 command was refused: kcode fix runs shell commands only "
                                            "with --yes; run it again with --yes to allow them")


def test_refused_commands_are_counted_in_the_json_events_too(repo: Path, tmp_path: Path,
                                                             openai_server: ScriptedServer) -> None:
    run = ScriptedCall("bash", json.dumps({"command": "pytest -q"}))
    openai_server.add(Reply(tool_calls=(run, run)), Reply(tool_calls=(SUBMIT,)))
    done = _kcode(["fix", str(repo), "--task", "run the tests", "--json"], openai_server, tmp_path)
    assert done.returncode == 1, done.stderr
    notices = [e["message"] for e in map(json.loads, done.stdout.splitlines()) if e["type"] == "notice"]
    assert notices == ["2 commands were refused: kcode fix runs shell commands only with --yes; run it again "
                       "with --yes to allow them"]


def test_a_refused_connection_fails_in_seconds_with_the_whole_line(repo: Path, tmp_path: Path,
                                                                   openai_server: ScriptedServer) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = _kcode(["fix", str(repo), "--task", "fix add"], openai_server, tmp_path,
                  KCODE_BASE_URL=f"http://127.0.0.1:{port}/v1")
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 5
    assert done.stderr.splitlines()[-2:] == [f"error: could not connect (ConnectError: [Errno 111] Connection "
                                             f"refused) from http://127.0.0.1:{port}/v1 (model scripted-model); "
                                             "gave up after 2 tries", "done: error · 0 steps"]
    assert done.stderr.count("retrying in") == 1


def test_a_task_piped_to_stdin_is_the_task(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(tool_calls=(_edit("a - b", "a + b"),)), Reply(tool_calls=(SUBMIT,)))
    done = _kcode(["fix", str(repo)], openai_server, tmp_path, stdin="add() subtracts\nfrom the issue tracker\n")
    assert done.returncode == 0, done.stderr
    assert "add() subtracts\nfrom the issue tracker" in openai_server.chat_requests[0].body["messages"][1]["content"]
    assert (repo / "calc.py").read_text() == FIXED


def test_with_yes_commands_run(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(
        Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "python -c 'print(6*7)'"})),)),
        Reply(tool_calls=(SUBMIT,)),
    )
    done = _kcode(["fix", str(repo), "--task", "compute", "--yes"], openai_server, tmp_path)
    assert done.returncode == 1  # finished, nothing changed
    assert done.stdout == ""
    assert "42" in openai_server.chat_requests[1].body["messages"][-1]["content"]


def test_a_step_limit_exits_4(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(tool_calls=(VIEW,)), Reply(tool_calls=(VIEW,)))
    done = _kcode(["fix", str(repo), "--task", "fix add", "--max-steps", "2"], openai_server, tmp_path)
    assert done.returncode == 4
    assert "2 steps" in done.stderr


def test_json_events_patch_file_and_trajectory(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(tool_calls=(_edit("a - b", "a + b"),)), Reply(tool_calls=(SUBMIT,)))
    patch, trajectory = tmp_path / "fix.patch", tmp_path / "run.jsonl"
    done = _kcode(["fix", str(repo), "--task", "fix add", "--json", "--output-patch", str(patch),
                   "--trajectory", str(trajectory)], openai_server, tmp_path)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[-1]["type"] == "result"
    assert events[-1]["exit_code"] == 0
    assert "+    return a + b" in events[-1]["patch"]
    assert any(e["type"] == "tool_call" and e["name"] == "editor" for e in events)
    assert patch.read_text() == events[-1]["patch"]
    subprocess.run(["git", "apply", "--check", "-R", str(patch)], cwd=repo, check=True)
    assert trajectory.read_text().count("\n") >= 4


def test_a_new_file_is_in_the_diff(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    create = ScriptedCall("editor", json.dumps({"command": "create", "path": "tests/test_calc.py",
                                                "file_text": "from calc import add\n"}))
    openai_server.add(Reply(tool_calls=(create,)), Reply(tool_calls=(SUBMIT,)))
    done = _kcode(["fix", str(repo), "--task", "add a test"], openai_server, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "new file mode 100644" in done.stdout and "+from calc import add" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "x", "--task-file", "{repo}/README"], "one of --task TEXT, --task-file FILE or text piped"),
    (["--task-file", "{repo}/missing.md"], "missing.md' does not exist"),
    (["--task-file", "{repo}/latin1.md"], "is not UTF-8 text"),
    (["--task", "x", "--output-patch", "{repo}/no/such/dir/fix.patch"], "--output-patch: the directory of"),
    (["--task", "x", "-c", "max_steps=0"], "--set max_steps: max_steps must be an integer >= 1, got '0'"),
    (["--task", "x", "-c", "colour=blue"], "--set: unknown setting 'colour'"),
    ([], "the task is empty"),  # nothing given, and an empty pipe on stdin
    (["--task", "   "], "the task is empty"),
])
def test_usage_errors_exit_2_and_touch_nothing(repo: Path, tmp_path: Path, openai_server: ScriptedServer,
                                               args: list[str], message: str) -> None:
    (repo / "README").write_text("readme\n")
    (repo / "latin1.md").write_bytes("Café crashes\n".encode("latin-1"))
    done = _kcode(["fix", str(repo), *(arg.format(repo=repo) for arg in args)], openai_server, tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert openai_server.chat_requests == []


def test_no_model_configured_says_how_in_two_lines(repo: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "OPENAI_", "MOONSHOT_", "XDG_"))}
    done = subprocess.run([sys.executable, "-m", "kcode", "fix", str(repo), "--task", "x"],
                          env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "MOONSHOT_API_KEY" in lines[1] and "KCODE_BASE_URL" in lines[1]


def test_task_file(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    task = tmp_path / "issue.md"
    task.write_text("The add function subtracts.\n")
    openai_server.add(Reply(text="Nothing to do."))
    done = _kcode(["fix", str(repo), "--task-file", str(task)], openai_server, tmp_path)
    assert done.returncode == 1
    assert "The add function subtracts." in openai_server.chat_requests[0].body["messages"][1]["content"]


def test_a_token_limit_from_the_environment_exits_4(repo: Path, tmp_path: Path,
                                                   openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(tool_calls=(VIEW,), prompt_tokens=100, completion_tokens=20),
                      Reply(tool_calls=(VIEW,), prompt_tokens=100, completion_tokens=20))
    done = _kcode(["fix", str(repo), "--task", "fix add"], openai_server, tmp_path, KCODE_TOKEN_LIMIT="150")
    assert done.returncode == 4
    assert "240 tokens (the limit is 150)" in done.stderr
    assert len(openai_server.chat_requests) == 2  # 120 tokens after the first call: still under the limit


def test_the_agents_shell_never_sees_the_api_key(repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    openai_server.add(Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": "env"})),)),
                      Reply(tool_calls=(SUBMIT,)))
    trajectory = tmp_path / "run.jsonl"
    done = _kcode(["fix", str(repo), "--task", "show env", "--yes", "--trajectory", str(trajectory)], openai_server,
                  tmp_path, MOONSHOT_API_KEY="sk-moonshot-secret", VISIBLE_SETTING="still-here",
                  GITHUB_TOKEN="ghp-secret", AWS_SECRET_ACCESS_KEY="aws-secret", TOKENIZERS_PARALLELISM="false")
    assert done.returncode == 1, done.stderr
    recorded = trajectory.read_text()
    assert "VISIBLE_SETTING=still-here" in recorded  # the trajectory holds the output, and no key
    assert not any(secret in recorded + done.stderr + done.stdout
                   for secret in ("test-key", "sk-moonshot-secret", "ghp-secret", "aws-secret"))
    shown = openai_server.chat_requests[1].body["messages"][-1]["content"]
    assert "VISIBLE_SETTING=still-here" in shown and "TOKENIZERS_PARALLELISM=false" in shown
    assert "test-key" not in shown and "sk-moonshot-secret" not in shown
    assert "ghp-secret" not in shown and "aws-secret" not in shown  # any credential by its name


def test_a_headless_run_cannot_delete_a_directory_outside_the_workspace(
        repo: Path, tmp_path: Path, openai_server: ScriptedServer) -> None:
    decoy = Path(tempfile.mkdtemp(prefix="kcode-decoy-", dir="/var/tmp"))  # outside the sandbox's private /tmp
    try:
        (decoy / "work.txt").write_text("uncommitted work\n")
        delete = Reply(tool_calls=(ScriptedCall("bash", json.dumps({"command": f"rm -rf {decoy}"})),))
        openai_server.add(delete, Reply(tool_calls=(SUBMIT,)))
        guarded = _kcode(["fix", str(repo), "--task", "clean up", "--yes", "--json"], openai_server, tmp_path)
        refusal = openai_server.chat_requests[1].body["messages"][-1]["content"]
        assert f"deletes {decoy}" in refusal and "--allow-destructive" in refusal
        [approval] = [e for e in map(json.loads, guarded.stdout.splitlines()) if e["type"] == "approval"]
        assert approval["verdict"] == "no" and not approval["asked"] and f"deletes {decoy}" in approval["warning"]
        assert (decoy / "work.txt").read_text() == "uncommitted work\n"

        openai_server.add(delete, Reply(tool_calls=(SUBMIT,)))  # allowed past the guard, the sandbox still holds
        done = _kcode(["fix", str(repo), "--task", "clean up", "--yes", "--allow-destructive"], openai_server,
                      tmp_path)
        shown = openai_server.chat_requests[3].body["messages"][-1]["content"]
        if "No sandbox" in done.stderr:
            pytest.skip("no sandbox on this machine")
        assert (decoy / "work.txt").read_text() == "uncommitted work\n"
        assert "Read-only file system" in shown
        off = _kcode(["fix", str(repo), "--task", "x", "--sandbox", "off", "--max-steps", "1"], openai_server,
                     tmp_path)
        assert "The sandbox is off" in off.stderr
    finally:
        shutil.rmtree(decoy, ignore_errors=True)
