"""The fix diff: every change since the start, new and deleted files included, the user's git state untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kcode.workspace_diff import WorkspaceSnapshot


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "app.py").write_text("print('hello')\n")
    (root / "old.txt").write_text("old\n")
    (root / ".gitignore").write_text("build/\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    return root


def _apply_check(root: Path, patch: bytes, tmp_path: Path) -> None:
    """The patch must apply in reverse to the files now, proving it is exact and complete."""
    patch_file = tmp_path / "fix.patch"
    patch_file.write_bytes(patch)
    subprocess.run(["git", "apply", "--check", "-R", str(patch_file)], cwd=root, check=True)


def test_diff_has_modified_new_and_deleted_files(repo: Path, tmp_path: Path) -> None:
    with WorkspaceSnapshot.take(repo) as snapshot:
        (repo / "app.py").write_text("print('hello, world')\n")
        (repo / "new.py").write_text("NEW = True\n")
        (repo / "old.txt").unlink()
        patch = snapshot.diff()
    text = patch.decode()
    assert "-print('hello')\n+print('hello, world')" in text
    assert "new file mode 100644" in text and "+NEW = True" in text
    assert "deleted file mode 100644" in text and "-old" in text
    _apply_check(repo, patch, tmp_path)


def test_changes_present_before_the_start_are_not_the_agents(repo: Path) -> None:
    (repo / "app.py").write_text("print('user edit')\n")
    (repo / "scratch.txt").write_text("user's notes\n")
    with WorkspaceSnapshot.take(repo) as snapshot:
        (repo / "pkg" / "mod.py").write_text("x = 2\n")
        text = snapshot.diff().decode()
    assert "pkg/mod.py" in text
    assert "app.py" not in text
    assert "scratch.txt" not in text


def test_ignored_files_and_python_caches_are_left_out(repo: Path) -> None:
    with WorkspaceSnapshot.take(repo) as snapshot:
        (repo / "build").mkdir()
        (repo / "build" / "out.o").write_bytes(b"\x00\x01")
        (repo / "pkg" / "__pycache__").mkdir()
        (repo / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00pyc")
        assert snapshot.diff() == b""


def test_the_users_index_head_and_status_are_untouched(repo: Path) -> None:
    (repo / "staged.txt").write_text("staged\n")
    _git(repo, "add", "staged.txt")
    before = (_git(repo, "status", "--porcelain"), _git(repo, "rev-parse", "HEAD"), _git(repo, "stash", "list"))
    with WorkspaceSnapshot.take(repo) as snapshot:
        (repo / "app.py").write_text("changed\n")
        snapshot.diff()
    (repo / "app.py").write_text("print('hello')\n")
    after = (_git(repo, "status", "--porcelain"), _git(repo, "rev-parse", "HEAD"), _git(repo, "stash", "list"))
    assert after == before
    assert _git(repo, "diff", "--cached", "--name-only") == "staged.txt\n"


def test_the_repositorys_object_store_is_untouched(repo: Path) -> None:
    (repo / "data.bin").write_bytes(bytes(range(256)) * 4096)  # untracked before the run
    objects = sorted(p.relative_to(repo) for p in (repo / ".git" / "objects").rglob("*"))
    with WorkspaceSnapshot.take(repo) as snapshot:
        (repo / "data.bin").write_bytes(b"changed")
        (repo / "app.py").write_text("print('bye')\n")
        text = snapshot.diff().decode(errors="replace")
    assert "data.bin" in text and "print('bye')" in text
    assert sorted(p.relative_to(repo) for p in (repo / ".git" / "objects").rglob("*")) == objects


def test_binary_and_non_utf8_files_survive_the_round_trip(repo: Path, tmp_path: Path) -> None:
    with WorkspaceSnapshot.take(repo) as snapshot:
        (repo / "logo.bin").write_bytes(bytes(range(256)))
        (repo / "latin.txt").write_bytes("café\n".encode("latin-1"))
        patch = snapshot.diff()
    assert b"GIT binary patch" in patch
    assert "café\n".encode("latin-1") in patch
    _apply_check(repo, patch, tmp_path)


def test_a_directory_that_is_not_a_repository_works_too(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    with WorkspaceSnapshot.take(root) as snapshot:
        (root / "a.txt").write_text("b\n")
        (root / "c.txt").write_text("c\n")
        text = snapshot.diff().decode()
    assert "-a\n+b" in text and "+c" in text
    assert not (root / ".git").exists()


def test_a_subdirectory_of_a_repository_diffs_only_itself(repo: Path) -> None:
    with WorkspaceSnapshot.take(repo / "pkg") as snapshot:
        (repo / "pkg" / "mod.py").write_text("x = 3\n")
        (repo / "app.py").write_text("outside\n")
        text = snapshot.diff().decode()
    assert "pkg/mod.py" in text
    assert "app.py" not in text


def test_close_removes_the_scratch_space(repo: Path) -> None:
    snapshot = WorkspaceSnapshot.take(repo)
    scratch = snapshot._scratch
    assert scratch.exists()
    snapshot.close()
    assert not scratch.exists()
