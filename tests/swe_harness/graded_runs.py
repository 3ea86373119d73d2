"""Graded run directories written by hand, in the layout `kcode eval run` + `grade` leave, for report tests.

The summary comes from the harness's own `run_summary` and the trajectory from kcode's own writer, so the
files have exactly the shapes real runs have; the verdicts are whatever a test asks for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from kcode.agent.events import MessageAdded, ToolCallFinished, TurnEnded
from kcode.agent.trajectory import TrajectoryWriter
from kcode.messages import Message, ToolCall
from swe_harness.report import run_summary
from tools.base import ToolResult

F2P = "tests/test_calc.py::test_mul"
P2P = "tests/test_calc.py::test_add"

THREE_RUNS: tuple[dict[str, str], ...] = (
    {"acme__calc-1": "resolved", "acme__calc-2": "resolved", "acme__calc-3": "unresolved", "beta__lib-10": "resolved"},
    {"acme__calc-1": "resolved", "acme__calc-2": "unresolved", "acme__calc-3": "empty", "beta__lib-10": "resolved"},
    {"acme__calc-1": "resolved", "acme__calc-2": "error", "acme__calc-3": "missing", "beta__lib-10": "unresolved"},
)
"""Resolved 3, 2 and 1 of 4: rates 0.75, 0.5, 0.25."""


def write_graded_run(root: Path, verdicts: Mapping[str, str], *, patch: str = "", tool_output: str = "") -> Path:
    """A graded directory at `root` with these verdicts (`missing`: no prediction); every instance with a
    prediction gets a trajectory of one `bash` step that printed `tool_output`, and graded ones `patch`."""
    submitted = [i for i, verdict in verdicts.items() if verdict != "missing"]
    graded = {i: v for i, v in verdicts.items() if v != "missing"}
    (root / "instances").mkdir(parents=True)
    (root / "summary.json").write_text(json.dumps(run_summary(list(verdicts), submitted, graded)))
    for instance_id in submitted:
        directory = root / "instances" / instance_id
        _write_trajectory(directory, instance_id, tool_output)
        (directory / "result.json").write_text(json.dumps({
            "instance_id": instance_id, "status": "submitted", "reason": "submitted", "patch": patch, "steps": 1,
            "cost_usd": 0.01, "seconds": 3.0}))
        verdict = verdicts[instance_id]
        if verdict in ("resolved", "unresolved"):
            (directory / "patch.diff").write_text(patch)
            (directory / "report.json").write_text(json.dumps({instance_id: _report_entry(verdict == "resolved")}))
        if verdict == "error":
            (directory / "error.log").write_text("the patch does not apply\n")
    return root


def _report_entry(resolved: bool) -> dict[str, object]:
    outcome = {"success": [F2P], "failure": []} if resolved else {"success": [], "failure": [F2P]}
    return {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": True, "resolved": resolved,
            "tests_status": {"FAIL_TO_PASS": outcome, "PASS_TO_PASS": {"success": [P2P], "failure": []},
                             "FAIL_TO_FAIL": {"success": [], "failure": []},
                             "PASS_TO_FAIL": {"success": [], "failure": []}}}


def _write_trajectory(directory: Path, instance_id: str, tool_output: str) -> None:
    writer = TrajectoryWriter(directory / "trajectory.jsonl", {"instance_id": instance_id, "model": "scripted"})
    call = ToolCall(id="call-1", name="bash", arguments=json.dumps({"command": "pytest -x tests"}))
    writer(MessageAdded(Message(role="assistant", content="Let me run the tests.", tool_calls=(call,))))
    writer(ToolCallFinished(call, ToolResult(output=tool_output)))
    writer(MessageAdded(Message(role="tool", content=tool_output, tool_call_id="call-1")))
    writer(TurnEnded("submitted"))
