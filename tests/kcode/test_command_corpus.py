"""The command corpus (command_corpus.toml): every tricky command gets the guard verdict and the "always"
verdict written beside it, and the guard's false-positive rate on the harmless ones is measured."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kcode.agent.approvals import ApprovalRequest, Approvals, Decision
from kcode.agent.destructive import find_dangers
from kcode.messages import ToolCall

CORPUS: list[dict[str, Any]] = tomllib.loads((Path(__file__).parent / "command_corpus.toml").read_text())["case"]
WORKSPACE = Path("/work/ws")
HOME = Path("/home/user")


def case_id(case: dict[str, Any]) -> str:
    return json.dumps(case["command"])[1:-1][:60] + (f" after {case['approved']}" if "approved" in case else "")


class AlwaysThenNo:
    """Answers "always" to the first question and "no" to any other, counting the questions."""

    def __init__(self) -> None:
        self.asked: list[ApprovalRequest] = []

    def decide(self, request: ApprovalRequest) -> Decision:
        self.asked.append(request)
        return Decision.always() if len(self.asked) == 1 else Decision.no()


def test_the_corpus_is_big_and_covers_every_category() -> None:
    harmless = [c for c in CORPUS if not c["dangerous"]]
    assert len(CORPUS) >= 220 and len(harmless) >= 60
    assert {c["category"] for c in CORPUS} >= {"rm", "obfuscation", "nesting", "git", "disk", "permissions",
                                                "fork_bomb", "download", "find", "writes", "harmless", "always"}


@pytest.mark.parametrize("case", CORPUS, ids=case_id)
def test_the_guard_flags_exactly_the_dangerous_commands(case: dict[str, Any]) -> None:
    found = dangers(case)
    assert bool(found) == case["dangerous"], found


@pytest.mark.parametrize("case", CORPUS, ids=case_id)
def test_always_covers_exactly_what_it_should(case: dict[str, Any]) -> None:
    cwd = [str(WORKSPACE)]
    approver = AlwaysThenNo()
    approvals = Approvals("auto-edit", approver, workspace=WORKSPACE, home=HOME, shell_cwd=lambda: cwd[0])
    approved = case.get("approved", case["command"])
    assert approvals.check(ToolCall("c1", "bash", json.dumps({"command": approved}))) is None
    cwd[0] = case.get("later_cwd", str(WORKSPACE))
    result = approvals.check(ToolCall("c2", "bash", json.dumps({"command": case["command"]})))
    covered = case.get("covered", not case["dangerous"])
    assert (len(approver.asked) == 1) == covered, approver.asked[0].always_scope
    assert (result is None) == covered


def test_the_false_positive_rate_on_harmless_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """Harmless in truth: the look-alikes and the "conservative" ones the guard flags because it cannot know."""
    harmless = [c for c in CORPUS if not c["dangerous"] or c.get("conservative")]
    flagged = [c["command"] for c in harmless if dangers(c)]
    dangerous = [c for c in CORPUS if c["dangerous"] and not c.get("conservative")]
    missed = [c["command"] for c in dangerous if not dangers(c)]
    with capsys.disabled():
        print(f"\ncommand corpus: {len(CORPUS)} commands; guard false positives {len(flagged)}/{len(harmless)} "
              f"harmless ({len(flagged) / len(harmless):.1%}); misses {len(missed)}/{len(dangerous)} dangerous")
    assert len(flagged) == sum(1 for c in CORPUS if c.get("conservative")) and not missed


def dangers(case: dict[str, Any]) -> list[str]:
    cwd = Path(case.get("later_cwd", WORKSPACE))
    return [d.what for d in find_dangers(case["command"], workspace=WORKSPACE, home=HOME, cwd=cwd)]
