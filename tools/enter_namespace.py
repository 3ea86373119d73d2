"""Run by `unshare` inside fresh namespaces, before the command it then becomes: the sandbox without bubblewrap.

`python enter_namespace.py [MARK:PATH | ro]... -- COMMAND...` brings a new network namespace's loopback up
(test suites talk to servers they start on localhost; the host's localhost stays out of reach), then shapes the
private mount namespace as the marks say, outermost path first, so a mark inside another path lands on top:

- `hide:DIR` covers DIR with an empty tmpfs; `tmpfs:DIR` does the same for a directory meant to be written
  (a private /tmp); `blank:FILE` shows FILE as empty (/dev/null bound over it);
- `keep:DIR` puts DIR back where it was after something above it was hidden; `rw:DIR` does that too and keeps
  DIR writable when `ro` is given;
- `ro` makes every other mount read-only (/proc, /sys and /dev excepted: they are the kernel's views, not files
  a command could destroy).

Then it execs COMMAND in this same process, so the caller's process-group kills still reach it; when it is the
first process of a new PID namespace (`unshare -p --fork`), it stays as that namespace's init instead, reaping
orphans, and exits as the command did: bash as PID 1 would ignore the SIGTERM a timeout sends.
Without marks everything after the script is the command.

Why hide: the agent's shell and the tests run as the user, so without this they could read the mirrors (the
fix is in their history), credentials, the built environments, other instances' testbeds and kcode's
configuration. The mounts live in the private mount namespace only; the host never sees them. Standard
library only: it runs before anything else is set up.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import signal
import socket
import struct
import sys

_SIOCGIFFLAGS, _SIOCSIFFLAGS = 0x8913, 0x8914
_IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING = 0x1, 0x8, 0x40
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC, _MS_RELATIME = 0x20, 0x400, 0x800, 0x1000, 0x4000, 0x200000
# statvfs's flags, which a remount must repeat: in a user namespace the kernel refuses to drop locked ones.
_KEPT_FLAGS = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC),
               (os.ST_NOATIME, _MS_NOATIME), (os.ST_NODIRATIME, _MS_NODIRATIME), (os.ST_RELATIME, _MS_RELATIME))
_KERNEL_VIEWS = ("/proc", "/sys", "/dev")
_MARKS = ("hide", "tmpfs", "blank", "keep", "rw")


def main(argv: list[str]) -> None:
    marks, read_only, command = _parse(argv)
    program = _find(command[0])  # now: this Python's own lazily imported modules may be about to be hidden
    _loopback_up()
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for kind, path in marks if kind in ("keep", "rw")}
    for kind, path in sorted(marks, key=lambda mark: mark[1].count("/")):
        if kind in ("hide", "tmpfs") and os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", _MS_NOSUID | _MS_NODEV)
        elif kind == "blank" and os.path.lexists(path) and not os.path.isdir(path):
            _mount(os.devnull, path, None, _MS_BIND)
        elif kind in ("keep", "rw"):
            os.makedirs(path, exist_ok=True)  # a mount point inside a hidden directory's tmpfs
    if read_only:
        _remount_read_only(writable={path for kind, path in marks if kind == "tmpfs"},
                           covered={path for kind, path in marks if kind in ("tmpfs", "hide")})
    for path, handle in handles.items():
        _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC)
        os.close(handle)
        if read_only:  # a bind copies the flags of where it came from, which may lie under a covered directory
            writable = 0 if ("rw", path) in marks else _MS_RDONLY
            _mount("", path, None, _MS_REMOUNT | _MS_BIND | writable | _kept_flags(path))
    with contextlib.suppress(OSError):  # the working directory still names the mount beneath the new ones
        os.chdir(os.getcwd())
    if os.getpid() == 1:
        sys.exit(_init(program, command))
    os.execv(program, command)


def _find(name: str) -> str:
    """`name` as exec would find it on PATH (without `os.execvp`, which imports a module when it runs)."""
    if "/" in name:
        return name
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return name


def _parse(argv: list[str]) -> tuple[list[tuple[str, str]], bool, list[str]]:
    marks: list[tuple[str, str]] = []
    read_only = False
    for index, argument in enumerate(argv):
        if argument == "--":
            return marks, read_only, argv[index + 1:]
        kind, _, path = argument.partition(":")
        if argument == "ro":
            read_only = True
        elif kind in _MARKS and path.startswith("/"):
            marks.append((kind, os.path.normpath(path)))
        else:
            break
    return [], False, argv


def _loopback_up() -> None:
    """A new network namespace's loopback is down; the host's (when the network is shared) is up already."""
    with socket.socket() as probe:
        flags = struct.unpack("16sH22x", fcntl.ioctl(probe, _SIOCGIFFLAGS, struct.pack("16sH22x", b"lo", 0)))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING))


def _remount_read_only(writable: set[str], covered: set[str]) -> None:
    """Every mount this namespace sees, read-only, except the `writable` ones and what lies under the `covered`
    directories (just hidden by a tmpfs, out of reach); a mount that cannot be made so stops the sandbox."""
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        targets = [_unescape(line.split()[4]) for line in mountinfo]
    for target in dict.fromkeys(targets):
        if target in writable or any(_inside(target, view) for view in _KERNEL_VIEWS) \
                or any(_inside(target, cover) and target != cover for cover in covered):
            continue
        try:
            flags = _kept_flags(target)
            if os.statvfs(target).f_flag & os.ST_RDONLY:
                continue
        except OSError:
            continue  # covered by a later mount, or gone: nothing reachable to protect
        _mount("", target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | flags)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _kept_flags(path: str) -> int:
    have = os.statvfs(path).f_flag
    return sum(mount_flag for statvfs_flag, mount_flag in _KEPT_FLAGS if have & statvfs_flag)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes. (No codec: a lazily imported
    one may live in a directory just hidden, such as pyenv's Python under a home covered with a tmpfs.)"""
    return re.sub(r"\\([0-7]{3})", lambda escape: chr(int(escape.group(1), 8)), field)


def _init(program: str, command: list[str]) -> int:
    """Be the PID namespace's init: run the command as a child, reap every orphan, exit as the command did."""
    child = os.fork()
    if child == 0:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.execv(program, command)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the process-group kill reaches the child; init outlives it
    while True:
        pid, status = os.wait()
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot mount over {target}: {os.strerror(error)}")


if __name__ == "__main__":
    main(sys.argv[1:])
