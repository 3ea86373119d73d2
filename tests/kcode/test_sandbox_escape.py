"""A command the sandbox stopped, run once more outside it: only when a person says so, never in a headless run.

Real sandboxed shells (bwrap, or unshare where it is missing) over a workspace and a host directory outside it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kcode.agent.approvals import ApprovalRequest, Approvals, Decision, headless_approvals
from kcode.agent.conversation import Conversation
from kcode.agent.events import ApprovalDecided, Event
from kcode.agent.loop import Agent
from kcode.messages import ToolCall, system, user
from tests.kcode.scripted import ScriptedBackend, answer, calls, shell
from tools.sandbox import Sandbox, SandboxPolicy, sandbox_for
from tools.standard import standard_toolset

UNREACHABLE = "python3 -c 'import socket; socket.create_connection((\"192.0.2.1\", 9), timeout=5)'"
"""TEST-NET-1: in the sandbox's network namespace there is no route, so nothing is ever sent."""


@pytest.fixture
def places() -> Iterator[tuple[Path, Path]]:
    """A workspace and a host directory beside it, both outside /tmp (which the sandbox makes private)."""
    root = Path(tempfile.mkdtemp(prefix="kcode-escape-", dir="/var/tmp"))
    (root / "ws").mkdir()
    (root / "host").mkdir()
    yield root / "ws", root / "host"
    shutil.rmtree(root)


def box(workspace: Path, **policy: bool) -> Sandbox:
    sandbox = sandbox_for(SandboxPolicy(writable=(workspace,), **policy))  # type: ignore[arg-type]
    if not sandbox.active:
        pytest.skip(f"no sandbox on this machine: {sandbox.notice}")
    return sandbox


class Approver:
    """Says yes to running a command, and `outside` to leaving the sandbox; records every question."""

    def __init__(self, outside: Decision) -> None:
        self.outside = outside
        self.asked: list[ApprovalRequest] = []

    def decide(self, request: ApprovalRequest) -> Decision:
        self.asked.append(request)
        return self.outside if request.outside_sandbox is not None else Decision.yes()


def test_the_bash_tool_marks_what_the_sandbox_stopped_and_can_run_it_outside(places: tuple[Path, Path]) -> None:
    workspace, host = places
    write = json.dumps({"command": f"echo out > {host}/made.txt"})
    with standard_toolset(workspace, sandbox=box(workspace)) as toolset:
        blocked = toolset.dispatch("bash", write)
        assert blocked.data["sandbox_blocked"] == "a write outside the workspace" and not (host / "made.txt").exists()
        network = toolset.dispatch("bash", json.dumps({"command": UNREACHABLE}))
        assert network.data["sandbox_blocked"] == "network access"
        plain_failure = toolset.dispatch("bash", json.dumps({"command": "ls no-such-file"}))
        assert "sandbox_blocked" not in plain_failure.data
        toolset.dispatch("bash", json.dumps({"command": "mkdir sub && cd sub && X=1"}))
        outside = toolset.dispatch("bash", json.dumps({"command": "pwd; echo x=${X-unset} > "
                                                                  f"{host}/made.txt"}), unsandboxed=True)
        assert outside.output.startswith(f"{workspace}/sub\n") and "run again outside the sandbox" in outside.output
        assert (host / "made.txt").read_text() == "x=unset\n"  # a fresh shell, where the sandboxed one stood
        after = toolset.dispatch("bash", write)  # and the session itself is still sandboxed
        assert after.data["sandbox_blocked"] == "a write outside the workspace"
    with standard_toolset(workspace, sandbox=box(workspace, allow_network=True)) as toolset:
        assert "sandbox_blocked" not in toolset.dispatch("bash", json.dumps({"command": UNREACHABLE})).data


def run_turn(workspace: Path, host: Path, approvals: Approvals) -> tuple[str, list[Event]]:
    """The model makes a file outside the workspace, then answers; returns what it was shown, and the events.

    (`touch`, not a redirection: the destructive-command guard refuses writes outside the workspace first.)"""
    backend = ScriptedBackend([calls(shell(f"touch {host}/made.txt")), answer("done")])
    events: list[Event] = []
    with standard_toolset(workspace, sandbox=box(workspace)) as toolset:
        agent = Agent(backend, toolset, events.append, conversation=Conversation([system("test")]),
                      approvals=approvals)
        agent.run_turn(user("save it"))
    return backend.requests[1].messages[-1].content, events


def test_the_user_lets_one_blocked_command_run_outside(places: tuple[Path, Path]) -> None:
    workspace, host = places
    approver = Approver(Decision.yes())
    decisions: list[ApprovalDecided] = []
    shown, _ = run_turn(workspace, host, Approvals("ask", approver, workspace=workspace, on_decision=decisions.append))
    assert (host / "made.txt").exists() and "run again outside the sandbox" in shown
    assert [r.outside_sandbox for r in approver.asked] == [None, "a write outside the workspace"]
    assert [(d.verdict, d.scope) for d in decisions] == [("yes", None), ("yes", "this call, once, outside the sandbox")]


def test_declining_keeps_the_sandboxed_result(places: tuple[Path, Path]) -> None:
    workspace, host = places
    approver = Approver(Decision.no())
    shown, _ = run_turn(workspace, host, Approvals("yolo", approver, workspace=workspace))
    assert not (host / "made.txt").exists() and "Read-only file system" in shown
    assert [r.outside_sandbox for r in approver.asked] == ["a write outside the workspace"]  # yolo asks only this


@pytest.mark.parametrize("allow_commands", [True, False])
def test_a_headless_run_never_leaves_the_sandbox(places: tuple[Path, Path], allow_commands: bool) -> None:
    workspace, host = places
    shown, _ = run_turn(workspace, host, headless_approvals(allow_commands))
    assert not (host / "made.txt").exists()
    assert ("Read-only file system" if allow_commands else "Not run") in shown


def test_leave_sandbox_without_a_person_is_no() -> None:
    call = ToolCall(id="c", name="bash", arguments=json.dumps({"command": "pip install x"}))
    assert not Approvals("yolo").leave_sandbox(call, "network access")
    assert not headless_approvals(False).leave_sandbox(call, "network access")
