"""File access that follows no symlink, so a path checked once cannot be redirected before it is used.

`Workspace.resolve` checks a path by name and returns its real path. Between that check and the read or
write, anything with access to the tree (the model's own shell, a test suite) could swap a directory on
the path for a symlink to somewhere outside. So every access here walks the real path from a descriptor
of "/", one component at a time, opening each directory relative to its parent's descriptor with
O_NOFOLLOW: a component that is no longer a real directory ends the walk with `PathChanged` instead of
being followed. The last component is opened, created, replaced or removed relative to its parent's
descriptor too; files are opened with O_NOFOLLOW | O_NONBLOCK and checked on the open descriptor, so a
FIFO, socket or device is refused (`NotRegularFile`) without ever being waited on.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

_WALK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""How each directory on the way is opened: O_PATH (Linux) needs no read permission, only search."""


class PathChanged(OSError):
    """A directory on the path is (now) a symlink or something else; nothing was read or written."""


class NotRegularFile(OSError):
    """The entry is a symlink, directory, FIFO, socket or device where a regular file was expected."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


def describe(mode: int) -> str:
    """What kind of entry `mode` is, as a sentence needs it ("a FIFO")."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISLNK, "a symlink"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((kind for test, kind in kinds if test(mode)), "an entry of unknown kind")


@contextlib.contextmanager
def parent_dir(path: Path, made: list[Path] | None = None) -> Iterator[int]:
    """A descriptor of `path`'s parent, reached without following a symlink. With `made`, missing
    directories are created on the way and added to it, deepest first. `path` must be absolute and real."""
    if not path.is_absolute() or path.name in ("", ".", ".."):
        raise ValueError(f"{path} must be an absolute path to a named entry")
    fd = os.open("/", _WALK_FLAGS)
    try:
        reached = Path("/")
        for name in path.parent.parts[1:]:
            reached /= name
            child = _step(fd, name, reached, made)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _step(parent: int, name: str, reached: Path, made: list[Path] | None) -> int:
    """Open directory `name` under `parent`; with `made`, create it when missing."""
    try:
        try:
            return os.open(name, _WALK_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if made is None:
                raise
            with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: the open decides
                os.mkdir(name, dir_fd=parent)
                made.insert(0, reached)
            return os.open(name, _WALK_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise
    except OSError as exc:
        mode = _mode_or_none(name, parent)
        if mode is None or stat.S_ISDIR(mode):
            raise
        raise PathChanged(exc.errno, f"{reached} is {describe(mode)}, not a directory; nothing was read or "
                                     "written through it") from None


def entry_mode(path: Path) -> int | None:
    """The mode of `path` itself (a symlink is not followed), or None when it does not exist."""
    try:
        with parent_dir(path) as parent:
            return os.stat(path.name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, refused unless it is a regular file, without blocking on a FIFO."""
    with parent_dir(path) as parent:
        try:
            fd = os.open(path.name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            mode = _mode_or_none(path.name, parent)
            if mode is not None and not stat.S_ISREG(mode):
                raise NotRegularFile(path, describe(mode)) from None  # a symlink (ELOOP), or a socket (ENXIO)
            raise exc from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(path, describe(mode))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path: Path) -> bytes | None:
    """The bytes of the regular file at `path`, or None when there is none (missing, or another kind)."""
    try:
        with open_regular(path) as f:
            return f.read()
    except (FileNotFoundError, NotRegularFile):
        return None


def open_directory(path: Path) -> int:
    """A descriptor of the directory `path` for listing (`os.scandir(fd)`); the caller closes it."""
    if path == Path("/"):
        return os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with parent_dir(path) as parent:
        return os.open(path.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)


def write_atomic(path: Path, data: bytes, mode: int | None = None, *, make_parents: bool = False) -> list[Path]:
    """Replace `path` with `data` through a temporary file in the same directory, renamed over it, taking
    `mode` (else the umask's default); returns the directories made for it, deepest first. On any failure
    `path` is untouched and nothing is left behind."""
    made: list[Path] = []
    try:
        with parent_dir(path, made if make_parents else None) as parent:
            temp = f".{path.name}.{secrets.token_hex(6)}.kcode-tmp"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                         dir_fd=parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    if mode is not None:
                        os.fchmod(f.fileno(), stat.S_IMODE(mode))
                    os.fsync(f.fileno())
                os.replace(temp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp, dir_fd=parent)
                raise
    except BaseException:
        remove_empty_dirs(made)
        raise
    return made


def remove_file(path: Path) -> None:
    """Remove the entry `path` itself (a symlink there is removed, not followed); a missing one is fine."""
    with contextlib.suppress(FileNotFoundError), parent_dir(path) as parent:
        os.unlink(path.name, dir_fd=parent)


def remove_empty_dirs(directories: Sequence[Path]) -> None:
    """Remove `directories` (deepest first) while they are empty; one that is not stays, with its parents."""
    for directory in directories:
        try:
            with parent_dir(directory) as parent:
                os.rmdir(directory.name, dir_fd=parent)
        except OSError:
            return


def _mode_or_none(name: str, parent: int) -> int | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return None
