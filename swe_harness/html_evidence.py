"""What one run left for one instance, as HTML for the report: the test results, the patch and the trajectory.

Everything here came from a repository or a model (test names, diffs, tool outputs), so every piece of it
goes through `html.escape` on its way into the page; markup is only ever this module's own literals.
Test lists stay small for 500 instances: every FAIL_TO_PASS test is listed, PASS_TO_PASS ones only when
they failed (the passing ones are counted), since those lists run to hundreds of names per instance.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from swe_harness.report import ERROR_FILE, PATCH_FILE, REPORT_FILE
from swe_harness.run import RESULT_FILE, TRAJECTORY_FILE

_BRIEF_CHARS = 80


def esc(value: object) -> str:
    """`value` as HTML text or attribute value: the one way data enters the page."""
    return escape(str(value), quote=True)


def run_evidence(instance_dir: Path, instance_id: str, fallback_patch: str | None) -> str:
    """The result, error, tests, patch and trajectory `instance_dir` holds, each collapsible."""
    parts = [_result(instance_dir / RESULT_FILE), _error(instance_dir / ERROR_FILE),
             _tests(instance_dir / REPORT_FILE, instance_id)]
    patch_file = instance_dir / PATCH_FILE
    patch = patch_file.read_text(encoding="utf-8", errors="replace") if patch_file.is_file() else fallback_patch
    parts.append(_patch(patch))
    parts.append(_trajectory(instance_dir / TRAJECTORY_FILE))
    return "".join(parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return None


def _result(path: Path) -> str:
    result = _read_json(path)
    if not isinstance(result, dict):
        return ""
    cost = result.get("cost_usd")
    fields = [f"agent: {result.get('status', '?')} ({result.get('reason', '')})", f"{result.get('steps', '?')} step(s)",
              f"{float(result.get('seconds') or 0):.0f} s"] + ([f"${float(cost):.2f}"] if cost is not None else [])
    return f'<p class="result">{esc(", ".join(fields))}</p>'


def _error(path: Path) -> str:
    if not path.is_file():
        return ""
    return f'<pre class="error-log">{esc(path.read_text(encoding="utf-8", errors="replace").strip())}</pre>'


def _tests(path: Path, instance_id: str) -> str:
    report = _read_json(path)
    entry = report.get(instance_id) if isinstance(report, dict) else None
    if not isinstance(entry, dict):
        return '<p class="tests none">no test results (not graded to a verdict)</p>'
    status = entry.get("tests_status") or {}
    rows = []
    for group, list_passing in (("FAIL_TO_PASS", True), ("PASS_TO_PASS", False)):
        results = status.get(group) or {}
        passed, failed = list(results.get("success") or []), list(results.get("failure") or [])
        shown = [("fail", t) for t in failed] + [("pass", t) for t in passed if list_passing]
        items = "".join(f'<li class="{kind}">{esc(test)}</li>' for kind, test in shown)
        rows.append(f'<tr class="test-group" data-group="{group}" data-passed="{len(passed)}" '
                    f'data-failed="{len(failed)}"><th>{group}</th><td>{len(passed)} passed, {len(failed)} failed'
                    f'{f"<ul>{items}</ul>" if items else ""}</td></tr>')
    applied = "" if entry.get("patch_successfully_applied", True) else "<p>the patch did not apply</p>"
    return f'{applied}<table class="tests">{"".join(rows)}</table>'


def _patch(patch: str | None) -> str:
    if not patch:
        return '<p class="patch none">no patch</p>'
    lines = patch.splitlines()
    body = "\n".join(_diff_line(line) for line in lines)
    return f'<details class="patch"><summary>patch ({len(lines)} lines)</summary><pre>{body}</pre></details>'


def _diff_line(line: str) -> str:
    kind = ("h" if line.startswith("@@") else "f" if line.startswith(("+++", "---", "diff ")) else
            "a" if line.startswith("+") else "d" if line.startswith("-") else "")
    return f'<span class="{kind}">{esc(line)}</span>' if kind else esc(line)


@dataclass
class _Step:
    text: str
    calls: list[Mapping[str, Any]] = field(default_factory=list)
    """`tool_call_finished` records, in order."""
    notes: list[str] = field(default_factory=list)


def _trajectory(path: Path) -> str:
    if not path.is_file():
        return '<p class="trajectory none">no trajectory</p>'
    steps: list[_Step] = []
    preamble: list[str] = []
    for record in _records(path):
        kind = record.get("type")
        message = record.get("message") or {}
        if kind == "message_added" and message.get("role") == "assistant":
            steps.append(_Step(str(message.get("content") or "")))
        elif kind == "tool_call_finished":
            (steps[-1].calls if steps else []).append(record)
        elif (note := _note(record)) is not None:
            (steps[-1].notes if steps else preamble).append(note)
    body = "".join(f'<p class="note">{esc(n)}</p>' for n in preamble)
    body += "".join(_step_html(number, step) for number, step in enumerate(steps, 1))
    return (f'<details class="trajectory" data-steps="{len(steps)}"><summary>trajectory ({len(steps)} step(s))'
            f'</summary>{body}</details>')


def _records(path: Path) -> Iterator[Mapping[str, Any]]:
    """The trajectory's JSON lines; a line cut off by a crash is skipped."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def _note(record: Mapping[str, Any]) -> str | None:
    kind = record.get("type")
    if kind == "agent_error":
        return f"error: {record.get('message', '')}"
    if kind == "notice":
        return str(record.get("message", ""))
    if kind == "compacted":
        return f"history compacted: {record.get('tokens_before')} → {record.get('tokens_after')} tokens"
    if kind == "turn_ended":
        return f"turn ended: {record.get('reason', '')}"
    return None


def _step_html(number: int, step: _Step) -> str:
    names = ", ".join(_call_brief(record.get("call") or {}) for record in step.calls) or "no tool call"
    text = f'<pre class="say">{esc(step.text)}</pre>' if step.text.strip() else ""
    calls = "".join(_call_html(record) for record in step.calls)
    notes = "".join(f'<p class="note">{esc(note)}</p>' for note in step.notes)
    return (f'<details class="step" data-step="{number}"><summary>step {number}: {esc(names)}</summary>'
            f'{text}{calls}{notes}</details>')


def _call_brief(call: Mapping[str, Any]) -> str:
    """`bash: pytest -x tests/…`: the tool and the first line of its first text argument."""
    function = call.get("function") or {}
    arguments = _arguments(function.get("arguments"))
    first = next((v for v in arguments.values() if isinstance(v, str) and v.strip()), "") \
        if isinstance(arguments, dict) else str(arguments)
    line = first.strip().splitlines()[0] if first.strip() else ""
    line = line if len(line) <= _BRIEF_CHARS else line[:_BRIEF_CHARS - 1] + "…"
    return f"{function.get('name', '?')}: {line}" if line else str(function.get("name", "?"))


def _arguments(raw: object) -> object:
    try:
        return json.loads(raw) if isinstance(raw, str) and raw.strip() else raw or {}
    except json.JSONDecodeError:
        return raw


def _call_html(record: Mapping[str, Any]) -> str:
    function = (record.get("call") or {}).get("function") or {}
    arguments = _arguments(function.get("arguments"))
    shown = "\n".join(f"{key}: {value if isinstance(value, str) else json.dumps(value)}"
                      for key, value in arguments.items()) if isinstance(arguments, dict) else str(arguments)
    result = record.get("result") or {}
    error = " error" if result.get("is_error") else ""
    return (f'<div class="call" data-tool="{esc(function.get("name", "?"))}"><pre class="args">{esc(shown)}</pre>'
            f'<pre class="output{error}">{esc(result.get("output", ""))}</pre></div>')
