"""What an agent changed in a workspace: snapshot the files before, diff against them after.

A snapshot is a git tree written through a private index into a private object store (the repository's
own objects serve as an alternate), so the user's index, objects, HEAD, branches and stash are never
touched; new and deleted files count, ignored files do not. A directory that is not a git repository gets
a private git directory of its own for the duration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kcode.errors import KcodeError

JUNK_PATTERNS = (
    "__pycache__/\n*.py[cod]\n.pytest_cache/\n.mypy_cache/\n.ruff_cache/\n*.egg-info/\n.eggs/\n.coverage\n"
    ".tox/\n.nox/\n"
)
"""What running and installing code leaves behind (gitignore syntax): never part of anybody's fix."""


class WorkspaceDiffError(KcodeError):
    """git is missing or failed; the message says which command and why."""


class WorkspaceSnapshot:
    """The state of the files under `root` when `take` ran; `diff()` gives what changed since."""

    def __init__(self, root: Path, scratch: Path, git_dir: Path | None, top: Path, tree: str,
                 objects: Path | None = None) -> None:
        self.root, self._scratch, self._git_dir, self._top, self.tree = root, scratch, git_dir, top, tree
        self._repository_objects = objects

    @classmethod
    def take(cls, root: Path) -> WorkspaceSnapshot:
        if shutil.which("git") is None:
            raise WorkspaceDiffError("git is not installed; kcode needs it to record what the agent changed")
        root = root.resolve()
        scratch = Path(tempfile.mkdtemp(prefix="kcode-snapshot-"))
        (scratch / "exclude").write_text(JUNK_PATTERNS)
        top = _repository_top(root)
        git_dir = objects = None
        if top is None:
            git_dir, top = scratch / "git", root
            _run(["git", "init", "-q", "--bare", str(git_dir)], cwd=root, env=None)
        else:
            objects = Path(_run(["git", "rev-parse", "--git-path", "objects"], cwd=top, env=None).decode().strip())
            objects = objects if objects.is_absolute() else top / objects
            (scratch / "objects").mkdir()
        snapshot = cls(root, scratch, git_dir, top, tree="", objects=objects)
        snapshot.tree = snapshot._write_tree(seed_index=git_dir is None)
        return snapshot

    def diff(self) -> bytes:
        """A unified diff from the snapshot to the files now, applicable with `git apply`.

        Bytes, because the files' own encodings pass through it untouched; binary files come as git's
        binary patches.
        """
        now = self._write_tree(seed_index=False)
        scope = ["--", str(self.root.relative_to(self._top))] if self.root != self._top else []
        return self._git(["diff", "--binary", "--no-color", "--no-ext-diff", "--no-renames", self.tree, now,
                          *scope])

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> WorkspaceSnapshot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_tree(self, *, seed_index: bool) -> str:
        index = self._scratch / "index"
        if seed_index and not index.exists():
            real_index = Path(self._git(["rev-parse", "--git-path", "index"]).decode().strip())
            real_index = real_index if real_index.is_absolute() else self._top / real_index
            if real_index.exists():  # its stat cache spares re-hashing files that did not change
                shutil.copyfile(real_index, index)
        self._git(["add", "-A", "--", "."])
        return self._git(["write-tree"]).decode().strip()

    def _git(self, args: list[str]) -> bytes:
        env = {**os.environ, "GIT_INDEX_FILE": str(self._scratch / "index")}
        if self._repository_objects is not None:  # new blobs go to the scratch store, not the user's
            env |= {"GIT_OBJECT_DIRECTORY": str(self._scratch / "objects"),
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(self._repository_objects)}
        prefix = ["git", "-c", f"core.excludesFile={self._scratch / 'exclude'}", "-c", "core.autocrlf=false"]
        if self._git_dir is not None:
            prefix += [f"--git-dir={self._git_dir}", f"--work-tree={self._top}"]
        return _run([*prefix, *args], cwd=self._top, env=env)


def _repository_top(root: Path) -> Path | None:
    probe = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    return Path(probe.stdout.strip()).resolve() if probe.returncode == 0 else None


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None) -> bytes:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True)
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        raise WorkspaceDiffError(f"`{' '.join(command[:1] + command[-3:])}` failed: {stderr}")
    return done.stdout
