"""Run by `unshare` inside fresh network and mount namespaces, before the command it then becomes.

`python enter_namespace.py [hide:DIR | keep:DIR]... -- COMMAND...` brings a new network namespace's loopback up
(test suites talk to servers they start on localhost; the host's localhost stays out of reach), covers each hidden
directory with an empty tmpfs, puts each kept directory back where it was (a testbed inside the hidden
scratch root), then execs COMMAND in this same process, so the caller's process-group kills still reach it.
Without `hide:`/`keep:` arguments everything after the script is the command.

Why hide: the agent's shell and the tests run as the user, so without this they could read the mirrors (the
fix is in their history), the built environments, other instances' testbeds and kcode's configuration.
The mounts live in the private mount namespace only; the host never sees them. Standard library only: it
runs before anything else is set up.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

_SIOCGIFFLAGS, _SIOCSIFFLAGS = 0x8913, 0x8914
_IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING = 0x1, 0x8, 0x40
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC = 0x2, 0x4, 0x1000, 0x4000


def main(argv: list[str]) -> None:
    hidden, kept, command = _parse(argv)
    with socket.socket() as probe:  # a new network namespace's loopback is down; the host's is left alone
        flags = struct.unpack("16sH22x", fcntl.ioctl(probe, _SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING))
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in kept}  # reachable once covered
    for path in hidden:
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV)
    for path, handle in handles.items():
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC)
        os.close(handle)
    os.execvp(command[0], command)


def _parse(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    hidden: list[str] = []
    kept: list[str] = []
    for index, argument in enumerate(argv):
        if argument == "--":
            return hidden, kept, argv[index + 1:]
        kind, _, path = argument.partition(":")
        if kind not in ("hide", "keep") or not path:
            break
        (hidden if kind == "hide" else kept).append(path)
    return [], [], argv


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot mount over {target}: {os.strerror(error)}")


if __name__ == "__main__":
    main(sys.argv[1:])
