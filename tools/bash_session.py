"""One persistent bash shell per workspace, driven like a terminal that never waits for a human.

A call writes the command to a file and sends the shell one line that sources it in the shell process
itself (so `cd`, variables and functions persist), with stdin from /dev/null and stdout and stderr into
a fresh output file. A driver function then writes a completion record to a control pipe: exit status,
working directory, and the shell's state (`declare -p`, `declare -f`, options, aliases). The command runs
with that pipe closed and records are checked against a nonce per call (tools/bash_control.py). Python waits
on that pipe with a selector, so a daemon that keeps the output file open never delays completion, and
a 100 MB flood goes to disk, never through memory.

Why a timeout replaces the whole shell: a command that may change the shell's state has to run in the
shell's own process group, so its processes cannot be told apart from the shell's by group. The shell
leads its own session; a timeout, an interrupt or `close()` signals that whole group (SIGTERM, SIGKILL
after a grace period), and a fresh shell is restored from the last state record: the shell's EXIT trap
writes one as it dies, so changes the killed command made before hanging survive too. Background
processes started by earlier calls share the group and end with it. Processes that leave the group
(`setsid`, `set -m`) are on their own.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tools.bash_control import (
    CONTROL_FD,
    DRIVER,
    ControlReader,
    Record,
    call_line,
    exit_record_path,
    new_nonce,
)
from tools.errors import ToolError

Ending = Literal["exited", "shell_exited", "timeout", "interrupt", "output_limit"]
"""How a call ended: the command finished, it ended the shell (`exit`, `set -e`), or it was killed."""

NONINTERACTIVE_ENV: Mapping[str, str] = {
    "GIT_EDITOR": "true", "GIT_SEQUENCE_EDITOR": "true", "EDITOR": "true", "VISUAL": "true",
    "PAGER": "cat", "GIT_PAGER": "cat", "MANPAGER": "cat", "SYSTEMD_PAGER": "", "LESS": "-FRX",
    "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never", "DEBIAN_FRONTEND": "noninteractive",
    "PIP_NO_INPUT": "1", "PYTHONUNBUFFERED": "1", "TERM": "dumb", "NO_COLOR": "1",
}
"""Set for every shell so editors, pagers and prompts never block, and a killed program's output is not
lost in a buffer. `CI` is left alone: test suites change behaviour under it."""

_SLICE_S = 0.1
"""How often a waiting call checks for a dead shell or a runaway output file; completion wakes it at once."""

# Bash keeps these itself; assigning saved values would confuse it (call stacks) or reseed it (RANDOM).
_BASH_MANAGED = frozenset({
    "BASH_ARGC", "BASH_ARGV", "BASH_ARGV0", "BASH_LINENO", "BASH_SOURCE", "FUNCNAME", "BASH_COMMAND",
    "BASH_SUBSHELL", "BASH_EXECUTION_STRING", "BASHPID", "BASH_ALIASES", "BASH_CMDS", "RANDOM", "SRANDOM",
    "SECONDS", "EPOCHSECONDS", "EPOCHREALTIME", "LINENO", "HISTCMD", "PIPESTATUS", "GROUPS",
    "PWD",  # set by the `cd` that comes first; a saved one could name a directory that is gone
})
_DECLARATION = re.compile(rb"declare -([a-zA-Z-]+) ([A-Za-z_][A-Za-z0-9_]*)")


class SessionClosed(ToolError):
    """The session was closed; a new one is needed to run more commands."""


@dataclass(frozen=True)
class CommandOutcome:
    """What one command did. `exit_code` is None when it was killed; `cwd` is where the next one starts."""

    output_path: Path
    ending: Ending
    exit_code: int | None
    cwd: str
    duration_s: float
    forged_records: int = 0
    """Records written to the control channel that did not come from kcode's driver for this call; ignored."""

    @property
    def timed_out(self) -> bool:
        return self.ending == "timeout"

    @property
    def interrupted(self) -> bool:
        return self.ending == "interrupt"


class _Shell:
    """One bash process leading its own session, and the pipe its driver reports on."""

    def __init__(self, bash: str, cwd: str, env: Mapping[str, str], prelude: str,
                 launcher: Sequence[str] = ()) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [*launcher, bash, "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd=cwd, env=dict(env), start_new_session=True, pass_fds=(write_fd,))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.control = ControlReader(read_fd)
        self.send(f"exec {CONTROL_FD}>&{write_fd} {write_fd}>&-\n{prelude}")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode("utf-8", errors="replace"))
        self.proc.stdin.flush()

    def kill(self, grace_s: float) -> None:
        """SIGTERM the shell's process group, SIGKILL it once nothing in it lives or `grace_s` has passed."""
        pgid = self.proc.pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.control.read()  # a driver caught writing a large record must not block on a full pipe
            time.sleep(0.005)
        while time.monotonic() < deadline and _group_has_live_member(pgid):
            time.sleep(0.01)
        _signal_group(pgid, signal.SIGKILL)
        self.proc.wait()
        self.control.read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        os.close(self.control.fd)


class BashSession:
    """A persistent bash shell rooted in one directory; `run` is serialised, `interrupt` is thread-safe.

    The shell starts on the first `run`. `new_output_path` names the file each command's output goes
    to (the output clamp's spill directory, so a clamped result can point at it). `clock` measures
    durations only; timeouts are real wall time. `launcher` is an argv prefix that must exec bash in the
    same process (`unshare -n` does: the shell then has no network), so the group kills still reach it; the
    session's own scripts go to a directory under `state_root` (default: the system's temporary directory),
    which a sandboxing launcher must leave readable.
    """

    def __init__(self, cwd: Path, *, new_output_path: Callable[[], Path], env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, max_output_bytes: int = 1 << 30,
                 kill_grace_s: float = 1.0, launcher: Sequence[str] = (), state_root: Path | None = None) -> None:
        if not Path(cwd).is_dir():
            raise ValueError(f"the bash session's directory {cwd} is not a directory")
        if max_output_bytes <= 0:
            raise ValueError(f"max_output_bytes must be positive, got {max_output_bytes}")
        if kill_grace_s < 0:
            raise ValueError(f"kill_grace_s must be >= 0, got {kill_grace_s}")
        self.root = str(Path(cwd).resolve())
        self.max_output_bytes = max_output_bytes
        self._new_output_path = new_output_path
        self._env = {**(os.environ if env is None else env), **NONINTERACTIVE_ENV}
        self._clock = clock
        self._kill_grace_s = kill_grace_s
        self._launcher = tuple(launcher)
        self._state_root = state_root
        self._cwd = self.root
        self._state: Record | None = None
        self._shell: _Shell | None = None
        self._dir: Path | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._seq = 0
        self._forged = 0  # forged records seen during the running call
        self._lock = threading.Lock()  # guards _running, _interrupted, _closed
        self._run_lock = threading.Lock()
        self._running: int | None = None
        self._interrupted: int | None = None
        self._closed = False

    def __enter__(self) -> BashSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def cwd(self) -> str:
        """Where the next command starts: the directory the last one left the shell in."""
        return self._cwd

    def run(self, command: str, timeout_s: float) -> CommandOutcome:
        """Run `command` in the shell; a command still running after `timeout_s` seconds is killed."""
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        with self._run_lock:
            if self._closed:
                raise SessionClosed("The bash session is closed; no more commands can run in it.")
            started = self._clock()
            seq, output_path = self._submit(command)
            try:
                ending, record = self._wait(seq, output_path, time.monotonic() + timeout_s)
                exit_code = self._finish(seq, ending, record)
            except BaseException:  # Ctrl-C in the caller's thread: stop the command before passing it on
                self._replace_shell(seq)
                raise
            finally:
                with self._lock:
                    self._running = None
                self._command_path(seq).unlink(missing_ok=True)
            if self._shell is not None:
                self._forged += self._shell.control.take_forged()
            return CommandOutcome(output_path, ending, exit_code, self._cwd, self._clock() - started,
                                  self._forged)

    def interrupt(self) -> None:
        """Stop the running command (from any thread); its `run` returns promptly, marked interrupted."""
        with self._lock:  # held while writing, so close() cannot close the pipe under us
            if self._running is None:
                return
            self._interrupted = self._running
            with contextlib.suppress(BlockingIOError):  # a full wake pipe will wake the waiting call anyway
                os.write(self._wake_w, b"!")

    def close(self) -> None:
        """Kill the shell and everything it started, and remove the session's files. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.interrupt()
        with self._run_lock:
            if self._shell is not None:
                self._retire_shell()
            self._selector.close()
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    def _submit(self, command: str) -> tuple[int, Path]:
        if self._shell is None:
            self._start_shell()
        _drain(self._wake_r)
        self._forged = 0
        with self._lock:
            self._seq += 1
            self._running = seq = self._seq
        command_path = self._command_path(seq)
        command_path.write_bytes(command.encode("utf-8", errors="replace"))
        output_path = self._new_output_path()
        nonce = new_nonce()
        assert self._dir is not None
        exit_path = exit_record_path(self._dir, nonce)
        line = call_line(seq, nonce, command_path, output_path, exit_path)
        try:
            self._send_call(seq, nonce, exit_path, line)
        except BrokenPipeError:  # the shell died since the last call: start over once
            self._replace_shell(seq)
            self._send_call(seq, nonce, exit_path, line)
        return seq, output_path

    def _send_call(self, seq: int, nonce: str, exit_path: Path, line: str) -> None:
        shell = self._live_shell()
        shell.control.expect(seq, nonce, exit_path)
        shell.send(line)

    def _command_path(self, seq: int) -> Path:
        """A new file per call: rewriting one file in place costs milliseconds on ext4 (auto_da_alloc)."""
        assert self._dir is not None
        return self._dir / f"command-{seq}"

    def _wait(self, seq: int, output_path: Path, deadline: float) -> tuple[Ending, Record | None]:
        shell = self._live_shell()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            events = self._selector.select(min(remaining, _SLICE_S))
            for key, _ in events:
                if key.fd == self._wake_r:
                    _drain(self._wake_r)
            shell.control.read()
            if shell.control.eof and shell.control.fd in self._selector.get_map():
                self._selector.unregister(shell.control.fd)  # else an empty pipe would wake us forever
            with self._lock:
                if self._interrupted == seq or self._closed:
                    return "interrupt", None
            record = shell.control.last_record
            if record is not None and record.seq == seq:
                return ("shell_exited" if record.exiting else "exited"), record
            if events and not shell.control.eof:
                continue  # the rest of a record is on its way; the checks below can wait for a quiet slice
            if shell.proc.poll() is not None:
                shell.control.read()
                shell.control.read_exit_record()
                record = shell.control.last_record
                return "shell_exited", record if record is not None and record.seq == seq else None
            if _file_size(output_path) > self.max_output_bytes:
                return "output_limit", None

    def _finish(self, seq: int, ending: Ending, record: Record | None) -> int | None:
        """Take in the state the command left and, unless it simply exited, replace the shell."""
        if ending == "exited":
            assert record is not None
            self._take_state(record)
            return record.status
        if ending != "shell_exited":
            self._replace_shell(seq)
            return None
        returncode = self._live_shell().proc.poll()
        self._replace_shell(seq)
        if record is not None:
            return record.status
        return 128 - returncode if returncode is not None and returncode < 0 else returncode

    def _take_state(self, record: Record) -> None:
        if not record.in_function:
            self._state = record
        if record.cwd:
            self._cwd = record.cwd

    def _replace_shell(self, seq: int) -> None:
        """Kill the shell's group, keep the state its EXIT trap reported for call `seq`, start a new one."""
        record = self._retire_shell()
        if record is not None and record.seq == seq:
            self._take_state(record)
        if not self._closed:
            self._start_shell()

    def _retire_shell(self) -> Record | None:
        shell, self._shell = self._shell, None
        if shell is None:
            return None
        if shell.control.fd in self._selector.get_map():
            self._selector.unregister(shell.control.fd)
        shell.kill(self._kill_grace_s)
        shell.control.read_exit_record()
        shell.close()
        self._forged += shell.control.take_forged()
        return shell.control.last_record

    def _start_shell(self) -> None:
        bash = shutil.which("bash", path=self._env.get("PATH"))
        if bash is None:
            raise ToolError("bash was not found on the PATH, so no commands can be run.")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="kcode-bash-", dir=self._state_root))
        cwd = self._cwd if os.path.isdir(self._cwd) else self.root
        prelude = DRIVER
        if self._state is not None:
            restore_path = self._dir / "restore"
            restore_path.write_bytes(_restore_script(self._state, cwd, self.root, self._env))
            prelude = f"builtin source {shlex.quote(str(restore_path))} >/dev/null 2>&1\n{prelude}"
        self._shell = _Shell(bash, cwd, self._env, prelude, self._launcher)
        self._selector.register(self._shell.control.fd, selectors.EVENT_READ)
        self._cwd = cwd

    def _live_shell(self) -> _Shell:
        if self._shell is None:
            raise SessionClosed("The bash session is closed; no more commands can run in it.")
        return self._shell


def _restore_script(state: Record, cwd: str, root: str, launch_env: Mapping[str, str]) -> bytes:
    """Bash that brings a fresh shell to `state`: directory, variables, exports, functions, options."""
    kept: list[bytes] = []
    declared: dict[str, bytes] = {}
    for line in state.variables.split(b"\n"):
        match = _DECLARATION.match(line)
        if match is not None:
            name = match[2].decode()
            declared[name] = match[1]
            if name in _BASH_MANAGED:
                continue
        kept.append(line)
    inherited = [name for name in launch_env if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]
    unset = [name for name in inherited if name not in declared]
    unexported = [name for name in inherited if name in declared and b"x" not in declared[name]]
    head = [f"builtin cd -- {shlex.quote(cwd)} || builtin cd -- {shlex.quote(root)}"]
    if unset:
        head.append("builtin unset -v " + " ".join(unset))
    tail = ["builtin export -n " + " ".join(unexported)] if unexported else []
    parts = [line.encode() for line in head] + kept + [line.encode() for line in tail]
    return b"\n".join([*parts, state.functions, state.options, b""])


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_has_live_member(pgid: int) -> bool:
    """Whether a process other than a zombie is in group `pgid`.

    `killpg(pgid, 0)` alone counts zombies, which linger where PID 1 does not reap; on Linux /proc
    tells them apart.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        state, _ppid, group = stat[stat.rfind(b")") + 2:].split()[:3]
        if int(group) == pgid and state not in (b"Z", b"X"):
            return True
    return False


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
