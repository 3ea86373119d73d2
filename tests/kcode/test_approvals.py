"""Approval modes, the answers a user can give, "always" scopes, and the headless policy of `kcode fix`."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kcode.agent.approvals import (
    COMMANDS_REFUSED,
    ApprovalModeError,
    ApprovalRequest,
    Approvals,
    Decision,
    RefuseCommands,
    classify,
    command_prefixes,
    headless_approvals,
)
from kcode.messages import ToolCall


class ScriptedApprover:
    """Answers with the decisions it was given, in order, and records what it was asked."""

    def __init__(self, *decisions: Decision) -> None:
        self.decisions = list(decisions)
        self.asked: list[ApprovalRequest] = []

    def decide(self, request: ApprovalRequest) -> Decision:
        self.asked.append(request)
        return self.decisions.pop(0)


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id="c1", name=name, arguments=json.dumps(arguments))


def bash(command: str) -> ToolCall:
    return call("bash", command=command)


EDIT = call("editor", command="str_replace", path="a.py", old_str="x", new_str="y")
VIEW = call("editor", command="view", path="a.py")
SEARCH = call("search_text", pattern="TODO")


@pytest.mark.parametrize(("tool_call", "kind"), [
    (bash("ls"), "command"), (VIEW, "read"), (EDIT, "edit"), (call("editor", command="create", path="n"), "edit"),
    (SEARCH, "read"), (call("find_files", pattern="*.py"), "read"), (call("submit"), "control"),
    (call("some_new_tool"), "command"),
])
def test_classify(tool_call: ToolCall, kind: str) -> None:
    assert classify(tool_call.name, json.loads(tool_call.arguments)) == kind


def test_ask_mode_asks_for_edits_and_commands_but_never_for_reading() -> None:
    approver = ScriptedApprover(Decision.yes(), Decision.yes())
    approvals = Approvals("ask", approver)
    for tool_call in (VIEW, SEARCH, call("submit"), EDIT, bash("make")):
        assert approvals.check(tool_call) is None
    assert [r.kind for r in approver.asked] == ["edit", "command"]
    assert approver.asked[1].arguments == {"command": "make"}


def test_auto_edit_mode_runs_edits_and_asks_for_commands() -> None:
    approver = ScriptedApprover(Decision.yes())
    approvals = Approvals("auto-edit", approver)
    assert approvals.check(EDIT) is None
    assert approvals.check(bash("pytest")) is None
    assert [r.kind for r in approver.asked] == ["command"]


def test_yolo_mode_needs_no_approver_and_runs_everything() -> None:
    approvals = Approvals("yolo")
    assert all(approvals.check(c) is None for c in (EDIT, bash("rm -rf build"), VIEW))


def test_a_plain_no_becomes_an_error_result_telling_the_model_not_to_work_around_it() -> None:
    result = Approvals("ask", ScriptedApprover(Decision.no())).check(EDIT)
    assert result is not None and result.is_error and result.data == {"declined": True}
    assert result.output.startswith("Not run: the user declined this call.")
    assert "Do not try to get around the refusal" in result.output


def test_no_with_feedback_passes_the_feedback_to_the_model_word_for_word() -> None:
    result = Approvals("ask", ScriptedApprover(Decision.no("  use git mv, not cp  "))).check(bash("cp a b"))
    assert result is not None
    assert result.output == "Not run: the user declined this call. The user said:\nuse git mv, not cp"


def test_always_for_an_edit_covers_every_later_edit() -> None:
    approver = ScriptedApprover(Decision.always())
    approvals = Approvals("ask", approver)
    assert approvals.check(EDIT) is None
    assert approvals.check(call("editor", command="create", path="other.py", file_text="")) is None
    assert len(approver.asked) == 1
    assert approver.asked[0].always_scope == "every file edit for the rest of this session"


def test_always_for_a_command_covers_its_prefix_in_every_part_of_a_later_command() -> None:
    approver = ScriptedApprover(Decision.always(), Decision.yes(), Decision.no())
    approvals = Approvals("auto-edit", approver)

    assert approvals.check(bash("git status -s")) is None
    assert approver.asked[0].always_scope == "commands starting with `git status` for the rest of this session"
    assert approvals.check(bash("git status")) is None
    assert approvals.check(bash("git status && git status --short")) is None
    assert len(approver.asked) == 1
    approvals.check(bash("git push --force"))  # another subcommand asks again
    approvals.check(bash("git status; rm -rf src"))  # one part not covered: asks
    assert [r.call.arguments for r in approver.asked[1:]] == [
        bash("git push --force").arguments, bash("git status; rm -rf src").arguments]


@pytest.mark.parametrize(("approved", "later"), [
    ("rm build/x.o", "rm -rf ~"),
    ("rm -rf build", "rm -rf build ~"),
    ("git -C repo reset --hard", "git -C repo reset --hard HEAD~9"),
    ("python -c 'print(1)'", "python -c 'import shutil; shutil.rmtree(\"src\")'"),
    ("git reset HEAD~1", "git reset --hard HEAD~5"),
    ("bash build.sh", "bash -c 'rm -rf src'"),
])
def test_always_for_a_dangerous_program_never_approves_its_other_uses(approved: str, later: str) -> None:
    approver = ScriptedApprover(Decision.always(), Decision.no())
    approvals = Approvals("auto-edit", approver)
    assert approvals.check(bash(approved)) is None
    assert approver.asked[0].always_scope == "this exact command for the rest of this session"
    assert approvals.check(bash(approved)) is None  # the exact command is remembered
    assert approvals.check(bash(later)) is not None
    assert len(approver.asked) == 2


def test_always_for_a_command_that_cannot_be_split_safely_covers_only_that_exact_command() -> None:
    approver = ScriptedApprover(Decision.always(), Decision.yes())
    approvals = Approvals("auto-edit", approver)
    assert approvals.check(bash("echo $(whoami) > out.txt")) is None
    assert approver.asked[0].always_scope == "this exact command for the rest of this session"
    assert approvals.check(bash("echo $(whoami) > out.txt")) is None
    assert approvals.check(bash("echo $(id) > out.txt")) is None
    assert len(approver.asked) == 2


@pytest.mark.parametrize(("command", "prefixes"), [
    ("git status -s", {("git", "status")}),
    ("pytest -q tests && rm -rf build", {("pytest",), ("rm", "-rf", "build")}),
    ("python -c 'print(1)'", {("python", "-c", "print(1)")}),
    ("python scripts/gen.py --all", {("python", "scripts/gen.py", "--all")}),
    ("git reset HEAD~1", {("git", "reset", "HEAD~1")}),
    ("sudo apt-get install -y jq", {("sudo", "apt-get", "install", "-y", "jq")}),
    ("xargs rm < files.txt", {("xargs", "rm", "<", "files.txt")}),
    ("cd src\nls | head -5", {("cd",), ("ls",), ("head",)}),
    ("python -m pytest -x tests/", {("python", "-m", "pytest")}),
    (".venv/bin/python3 -m mypy kcode", {(".venv/bin/python3", "-m", "mypy")}),
    ("git -C repo reset --hard", {("git", "-C", "repo", "reset", "--hard")}),
    ("pytest 2>&1 | tail -5", {("pytest",), ("tail",)}),
    ("ls missing 2>/dev/null", {("ls",)}),
    ("echo hi > notes.txt", None),
    ("cat `which python`", None),
    ("diff <(ls a) <(ls b)", None),
    ('echo "unbalanced', None),
    ("", None),
])
def test_command_prefixes(command: str, prefixes: set[tuple[str, ...]] | None) -> None:
    assert command_prefixes(command) == prefixes


def test_the_headless_policy_refuses_commands_and_allows_edits_without_asking_anyone() -> None:
    approvals = headless_approvals(allow_commands=False)
    assert isinstance(approvals.approver, RefuseCommands) and approvals.mode == "auto-edit"
    refused = approvals.check(bash("pytest"))
    assert refused is not None and refused.output == COMMANDS_REFUSED and refused.is_error
    assert approvals.check(EDIT) is None
    assert headless_approvals(allow_commands=True).check(bash("pytest")) is None


def test_arguments_that_are_not_a_json_object_are_left_for_the_toolset_to_refuse() -> None:
    approver = ScriptedApprover()
    approvals = Approvals("ask", approver)
    assert approvals.check(ToolCall("c", "bash", '{"command": ')) is None
    assert approvals.check(ToolCall("c", "bash", "[1, 2]")) is None
    assert approver.asked == []


def test_bad_modes_are_refused_with_the_allowed_ones_named() -> None:
    with pytest.raises(ApprovalModeError, match="one of ask, auto-edit, yolo, got 'sometimes'"):
        Approvals("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ApprovalModeError, match="needs an approver"):
        Approvals("ask")
