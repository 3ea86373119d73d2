"""The bash session's control channel: the driver each shell gets, the line that starts a call, and the
reader that turns what the driver writes into records it has checked.

A call's completion record goes to a pipe the shell keeps on fd 63 between calls. A command runs with
fd 63 closed, so it cannot write there and the programs it starts never hold the pipe (bash keeps a
close-on-exec copy to put fd 63 back afterwards, which only the shell process and the subshells it forks
can find, in /proc/$$/fd). The EXIT trap runs while the command's redirections are in force, so it writes
its record to a file whose name Python makes for each call instead. Every record carries the call's
number and a nonce made fresh by Python for each call and sent only inside the line that starts it; a
record without both is counted as forged and ignored, and the driver's real record still completes the
call. Only checked records give the state a fresh shell is restored to after a timeout.

What the nonce cannot stop: code running inside the shell process (the sourced command itself, a
function, a trap) owns that process. It can read the call's EXIT trap, which holds the nonce (`trap -p`),
watch the driver run (a DEBUG trap), or shadow the builtins the driver calls. A same-user process allowed
to open /proc/<shell pid>/fd/... can reach the pipe too, and read records as they pass. And anything that
can write to the pipe can garble a real record, so that its call ends at its timeout instead. The nonce
keeps a program the command starts from forging a record blind; only the sandbox confines the shell.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

CONTROL_FD = 63
"""Where the shell parks the control pipe: far from the fds scripts use (3-9) and those bash saves onto
(10 up); a fixed number rather than `{var}>&`, which bash 3.2 (macOS) lacks."""

_HEADER = b"kcode-done "
_FIELDS = 6  # header, cwd, calling functions, variables, functions, options
_HEADER_SHAPE = re.compile(rb"kcode-done (\d{1,18}) ([0-9a-f]{32}) (\d{1,3}) ([01])")

# Sent once to every new shell. Only builtins run between commands, so a call costs no fork beyond the
# command's own. `set -e` and `set -u` end a non-interactive shell at the first failure, so they are reset
# after each call: a script-style `set -euo pipefail` lasts for its call, as it would in a terminal.
# Arguments: status, exiting (1 from the EXIT trap), the call's number, its nonce, and for the EXIT trap
# the file to write (fd 63 otherwise).
DRIVER = rf"""
__kcode_done() {{
    builtin set +eu
    {{
        builtin printf 'kcode-done %s %s %s %s\0%s\0%s\0' "$3" "$4" "$1" "$2" "${{PWD-}}" "${{FUNCNAME[*]:1}}"
        builtin declare -p; builtin printf '\0'
        builtin declare -f; builtin printf '\0'
        builtin set +o; builtin shopt -p; builtin alias -p; builtin printf '\0'
    }} >"${{5:-/dev/fd/{CONTROL_FD}}}" 2>/dev/null
}}
"""


def new_nonce() -> str:
    """128 random bits, fresh for every call."""
    return secrets.token_hex(16)


def exit_record_path(directory: Path, nonce: str) -> Path:
    """Where call `nonce`'s EXIT trap writes: a name no program the command starts can know beforehand."""
    return directory / f"exit-{nonce}"


def call_line(seq: int, nonce: str, command_path: Path, output_path: Path, exit_path: Path) -> str:
    """The line that runs call `seq`. Its EXIT trap reports `exit`, `set -e` failures and SIGTERM with the state
    at that moment; the command is sourced with the control pipe closed; the driver then reports its status."""
    trap = f"__kcode_done \"$?\" 1 {seq} {nonce} {shlex.quote(str(exit_path))}"
    return (f"builtin trap {shlex.quote(trap)} EXIT; "
            f"{{ builtin source {shlex.quote(str(command_path))}; }} </dev/null >{shlex.quote(str(output_path))} "
            f"2>&1 {CONTROL_FD}>&-; __kcode_done \"$?\" 0 {seq} {nonce}\n")


@dataclass(frozen=True)
class Record:
    """A checked completion record: the status of call `seq` and the shell's state after it."""

    seq: int
    status: int
    exiting: bool
    cwd: str
    in_function: bool
    """Written by the EXIT trap inside a shell function, so `variables` holds that function's locals."""
    variables: bytes
    functions: bytes
    options: bytes


class ControlReader:
    """Reads the control pipe without blocking; records of the expected call replace `last_record`, others
    are counted in `forged`."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.eof = False
        self.last_record: Record | None = None
        self.forged = 0
        self._expected: tuple[int, bytes] | None = None
        self._exit_path: Path | None = None
        self._fields: list[bytes] = []
        self._partial: list[bytes] = []

    def expect(self, seq: int, nonce: str, exit_path: Path) -> None:
        """Accept records of call `seq` carrying `nonce` from now on, and no others; its EXIT trap writes to
        `exit_path`."""
        self._expected = (seq, nonce.encode())
        self._exit_path = exit_path

    def read_exit_record(self) -> None:
        """Take in the record the EXIT trap of the expected call wrote, if any, once the shell is gone."""
        if self._exit_path is None:
            return
        try:
            data = self._exit_path.read_bytes()
        except OSError:
            return
        self._exit_path.unlink(missing_ok=True)
        self._fields = []
        for field in data.split(b"\0")[:_FIELDS]:
            self._take_field(field)

    def take_forged(self) -> int:
        """Forged records seen since the last call of this method."""
        count, self.forged = self.forged, 0
        return count

    def read(self) -> None:
        """Take in whatever is in the pipe now."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                self.eof = True
                return
            *ends, rest = chunk.split(b"\0")
            if ends:  # a field ends here: join its pieces once, so a huge variable costs linear time
                self._take_field(b"".join([*self._partial, ends[0]]))
                for field in ends[1:]:
                    self._take_field(field)
                self._partial = []
            self._partial.append(rest)

    def _take_field(self, field: bytes) -> None:
        if field.startswith(_HEADER):
            self._fields = []  # a record cut short (a kill, or garbage) gives way to the next
        elif not self._fields:
            return  # the tail of a record cut short by a kill
        self._fields.append(field)
        if len(self._fields) == _FIELDS:
            record = self._check(self._fields)
            self._fields = []
            if record is None:
                self.forged += 1
            else:
                self.last_record = record

    def _check(self, fields: list[bytes]) -> Record | None:
        """The record `fields` make, or None unless they carry the expected call's number and nonce."""
        header, cwd, frames, variables, functions, options = fields
        shape = _HEADER_SHAPE.fullmatch(header)
        if shape is None or self._expected is None:
            return None
        seq, nonce = self._expected
        if int(shape[1]) != seq or not hmac.compare_digest(shape[2], nonce):
            return None
        in_function = any(frame != b"source" for frame in frames.split())
        return Record(seq, int(shape[3]), shape[4] == b"1", cwd.decode("utf-8", errors="replace"), in_function,
                      variables, functions, options)
