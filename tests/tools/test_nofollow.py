"""Walking paths by descriptor: a symlink swapped in after the check never redirects a read or a write."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.editor import EditorTool
from tools.editor_view import open_regular_file
from tools.errors import ToolError
from tools.nofollow import PathChanged, parent_dir, read_regular, remove_empty_dirs, write_atomic
from tools.settings import ToolSettings
from tools.workspace import Workspace


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return workspace


def finishes(action: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """The result of `action`, run in a thread that must end within `timeout_s` (a FIFO must not block it)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(action())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the call blocked"
    return outcome[0]


_SWAPPER = """
import os, shutil, sys
root, decoy, stop = sys.argv[1:]
sub, parked = os.path.join(root, "sub"), os.path.join(root, "sub.real")
swaps = 0
while not os.path.exists(stop):
    try:
        os.rename(sub, parked)
        os.symlink(decoy, sub)
        os.unlink(sub)
        os.rename(parked, sub)
        swaps += 1
    except OSError:  # the editor made a new `sub` while it was away: drop that one, put the real one back
        if os.path.islink(sub):
            os.unlink(sub)
        elif os.path.isdir(sub) and os.path.isdir(parked):
            shutil.rmtree(sub, ignore_errors=True)
        if os.path.isdir(parked) and not os.path.lexists(sub):
            os.rename(parked, sub)
print(swaps)
"""


@pytest.fixture
def swapper(root: Path, tmp_path: Path) -> Iterator[Path]:
    """Another process swaps `root/sub` between a real directory and a symlink to a decoy outside the workspace,
    as fast as it can, while the test runs; yields the decoy, which holds one file that must stay as it is."""
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "existing.txt").write_text("old decoy\n")
    (root / "sub").mkdir()
    (root / "sub" / "existing.txt").write_text("old\n")
    stop = tmp_path / "stop"
    process = subprocess.Popen([sys.executable, "-c", _SWAPPER, str(root), str(decoy), str(stop)],
                               stdout=subprocess.PIPE, text=True)
    yield decoy
    stop.touch()
    swaps = int(process.communicate(timeout=10)[0])
    assert swaps > 100, f"the race never really ran ({swaps} swaps)"


def test_a_directory_swapped_for_a_symlink_never_redirects_an_edit(root: Path, swapper: Path) -> None:
    editor = EditorTool(Workspace(root), ToolSettings())
    for i in range(200):
        for arguments in ({"command": "create", "path": f"sub/new-{i}.txt", "file_text": "x\n"},
                          {"command": "create", "path": f"sub/deeper-{i}/f.txt", "file_text": "x\n"},
                          {"command": "str_replace", "path": "sub/existing.txt", "old_str": "old", "new_str": "new"},
                          {"command": "insert", "path": "sub/existing.txt", "insert_line": 0, "new_str": "top\n"},
                          {"command": "undo_edit", "path": "sub/existing.txt"},
                          {"command": "undo_edit", "path": f"sub/new-{i}.txt"},
                          {"command": "view", "path": "sub/existing.txt"},
                          {"command": "view", "path": "sub"}):
            try:
                result = editor.run(arguments)
            except ToolError as exc:
                assert "decoy" not in str(exc) or "outside the workspace" in str(exc)
                continue
            assert "decoy" not in result.output
    assert sorted(p.name for p in swapper.iterdir()) == ["existing.txt"]
    assert (swapper / "existing.txt").read_text() == "old decoy\n"


def test_fifos_sockets_devices_and_swapped_in_symlinks_are_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(root / "sock"))
    (root / "target.txt").write_text("text\n")
    editor = EditorTool(Workspace(root, allow_outside=True), ToolSettings())
    try:
        for name, kind in (("pipe", "a FIFO"), ("sock", "a socket"), ("/dev/zero", "a character device")):
            for command in ({"command": "view"}, {"command": "str_replace", "old_str": "a", "new_str": "b"},
                            {"command": "insert", "insert_line": 0, "new_str": "b"}):
                error = finishes(lambda: editor.run({**command, "path": name}))  # noqa: B023 - awaited at once
                assert isinstance(error, ToolError) and f"{name} is {kind}; the editor opens only regular" in str(error)
        (root / "link").symlink_to(root / "target.txt")  # as if swapped in after the path was resolved
        for path in (root / "pipe", root / "sock", root / "link", Path("/dev/zero")):
            error = finishes(lambda: open_regular_file(path, path.name))  # noqa: B023 - awaited at once
            assert isinstance(error, ToolError) and "the editor opens only regular files" in str(error)
    finally:
        server.close()


def test_a_symlink_on_the_way_ends_the_walk(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.txt").write_text("kept\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(PathChanged, match="link is a symlink, not a directory"):
        write_atomic(tmp_path / "link" / "f.txt", b"changed\n")
    with pytest.raises(PathChanged):
        read_regular(tmp_path / "link" / "f.txt")
    assert read_regular(tmp_path / "real" / "f.txt") == b"kept\n"
    assert read_regular(tmp_path / "real") is None and read_regular(tmp_path / "missing") is None


def test_missing_parents_are_made_reported_and_removed_again(tmp_path: Path) -> None:
    made = write_atomic(tmp_path / "a" / "b" / "f.txt", b"x", make_parents=True)
    assert made == [tmp_path / "a" / "b", tmp_path / "a"]
    (tmp_path / "a" / "b" / "f.txt").unlink()
    remove_empty_dirs(made)
    assert list(tmp_path.iterdir()) == []
    with parent_dir(tmp_path / "f.txt") as fd:
        assert os.path.samestat(os.fstat(fd), tmp_path.stat())


def test_write_atomic_keeps_the_given_mode_and_uses_the_umask_for_new_files(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_bytes(b"echo old\n")
    script.chmod(0o755)
    write_atomic(script, b"echo new\n", script.stat().st_mode)
    assert script.read_bytes() == b"echo new\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    old_umask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "fresh.txt", b"x")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "fresh.txt").stat().st_mode) == 0o640


def test_a_failed_write_leaves_no_temporary_file_nor_the_directories_it_made(tmp_path: Path) -> None:
    target = tmp_path / "new" / "taken"
    target.mkdir(parents=True)
    (target / "inside.txt").write_text("keep")
    with pytest.raises(OSError):
        write_atomic(target, b"data")  # the final rename onto a directory fails
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["taken"]
    assert (target / "inside.txt").read_text() == "keep"
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "made" / "deeper" / "f.txt", "not bytes", make_parents=True)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
