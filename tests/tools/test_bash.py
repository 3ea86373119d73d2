"""The bash tool and its session, with a real bash, real files and real processes in tmp_path."""

from __future__ import annotations

import _thread
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.base import ToolResult
from tools.bash import BashTool
from tools.bash_session import BashSession
from tools.clamp import OutputClamp
from tools.settings import ToolSettings
from tools.toolset import Toolset
from tools.workspace import Workspace


def alive(pid: int) -> bool:
    """Whether `pid` runs; zombies count as dead, since PID 1 may never reap them here."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def wait_until(condition: Callable[[], object], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


class Harness:
    """A bash tool in a fresh workspace, called through a Toolset as the agent calls it."""

    def __init__(self, root: Path, spill: Path, **settings: Any) -> None:
        self.root = root
        self.clamp = OutputClamp(ToolSettings(**settings), spill)
        self.tool = BashTool(Workspace(root), self.clamp.settings, self.clamp)
        self.toolset = Toolset([self.tool], self.clamp)

    def __call__(self, command: str, **arguments: Any) -> ToolResult:
        return self.toolset.dispatch("bash", {"command": command, **arguments})


@pytest.fixture
def bash(tmp_path: Path) -> Iterator[Harness]:
    root = tmp_path / "ws"
    root.mkdir()
    harness = Harness(root, tmp_path / "spill")
    yield harness
    harness.tool.close()


def test_output_and_exit_codes(bash: Harness) -> None:
    ok = bash("echo hello")
    assert (ok.output, ok.is_error, ok.data["exit_code"]) == ("hello\n", False, 0)
    failed = bash("echo oops; exit_with() { return $1; }; exit_with 2")
    assert failed.output == "oops\n[exit code 2]"
    assert not failed.is_error  # a failing command is ordinary output, not a tool error
    assert failed.data["exit_code"] == 2
    assert bash("true").output == "[no output]"
    assert "[exit code 139 (SIGSEGV)]" in bash("bash -c 'kill -SEGV $$'").output


def test_directory_variables_and_functions_persist(bash: Harness) -> None:
    bash("mkdir -p a/b && cd a/b && export GREETING=hi && plain=kept && shout() { echo \"$1!\"; }")
    result = bash("pwd; echo $GREETING $plain; shout hey; bash -c 'echo child sees $GREETING'")
    assert result.output == f"{bash.root}/a/b\nhi kept\nhey!\nchild sees hi\n"
    assert result.data["cwd"] == f"{bash.root}/a/b"


def test_output_without_trailing_newline_and_interleaved_stderr(bash: Harness) -> None:
    assert bash("printf 'no newline'; (exit 3)").output == "no newline\n[exit code 3]"
    assert bash("echo 1; echo 2 >&2; echo 3; ls /nonexistent-kcode").output.startswith("1\n2\n3\nls: ")


def test_commands_that_read_stdin_return_at_once(bash: Harness) -> None:
    started = time.monotonic()
    result = bash("cat; read line; echo read=$?; python3 -c 'input()' 2>&1 | tail -1", timeout=20)
    assert time.monotonic() - started < 5
    assert "read=1\nEOFError" in result.output


def test_non_utf8_output_is_decoded_with_replacement(bash: Harness) -> None:
    result = bash(r"printf '\xff\xfe ok\n'; head -c 1000 /dev/urandom")
    assert result.output.startswith("\ufffd\ufffd ok\n")
    assert not result.is_error


def test_output_flood_is_clamped_to_a_saved_file_without_using_memory(bash: Harness) -> None:
    tracemalloc.start()
    started = time.monotonic()
    result = bash("yes | head -c 100000000; echo done >&2", timeout=60)
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 20
    assert peak < 20 * 2**20
    saved = Path(result.data["output_file"])
    assert saved.stat().st_size == 100_000_000 + len("done\n")
    assert f"the whole output is saved in {saved}" in result.output
    assert result.output.count("left out of") == 1  # the toolset did not clamp a second time
    assert result.output.startswith("y\ny\n") and result.output.endswith("y\ndone\n")
    assert len(result.output) <= bash.clamp.settings.max_output_chars


def test_at_the_smallest_limit_output_and_status_line_fit_with_one_clamp(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    harness = Harness(tmp_path / "ws", tmp_path / "spill", max_output_chars=1_000)
    try:
        result = harness("seq 1 100000; (exit 4)")
    finally:
        harness.tool.close()
    assert len(result.output) <= 1_000
    assert result.output.endswith("100000\n[exit code 4]")
    assert result.output.count("left out of") == 1
    assert Path(result.data["output_file"]).read_text().splitlines()[-1] == "100000"


def test_small_outputs_leave_no_files_behind(bash: Harness, tmp_path: Path) -> None:
    for index in range(3):
        bash(f"echo {index}")
    assert list((tmp_path / "spill").iterdir()) == []


def test_timeout_kills_the_command_and_the_next_call_works_where_it_was(bash: Harness) -> None:
    bash("mkdir sub && cd sub && export KEPT=1 && kept() { echo function kept; }; sleep 300 & echo $! > daemon")
    daemon = int((bash.root / "sub" / "daemon").read_text())
    started = time.monotonic()
    result = bash("export LATE=2; echo partial; sh -c 'echo $$ > pid; exec sleep 60'", timeout=1)
    assert time.monotonic() - started < 4
    assert result.is_error and result.data["timed_out"] and result.data["exit_code"] is None
    assert result.output.startswith("partial\n[timed out after 1 s: ")
    assert f"a fresh shell is ready in {bash.root}/sub" in result.output
    sleeper = int((bash.root / "sub" / "pid").read_text())
    assert wait_until(lambda: not alive(sleeper))
    assert wait_until(lambda: not alive(daemon))  # as documented: a kill ends the shell's background jobs too
    after = bash("pwd; echo $KEPT $LATE; kept")
    assert after.output == f"{bash.root}/sub\n1 2\nfunction kept\n"


def test_timeout_restores_options_unsets_and_the_directory_exactly(bash: Harness) -> None:
    bash("cd /tmp && cd - >/dev/null && set -o pipefail && unset HOME && export -n PATH && "
         "declare -A colours=([sky]=blue) && alias hi='echo alias works' && shopt -s expand_aliases")
    assert bash("hang() { local inner=1; sleep 30; }; hang", timeout=1).data["timed_out"]
    result = bash("echo ${HOME-unset} ${colours[sky]} ${inner-unset}; false | true; echo pipefail=$?; hi; "
                  "env | grep -c '^PATH=' ; cd - ")
    assert result.output == "unset blue unset\npipefail=1\nalias works\n0\n/tmp\n"


def test_a_timeout_above_the_maximum_is_capped(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    harness = Harness(tmp_path / "ws", tmp_path / "spill", bash_timeout_s=5, max_bash_timeout_s=1)
    try:
        result = harness("sleep 30", timeout=100)
        assert result.data["timeout_s"] == 1
        assert "timed out after 1 s, the most allowed" in result.output
        assert "default 5, at most 1" in harness.tool.parameters["properties"]["timeout"]["description"]
    finally:
        harness.tool.close()


def test_a_background_daemon_returns_promptly_survives_and_dies_at_close(bash: Harness) -> None:
    started = time.monotonic()
    result = bash("sleep 300 & echo $!; nohup sleep 301 >/dev/null 2>&1 & echo $!", timeout=20)
    assert time.monotonic() - started < 3
    daemons = [int(pid) for pid in result.output.split()]
    assert bash("echo next").output == "next\n"
    assert all(alive(pid) for pid in daemons)
    bash.tool.close()
    assert wait_until(lambda: not any(alive(pid) for pid in daemons))


def test_exit_and_set_e_end_the_shell_but_not_the_session(bash: Harness) -> None:
    bash("mkdir d && cd d && export A=1")
    exited = bash("cd ..; export B=2; exit 4")
    assert exited.data["exit_code"] == 4 and not exited.is_error
    assert "[exit code 4; the shell itself exited" in exited.output
    assert bash("pwd; echo $A $B").output == f"{bash.root}\n1 2\n"
    stopped = bash("set -euo pipefail; echo one; false; echo never")
    assert stopped.output.startswith("one\n[exit code 1; the shell itself exited")
    unbound = bash("set -u; echo $NOT_SET_ANYWHERE")
    assert "NOT_SET_ANYWHERE: unbound variable" in unbound.output and "shell itself exited" in unbound.output
    later = bash("false; echo set -eu did not outlive its call $NOT_SET_ANYWHERE")
    assert later.output == "set -eu did not outlive its call\n"


def test_a_shell_killed_from_outside_is_replaced(bash: Harness) -> None:
    bash("export SURVIVES=yes")
    shell = int(bash("echo $$").output)
    os.kill(shell, 9)
    assert wait_until(lambda: not alive(shell))
    assert bash("echo $SURVIVES").output == "yes\n"


def test_git_and_editors_never_wait_for_a_human(bash: Harness) -> None:
    stream = "".join(f"commit refs/heads/main\ncommitter t <t@example.com> {1_600_000_000 + i} +0000\n"
                     f"data {len(f'commit {i}')}\ncommit {i}\n\n" for i in range(1, 1001))
    (bash.root / "history").write_text(stream)
    setup = bash("git init -q -b main repo && cd repo && git fast-import --quiet < ../history && "
                 "git reset -q --hard && git config user.email t@example.com && git config user.name t && "
                 "git config core.pager 'sleep 60'", timeout=60)
    assert setup.data["exit_code"] == 0, setup.output
    started = time.monotonic()
    log = bash("git log --oneline | wc -l; git -p log -1 --format=%s; git commit --allow-empty", timeout=20)
    assert time.monotonic() - started < 10
    assert log.output.startswith("1000\ncommit 1000\n")
    assert "empty commit message" in log.output
    assert "\x1b" not in log.output  # no editor drew on a terminal that is not there
    assert bash("echo $PAGER $GIT_PAGER $GIT_EDITOR $GIT_TERMINAL_PROMPT").output == "cat cat true 0\n"


def test_interrupt_from_another_thread_returns_partial_output(bash: Harness) -> None:
    results: list[ToolResult] = []
    worker = threading.Thread(target=lambda: results.append(bash("echo before; sleep 60", timeout=60)))
    worker.start()
    time.sleep(0.5)
    started = time.monotonic()
    bash.tool.interrupt()
    worker.join(timeout=5)
    assert not worker.is_alive() and time.monotonic() - started < 3
    (result,) = results
    assert result.is_error and result.data["interrupted"]
    assert result.output.startswith("before\n[interrupted by the user: ")
    assert bash("echo again").output == "again\n"
    bash.tool.interrupt()  # nothing running: a no-op
    assert bash("echo still fine").output == "still fine\n"


def test_ctrl_c_in_the_calling_thread_kills_the_command(bash: Harness) -> None:
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        bash("echo $$ > shell_pid; sh -c 'echo $$ > pid; exec sleep 60'", timeout=60)
    sleeper = int((bash.root / "pid").read_text())
    assert wait_until(lambda: not alive(sleeper))
    assert bash("echo recovered").output == "recovered\n"


def test_sessions_in_two_workspaces_are_independent(tmp_path: Path) -> None:
    harnesses = []
    for name in ("one", "two"):
        (tmp_path / name / "sub").mkdir(parents=True)
        harnesses.append(Harness(tmp_path / name, tmp_path / "spill"))
    outputs: dict[str, str] = {}

    def work(name: str, harness: Harness) -> None:
        harness(f"cd sub && export WHO={name}")
        outputs[name] = harness("sleep 1; pwd; echo $WHO").output

    threads = [threading.Thread(target=work, args=(n, h)) for n, h in zip(("one", "two"), harnesses, strict=True)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.9  # the two sleeps overlapped
    for name in ("one", "two"):
        assert outputs[name] == f"{tmp_path / name / 'sub'}\n{name}\n"
    for harness in harnesses:
        harness.tool.close()


def test_runaway_output_is_stopped_at_the_byte_limit(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    clamp = OutputClamp(ToolSettings(), tmp_path / "spill")
    with BashTool(Workspace(tmp_path / "ws"), ToolSettings(), clamp, max_output_bytes=2**20) as tool:
        result = Toolset([tool], clamp).dispatch("bash", {"command": "yes", "timeout": 60})
        assert result.is_error and result.data["ending"] == "output_limit"
        assert "[stopped after writing more than 1 MiB of output" in result.output
        assert result.data["duration_s"] < 10


@pytest.mark.parametrize(("arguments", "problem"), [
    ({"command": "echo", "timeout": "5"}, "argument 'timeout' must be integer"),
    ({"command": "echo", "timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ({"timeout": 5}, "missing required argument 'command'"),
    ({"command": "  "}, "The command is empty"),
    ({"command": "echo", "timeout_s": 5}, "unexpected argument 'timeout_s'"),
])
def test_bad_arguments_are_error_results(bash: Harness, arguments: dict[str, Any], problem: str) -> None:
    result = bash.toolset.dispatch("bash", arguments)
    assert result.is_error and problem in result.output


def test_a_closed_session_refuses_commands(bash: Harness) -> None:
    bash.tool.close()
    bash.tool.close()  # idempotent
    result = bash("echo hi")
    assert result.is_error and "closed" in result.output


def test_session_measures_time_with_the_injected_clock(tmp_path: Path) -> None:
    ticks = iter([100.0, 102.5])
    with BashSession(tmp_path, new_output_path=lambda: tmp_path / "out.txt", clock=lambda: next(ticks)) as session:
        outcome = session.run("echo timed", timeout_s=5)
    assert outcome.duration_s == 2.5 and outcome.exit_code == 0
    assert (tmp_path / "out.txt").read_text() == "timed\n"


def test_session_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        BashSession(tmp_path / "missing", new_output_path=lambda: tmp_path / "o")
    with pytest.raises(ValueError, match="max_output_bytes must be positive, got 0"):
        BashSession(tmp_path, new_output_path=lambda: tmp_path / "o", max_output_bytes=0)
    with BashSession(tmp_path, new_output_path=lambda: tmp_path / "o") as session, \
            pytest.raises(ValueError, match="timeout_s must be positive, got -1"):
        session.run("true", timeout_s=-1)


def test_schema_describes_a_persistent_non_interactive_shell(bash: Harness) -> None:
    (schema,) = bash.toolset.schemas()
    function = schema["function"]
    assert function["name"] == "bash"
    assert function["parameters"]["required"] == ["command"]
    assert {p["type"] for p in function["parameters"]["properties"].values()} == {"string", "integer"}
    assert "persists between calls" in function["description"]
    assert "Nothing is interactive" in function["description"]


def test_the_launcher_starts_every_shell_including_one_restored_after_a_timeout(tmp_path: Path) -> None:
    marker = tmp_path / "launches"
    launcher = ("bash", "-c", f'echo launched >> {marker}; exec "$@"', "launcher")
    with BashSession(tmp_path, new_output_path=lambda: tmp_path / f"out-{time.monotonic_ns()}",
                     launcher=launcher, kill_grace_s=0.2) as session:
        first = session.run("echo $$; cd /; X=kept", timeout_s=10)
        assert session.run("sleep 30", timeout_s=0.5).timed_out
        after = session.run('echo "$X $PWD"', timeout_s=10)
    assert first.exit_code == 0 and after.output_path.read_text() == "kept /\n"
    assert marker.read_text().splitlines() == ["launched", "launched"]
