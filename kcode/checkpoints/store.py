"""The shadow store: snapshots of a workspace as commits in a git repository that kcode alone owns.

It lives under `<data dir>/checkpoints/<hash of the workspace path>/`, which the sandbox hides from the
agent's commands. Every git command runs with that repository as `GIT_DIR`, the workspace as the work tree,
a private index and no system or global config, so the user's index, HEAD, refs, stash, hooks and config
are never read or written, and a workspace that is not a git repository works the same. The private index
persists between runs, so snapshotting an unchanged tree re-hashes nothing. `.gitignore` files count (git
reads them from the work tree), and so does JUNK_PATTERNS; files over the size caps are left out and named,
and a restore never deletes or overwrites a file whose content no checkpoint holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kcode.errors import KcodeError
from kcode.isolated_git import git_env
from kcode.workspace_diff import JUNK_PATTERNS

MAX_FILE_BYTES = 5 * 2**20
"""A file larger than this is left out of a checkpoint (and named in its `skipped`)."""
MAX_SNAPSHOT_BYTES = 100 * 2**20
"""The most new or changed content one checkpoint takes in; the largest files beyond it are left out."""
_REF = "refs/kcode/checkpoints"
_TIMEOUT_S = 120


class CheckpointError(KcodeError):
    """git is missing or failed, or no checkpoint fits the request; the message says which."""


@dataclass(frozen=True)
class Checkpoint:
    """One snapshot: the workspace as it was just before step `step` of session `session` ran."""

    id: str
    """The commit's hash in the shadow store."""
    created_at: datetime
    session: str
    step: int
    tool: str
    """The tool of the call about to run, or "restore" for the snapshot an /undo or /rewind takes first."""
    description: str
    call_id: str = ""
    message_index: int = -1
    """Where in the conversation the assistant message that made the call was, for rewinding to it."""
    skipped: tuple[str, ...] = ()
    """Files left out for their size: a restore to this checkpoint leaves them alone."""
    parent: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:10]


@dataclass(frozen=True)
class Restored:
    """What a restore did, paths relative to the workspace."""

    checkpoint: Checkpoint
    written: tuple[str, ...]
    """Files put back as they were (modified or deleted since)."""
    deleted: tuple[str, ...]
    """Files created since, removed."""
    kept: tuple[str, ...]
    """Files that differ but were left alone: no checkpoint holds the content a restore would destroy."""


def store_directory(data_dir: Path, workspace: Path) -> Path:
    """Where the checkpoints of `workspace` live; one store per resolved workspace path."""
    digest = hashlib.sha256(str(workspace.resolve()).encode()).hexdigest()[:16]
    return data_dir / "checkpoints" / digest


class CheckpointStore:
    """The checkpoints of one workspace, newest last in a single line of commits."""

    def __init__(self, workspace: Path, directory: Path, *, max_file_bytes: int = MAX_FILE_BYTES,
                 max_snapshot_bytes: int = MAX_SNAPSHOT_BYTES) -> None:
        self.workspace = workspace.resolve()
        self.directory = directory
        self.max_file_bytes, self.max_snapshot_bytes = max_file_bytes, max_snapshot_bytes
        self._git_dir = directory / "git"
        self._index = directory / "index"

    def snapshot(self, *, session: str, step: int, tool: str, description: str, call_id: str = "",
                 message_index: int = -1) -> Checkpoint:
        """Commit the workspace as it is now."""
        with self._locked():
            tree, skipped = self._write_tree(self._index)
            parent = self._head()
            meta = {"session": session, "step": step, "tool": tool, "description": description,
                    "call_id": call_id, "message_index": message_index, "skipped": skipped}
            message = f"step {step} · {tool}: {description}\n\n{json.dumps(meta, ensure_ascii=False)}\n"
            commit = self._git(["commit-tree", tree, *(["-p", parent] if parent else [])],
                               stdin=message.encode()).decode().strip()
            self._git(["update-ref", _REF, commit, parent or "0" * 40])
        return Checkpoint(id=commit, created_at=datetime.now(UTC), session=session, step=step, tool=tool,
                          description=description, call_id=call_id, message_index=message_index,
                          skipped=tuple(skipped), parent=parent)

    def history(self) -> list[Checkpoint]:
        """Every checkpoint of the workspace, newest first; none before the first snapshot."""
        if not self._git_dir.exists() or not self._head():
            return []
        out = self._git(["log", "-z", "--format=%H%x1f%P%x1f%ct%x1f%B", _REF]).decode(errors="replace")
        return [_parse(record) for record in out.split("\0") if record.strip()]

    def changed_files(self, older: Checkpoint, newer: Checkpoint | None) -> list[str]:
        """Files that differ between two checkpoints, or between `older` and the files now."""
        if newer is not None:
            return [path for _, path in self._diff(older.id, newer.id)]
        with self._locked():
            scratch = self.directory / "index.scratch"
            if self._index.exists():
                shutil.copyfile(self._index, scratch)
            try:
                tree, _ = self._write_tree(scratch)
            finally:
                scratch.unlink(missing_ok=True)
        return [path for _, path in self._diff(older.id, tree)]

    def restore(self, target: Checkpoint, current: Checkpoint) -> Restored:
        """Make the files that differ between `current` (a snapshot of now) and `target` as in `target`.

        Files that do not differ, ignored files and files too large for either checkpoint are not touched.
        """
        keep = set(target.skipped) | set(current.skipped)
        written, deleted, kept = [], [], []
        for status, path in self._diff(target.id, current.id):
            if path in keep:
                kept.append(path)
            elif status == "A":  # created since the target
                deleted.append(path)
            else:
                written.append(path)
        with self._locked():
            target_dirs = set(self._git(["ls-tree", "-r", "-d", "-z", "--name-only", target.id]).decode(
                errors="surrogateescape").split("\0"))
            for path in deleted:
                self._delete(path, target_dirs)
            if written:
                pathspecs = b"".join(os.fsencode(p) + b"\0" for p in written)
                self._git(["restore", f"--source={target.id}", "--worktree", "--pathspec-from-file=-",
                           "--pathspec-file-nul"], stdin=pathspecs, literal=True)
        return Restored(target, tuple(written), tuple(deleted), tuple(kept))

    def _delete(self, path: str, target_dirs: set[str]) -> None:
        """Remove a created file, then the folders it leaves empty that the target did not have."""
        file = self.workspace / path
        if file.is_symlink() or file.is_file():
            file.unlink()
        parent = Path(path).parent
        while str(parent) != "." and str(parent) not in target_dirs:
            try:
                (self.workspace / parent).rmdir()
            except OSError:  # not empty, or already gone
                break
            parent = parent.parent

    def _write_tree(self, index: Path) -> tuple[str, list[str]]:
        """Stage the work tree into `index` (leaving out oversized files) and write its tree."""
        self._init()
        listed = self._git(["ls-files", "-z", "--others", "--modified", "--exclude-standard"])
        skipped = self._oversized(sorted({os.fsdecode(p) for p in listed.split(b"\0") if p}))
        pathspecs = b"".join(os.fsencode(f":(exclude,literal){p}") + b"\0" for p in skipped)
        if skipped:  # a file grown too large since the last snapshot must leave the index, not stay stale
            self._git(["rm", "-q", "-r", "-f", "--cached", "--ignore-unmatch", "--pathspec-from-file=-",
                       "--pathspec-file-nul"], stdin=b"".join(os.fsencode(p) + b"\0" for p in skipped),
                      literal=True, index=index)
        self._git(["add", "-A", "--pathspec-from-file=-", "--pathspec-file-nul"], stdin=pathspecs + b".\0",
                  index=index)
        return self._git(["write-tree"], index=index).decode().strip(), skipped

    def _oversized(self, paths: list[str]) -> list[str]:
        """Paths over the per-file cap, then the largest of the rest until they fit the per-snapshot cap."""
        sizes = []
        for path in paths:
            try:
                sizes.append((os.lstat(self.workspace / path).st_size, path))
            except OSError:  # gone since git listed it
                continue
        skipped = [path for size, path in sizes if size > self.max_file_bytes]
        total = 0
        for size, path in sorted(entry for entry in sizes if entry[0] <= self.max_file_bytes):
            total += size
            if total > self.max_snapshot_bytes:
                skipped.append(path)
        return sorted(skipped)

    def _diff(self, old: str, new: str) -> list[tuple[str, str]]:
        out = self._git(["diff-tree", "-r", "-z", "--no-renames", "--name-status", old, new]).split(b"\0")
        return [(out[i].decode(), os.fsdecode(out[i + 1])) for i in range(0, len(out) - 1, 2)]

    def _head(self) -> str:
        done = subprocess.run(["git", "rev-parse", "-q", "--verify", _REF], env=self._env(self._index),
                              capture_output=True, cwd=self.workspace, timeout=_TIMEOUT_S)
        return done.stdout.decode().strip() if done.returncode == 0 else ""

    def _init(self) -> None:
        if (self._git_dir / "HEAD").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.directory / "exclude").write_text(JUNK_PATTERNS + self._stores_inside_workspace())
        self._git(["init", "-q", "--bare", str(self._git_dir)], bare=True)

    def _stores_inside_workspace(self) -> str:
        """An exclude line for the folder of kcode's stores when it lies in the workspace (a home directory
        as the workspace), so a checkpoint never swallows the checkpoints."""
        directory = self.directory.resolve()
        stores = directory.parent if directory.parent != self.workspace else directory
        if not stores.is_relative_to(self.workspace):
            return ""
        relative = stores.relative_to(self.workspace).as_posix()
        return "/" + "".join("\\" + c if c in "\\*?[]!# " else c for c in relative) + "/\n"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: two chats in one workspace share the private index."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _env(self, index: Path, *, literal: bool = False) -> dict[str, str]:
        return git_env({"GIT_DIR": str(self._git_dir), "GIT_WORK_TREE": str(self.workspace),
                        "GIT_INDEX_FILE": str(index), "GIT_AUTHOR_NAME": "kcode", "GIT_AUTHOR_EMAIL": "kcode@localhost",
                        "GIT_COMMITTER_NAME": "kcode", "GIT_COMMITTER_EMAIL": "kcode@localhost",
                        **({"GIT_LITERAL_PATHSPECS": "1"} if literal else {})})

    def _git(self, args: list[str], *, stdin: bytes | None = None, literal: bool = False,
             index: Path | None = None, bare: bool = False) -> bytes:
        if shutil.which("git") is None:
            raise CheckpointError("git is not installed; kcode needs it to keep checkpoints")
        config = ["-c", f"core.excludesFile={self.directory / 'exclude'}", "-c", "core.autocrlf=false",
                  "-c", f"core.hooksPath={os.devnull}", "-c", "core.fsmonitor=false", "-c", "gc.auto=0"]
        env = self._env(index or self._index, literal=literal)
        if bare:  # `git init --bare` refuses a work tree
            del env["GIT_WORK_TREE"]
        try:
            done = subprocess.run(["git", *config, *args], input=stdin, capture_output=True, cwd=self.workspace,
                                  env=env, timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CheckpointError(f"`git {args[0]}` in the checkpoint store took over {_TIMEOUT_S} s") from None
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace").strip()
            raise CheckpointError(f"`git {args[0]}` in the checkpoint store failed: {stderr}")
        return done.stdout


def _parse(record: str) -> Checkpoint:
    commit, parent, timestamp, body = record.lstrip("\n").split("\x1f", 3)
    try:
        meta = json.loads(body.split("\n\n", 1)[1])
    except (IndexError, json.JSONDecodeError):
        meta = {}
    return Checkpoint(id=commit, created_at=datetime.fromtimestamp(int(timestamp), UTC),
                      session=str(meta.get("session", "")), step=int(meta.get("step", 0)),
                      tool=str(meta.get("tool", "")), description=str(meta.get("description", body.split("\n")[0])),
                      call_id=str(meta.get("call_id", "")), message_index=int(meta.get("message_index", -1)),
                      skipped=tuple(meta.get("skipped", ())), parent=parent)
