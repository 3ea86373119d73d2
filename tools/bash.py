"""The bash tool: a persistent shell for the model, with clamped output and a status line it can act on."""

from __future__ import annotations

import functools
import secrets
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tools.base import ToolResult
from tools.bash_session import BashSession, CommandOutcome
from tools.clamp import OutputClamp
from tools.errors import ToolError
from tools.settings import ToolSettings
from tools.workspace import Workspace

_STATUS_ROOM_CHARS = 600
"""Characters kept free under the clamp's limit for the status line, so the toolset never clamps twice."""


class BashTool:
    """Runs commands in one bash session per workspace; close it (or use `with`) to end the shell."""

    name = "bash"

    def __init__(self, workspace: Workspace, settings: ToolSettings, clamp: OutputClamp, *,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic,
                 max_output_bytes: int = 1 << 30, launcher: Sequence[str] = (), rules: str = "",
                 denial: Callable[[str], str | None] | None = None) -> None:
        self.settings = settings
        self.root = workspace.root
        self._denial = denial
        stem = f"bash-{secrets.token_hex(3)}"  # unique per session, in case two clamps share a spill directory
        self._new_session = functools.partial(BashSession, new_output_path=lambda: clamp.new_spill_path(stem),
                                              env=env, clock=clock, max_output_bytes=max_output_bytes)
        # a launcher may confine what the shell sees: keep the session's scripts beside the outputs, which it
        # must see anyway
        self.session = self._new_session(workspace.root, launcher=launcher,
                                         state_root=clamp.spill_dir if launcher else None)
        reserve = min(_STATUS_ROOM_CHARS, clamp.settings.max_output_chars // 2)
        self._clamp = OutputClamp(clamp.settings, clamp.spill_dir, reserve_chars=reserve)
        default_s, max_s = _seconds(settings.bash_timeout_s), _seconds(settings.max_bash_timeout_s)
        self.description = (
            "Run a bash command and get its output (stdout and stderr together) and exit code. The shell "
            "persists between calls like a terminal: the working directory, variables, functions and aliases "
            "carry over. Nothing is interactive: stdin is empty and there is no terminal, so editors, pagers, "
            "password prompts and REPLs cannot be used; pass flags instead (git commit -m, apt-get -y, "
            f"--no-pager). A call is killed after {default_s} seconds unless you pass `timeout` (at most "
            f"{max_s}); a kill also stops every process started from this shell, and a fresh shell continues "
            "in the same directory. Run servers in the background with their output sent to a file "
            "(cmd > server.log 2>&1 &). Long output is cut to its head and tail; the whole is saved to a file "
            "you can view." + (f" {rules}" if rules else "")
        )
        self.parameters: Mapping[str, Any] = {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command; several lines are run as a script."},
                "timeout": {"type": "integer",
                            "description": f"Seconds before the command is killed (default {default_s}, "
                                           f"at most {max_s})."},
            },
            "required": ["command"],
        }

    def __enter__(self) -> BashTool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Run the command in the session's shell; a failure that looks like the sandbox's doing is marked
        (`sandbox_blocked` in the data), so the user can be offered a run outside it."""
        result = self._run_in(self.session, arguments)
        blocked = self._denial(result.output) if self._denial is not None and result.data["exit_code"] else None
        return replace(result, data={**result.data, "sandbox_blocked": blocked}) if blocked else result

    def run_unsandboxed(self, arguments: Mapping[str, Any]) -> ToolResult:
        """Run the command once outside the sandbox, because the user said so, in a fresh unconfined shell
        started where the session's shell stands (its variables and functions are not carried over)."""
        cwd = Path(self.session.cwd) if Path(self.session.cwd).is_dir() else self.root  # its /tmp is private
        with self._new_session(cwd) as shell:
            result = self._run_in(shell, arguments)
        return replace(result, output=f"{result.output}\n[run again outside the sandbox, as the user allowed, in a "
                                      "fresh shell; later commands are sandboxed again]")

    def _run_in(self, session: BashSession, arguments: Mapping[str, Any]) -> ToolResult:
        command = arguments["command"]
        if not command.strip():
            raise ToolError("The command is empty; pass the bash command to run.")
        timeout_s, capped = self._timeout_s(arguments.get("timeout"))
        outcome = session.run(command, timeout_s)
        body, kept = self._read_output(outcome)
        status = _status_line(outcome, timeout_s, capped=capped, max_output_bytes=session.max_output_bytes,
                              max_timeout_s=self.settings.max_bash_timeout_s)
        if outcome.forged_records:
            status = "\n".join(filter(None, [status, _forgery_note(outcome.forged_records)]))
        if status and body and not body.endswith("\n"):
            body += "\n"
        data = {"exit_code": outcome.exit_code, "timed_out": outcome.timed_out,
                "interrupted": outcome.interrupted, "ending": outcome.ending, "cwd": outcome.cwd,
                "duration_s": outcome.duration_s, "timeout_s": timeout_s, "forged_records": outcome.forged_records,
                "output_file": str(outcome.output_path) if kept else None,
                "output_lines": len(body.splitlines())}  # the command's own lines, not the status line
        return ToolResult(output=(body + status) or "[no output]", data=data,
                          is_error=outcome.ending in ("timeout", "interrupt", "output_limit"))

    def interrupt(self) -> None:
        """Kill the running command from any thread (Ctrl-C in a UI); its call returns promptly."""
        self.session.interrupt()

    def close(self) -> None:
        self.session.close()

    def _timeout_s(self, requested: int | None) -> tuple[float, bool]:
        """The call's timeout, and whether the model asked for more than the most allowed."""
        if requested is None:
            return self.settings.bash_timeout_s, False
        if requested <= 0:
            raise ToolError(f"timeout must be a positive number of seconds, got {requested}.")
        return min(float(requested), self.settings.max_bash_timeout_s), requested > self.settings.max_bash_timeout_s

    def _read_output(self, outcome: CommandOutcome) -> tuple[str, bool]:
        """The clamped output, and whether its file is kept (a clamped view names it); small ones are removed."""
        path = outcome.output_path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return "", False
        body = self._clamp.file(path)
        kept = size > self._clamp.limit_chars
        if not kept:
            path.unlink(missing_ok=True)
        return body, kept


def _status_line(outcome: CommandOutcome, timeout_s: float, *, capped: bool, max_output_bytes: int,
                 max_timeout_s: float) -> str:
    """The line after the output; empty when the output speaks for itself (exit code 0)."""
    killed = ("the command and every process started from this shell were killed; "
              f"a fresh shell is ready in {outcome.cwd}")
    if outcome.ending == "timeout":
        if capped or timeout_s >= max_timeout_s:
            return (f"[timed out after {_seconds(timeout_s)} s, the most allowed: {killed}. "
                    "Run long jobs in the background with their output sent to a file.]")
        return (f"[timed out after {_seconds(timeout_s)} s: {killed}. Pass a larger timeout (at most "
                f"{_seconds(max_timeout_s)}), or run long jobs in the background.]")
    if outcome.ending == "interrupt":
        return f"[interrupted by the user: {killed}.]"
    if outcome.ending == "output_limit":
        return f"[stopped after writing more than {max_output_bytes / 2**20:,.0f} MiB of output: {killed}.]"
    code = _describe_exit(outcome.exit_code)
    if outcome.ending == "shell_exited":
        return (f"[exit code {code}; the shell itself exited, ending its background processes; "
                f"a fresh shell is ready in {outcome.cwd}]")
    if outcome.exit_code != 0:
        return f"[exit code {code}]"
    return ""


def _forgery_note(count: int) -> str:
    records = "a record" if count == 1 else f"{count} records"
    return f"[the command tried to write kcode's control channel; {records} not written by kcode were ignored]"


def _describe_exit(code: int | None) -> str:
    if code is not None and 128 < code < 128 + signal.NSIG:
        try:
            return f"{code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return str(code)


def _seconds(value: float) -> str:
    return f"{value:g}"
