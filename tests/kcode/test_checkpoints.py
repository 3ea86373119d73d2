"""Checkpoints on real workspaces: real git repositories with uncommitted work, files changed by real shell
commands, and the user's own `.git` compared byte for byte before and after."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from kcode.agent.events import Event, Notice
from kcode.agent.loop import Agent
from kcode.backends.base import ToolCallReady
from kcode.checkpoints.steps import SessionCheckpoints, describe, history_before
from kcode.checkpoints.store import Checkpoint, CheckpointError, CheckpointStore, store_directory
from kcode.commands.checkpoints import print_checkpoints, restore_report
from kcode.messages import ToolCall, user
from kcode.sessions import SessionStore
from tests.kcode.scripted import ScriptedBackend, Step, answer, calls, create, make_toolset, shell

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def sh(command: str, cwd: Path) -> str:
    return subprocess.run(command, shell=True, cwd=cwd, check=True, capture_output=True, text=True).stdout


def git_state(repo: Path) -> dict[str, str]:
    """Every file under .git by content hash, then what git itself reports (read without refreshing the index)."""
    files = {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((repo / ".git").rglob("*")) if p.is_file()}
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    for command in ("status --porcelain", "stash list", "for-each-ref", "rev-parse HEAD", "diff --cached"):
        files[command] = subprocess.run(["git", *command.split()], cwd=repo, env=env, capture_output=True,
                                        text=True, check=True).stdout
    return files


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Committed files, a stash, a staged change, an unstaged change, an untracked file and an ignored one."""
    root = tmp_path / "repo"
    root.mkdir()
    sh("git init -q && printf 'ignored.log\\n' > .gitignore && printf 'one\\ntwo\\n' > a.txt && echo keep > b.txt"
       " && echo gone > staged.txt", root)
    sh(f"{' '.join(GIT)} add -A && {' '.join(GIT)} commit -qm init", root)
    sh(f"echo stashed >> b.txt && {' '.join(GIT)} stash -q", root)
    sh("echo more >> staged.txt && git add staged.txt && echo edited >> b.txt && echo new > untracked.txt"
       " && echo log > ignored.log", root)
    return root


def store_for(root: Path, tmp_path: Path, **caps: int) -> CheckpointStore:
    return CheckpointStore(root, tmp_path / "data" / "checkpoints" / "w", **caps)


def snap(store: CheckpointStore, step: int, tool: str = "bash") -> Checkpoint:
    return store.snapshot(session="s", step=step, tool=tool, description=f"step {step}")


def test_restore_brings_back_shell_changes_and_leaves_the_users_git_untouched(repo: Path, tmp_path: Path) -> None:
    before_files = {p: (repo / p).read_bytes() for p in ("a.txt", "b.txt", "staged.txt", "untracked.txt")}
    before_git = git_state(repo)
    store = store_for(repo, tmp_path)
    checkpoint = store.snapshot(session="s", step=1, tool="bash", description="sed")
    sh("sed -i s/one/ONE/ a.txt && rm staged.txt untracked.txt && mkdir -p new/deep && echo x > new/deep/f"
       " && echo y > made.txt && echo changed > ignored.log", repo)
    current = store.snapshot(session="s", step=2, tool="restore", description="before undo")

    restored = store.restore(checkpoint, current)

    assert sorted(restored.written) == ["a.txt", "staged.txt", "untracked.txt"]
    assert sorted(restored.deleted) == ["made.txt", "new/deep/f"]
    assert {p: (repo / p).read_bytes() for p in before_files} == before_files
    assert not (repo / "made.txt").exists() and not (repo / "new").exists()
    assert (repo / "ignored.log").read_text() == "changed\n"  # ignored: never saved, never touched
    assert git_state(repo) == before_git
    assert store.changed_files(checkpoint, current) == ["a.txt", "made.txt", "new/deep/f", "staged.txt",
                                                        "untracked.txt"]


def test_a_restore_is_itself_undoable(repo: Path, tmp_path: Path) -> None:
    steps = SessionCheckpoints(store_for(repo, tmp_path), "s")
    assert steps.before_step(ToolCall("c1", "bash", json.dumps({"command": "sed -i s/one/1/ a.txt"})), ()) is None
    sh("sed -i s/one/1/ a.txt && rm b.txt", repo)

    steps.undo()
    assert (repo / "a.txt").read_text() == "one\ntwo\n" and (repo / "b.txt").exists()
    steps.undo()  # the undo took a checkpoint first: undoing again puts the step's changes back
    assert (repo / "a.txt").read_text() == "1\ntwo\n" and not (repo / "b.txt").exists()
    assert [c.tool for c in steps.taken] == ["bash", "restore", "restore"]


def test_a_workspace_that_is_not_a_git_repository_works_too(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    sh("echo a > a.txt && mkdir sub && echo b > sub/b.txt", root)
    store = store_for(root, tmp_path)
    checkpoint = snap(store, 1)
    sh("rm -r sub && echo c > a.txt", root)
    store.restore(checkpoint, snap(store, 2))
    assert (root / "a.txt").read_text() == "a\n" and (root / "sub" / "b.txt").read_text() == "b\n"
    assert not (root / ".git").exists()


def test_files_over_the_caps_are_named_and_a_restore_never_destroys_them(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    (root / "big.bin").write_bytes(b"x" * 200)
    (root / "small.txt").write_text("s")
    (root / "mid1.txt").write_text("m" * 60)
    (root / "mid2.txt").write_text("n" * 70)
    store = store_for(root, tmp_path, max_file_bytes=100, max_snapshot_bytes=100)
    checkpoint = store.snapshot(session="s", step=1, tool="bash", description="x")
    assert checkpoint.skipped == ("big.bin", "mid2.txt")  # over the file cap; the largest over the total

    (root / "big.bin").write_bytes(b"y" * 300)
    (root / "small.txt").write_text("t")
    (root / "mid1.txt").write_bytes(b"z" * 150)  # grew past the cap: its content now is in no checkpoint
    current = store.snapshot(session="s", step=2, tool="restore", description="x")
    restored = store.restore(checkpoint, current)

    assert restored.written == ("small.txt",)
    assert restored.kept == ("mid1.txt", "mid2.txt")  # mid2 fits now, but the target has no copy of it
    assert (root / "small.txt").read_text() == "s" and (root / "mid2.txt").exists()
    assert (root / "big.bin").read_bytes() == b"y" * 300 and (root / "mid1.txt").read_bytes() == b"z" * 150
    assert "left alone (too large to checkpoint)[/] mid1.txt" in restore_report(restored)


def test_a_store_inside_the_workspace_never_saves_the_stores(tmp_path: Path) -> None:
    home = tmp_path / "home"  # kcode run in a home directory: its data directory is inside the workspace
    home.mkdir()
    (home / "notes.txt").write_text("n")
    store = CheckpointStore(home, store_directory(home / ".local" / "share" / "kcode", home))
    first = snap(store, 1)
    second = snap(store, 2)
    assert store.changed_files(first, second) == []
    assert store.changed_files(first, None) == []


def test_only_calls_that_can_change_files_are_checkpointed_and_failures_are_notes(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    steps = SessionCheckpoints(store_for(root, tmp_path), "s")
    assert steps.before_step(ToolCall("c1", "editor", json.dumps({"command": "view", "path": "a"})), ()) is None
    assert steps.before_step(ToolCall("c2", "editor", json.dumps({"command": "create", "path": "a"})), ()) is None
    assert [(c.tool, c.description, c.call_id) for c in steps.taken] == [("editor", "create a", "c2")]

    (tmp_path / "blocked").write_text("a file where the store's folder should be")
    broken = SessionCheckpoints(CheckpointStore(root, tmp_path / "blocked" / "store"), "s")
    note = broken.before_step(ToolCall("c3", "bash", json.dumps({"command": "true"})), ())
    assert note is not None and note.startswith("No checkpoint before this step")
    with pytest.raises(CheckpointError, match="nothing to undo"):
        broken.undo()


def test_the_loop_checkpoints_before_a_command_and_a_failed_snapshot_does_not_stop_it(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    (root / "f.txt").write_text("before\n")
    (tmp_path / "blocked").write_text("")
    events: list[Event] = []
    backend = ScriptedBackend([calls(shell("sed -i s/before/after/ f.txt")), calls(create("g.txt", "g")),
                               answer("done")])
    working = SessionCheckpoints(store_for(root, tmp_path), "s")
    Agent(backend, make_toolset(root), events.append, checkpoints=working).run_turn(user("go"))
    assert [c.tool for c in working.taken] == ["bash", "editor"]
    working.undo()  # the editor's create
    assert not (root / "g.txt").exists() and (root / "f.txt").read_text() == "after\n"

    broken = SessionCheckpoints(CheckpointStore(root, tmp_path / "blocked" / "s"), "s")
    backend = ScriptedBackend([calls(shell("echo ran > r.txt")), answer("done")])
    Agent(backend, make_toolset(root), events.append, checkpoints=broken).run_turn(user("go"))
    assert (root / "r.txt").read_text() == "ran\n"
    assert any(isinstance(e, Notice) and "No checkpoint" in e.message for e in events)


def same_ids(steps: list[Step]) -> list[Step]:
    """The completion with its calls' ids as a provider that sends none gets them: call_0, call_1, ..."""
    return [ToolCallReady(replace(s.call, id="call_0")) if isinstance(s, ToolCallReady) else s for s in steps]


def test_rewind_restores_files_and_cuts_the_conversation_before_that_step(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    (root / "f.txt").write_text("0\n")
    backend = ScriptedBackend([same_ids(calls(shell("echo 1 > f.txt"))), answer("one"),
                               same_ids(calls(shell("echo 2 > f.txt"))), same_ids(calls(shell("echo 3 > f.txt"))),
                               answer("three")])
    steps = SessionCheckpoints(store_for(root, tmp_path), "s")
    agent = Agent(backend, make_toolset(root), lambda e: None, checkpoints=steps)
    agent.run_turn(user("first"))
    agent.run_turn(user("second"))

    assert len({c.call_id for c in steps.taken}) == 1  # a provider without ids: every call is call_0
    target = steps.step_back(2)
    history = history_before(agent.conversation.messages, target)
    steps.rewind(target)
    assert (root / "f.txt").read_text() == "1\n"
    assert history is not None and history[-1] == user("second")
    assert [m.content for m in history if m.role == "assistant"] == ["", "one"]
    assert steps.step_back(1).call_id == steps.taken[0].call_id  # the rewound steps are gone
    with pytest.raises(CheckpointError, match="cannot rewind 2"):
        steps.step_back(2)

    store = SessionStore(tmp_path / "sessions")
    recorder = store.create(root, "m")
    for message in agent.conversation.messages:
        recorder.add(message)
    recorder.rewound(history)
    assert store.load(recorder.id).messages == history  # what --resume starts from
    assert history_before(history, steps.taken[-1]) is None  # that message is gone now


def test_a_resumed_session_finds_its_checkpoints_and_the_table_lists_them(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    store = store_for(root, tmp_path)
    SessionCheckpoints(store, "s").before_step(ToolCall("c1", "bash", json.dumps({"command": "touch x"})), ())
    sh("touch x", root)
    resumed = SessionCheckpoints(store, "s")
    assert [c.call_id for c in resumed.taken] == ["c1"]
    assert SessionCheckpoints(store, "other").taken == []

    console = Console(record=True, width=200)
    print_checkpoints(store, console)
    table = console.export_text()
    assert "bash" in table and "touch x" in table and "1: x" in table and "s" in table


def test_describe_says_what_the_call_does() -> None:
    assert describe(ToolCall("1", "bash", json.dumps({"command": "sed -i\n  s/a/b/ f"}))) == "sed -i s/a/b/ f"
    assert describe(ToolCall("2", "editor", json.dumps({"command": "str_replace", "path": "x.py"}))) \
        == "str_replace x.py"
    assert len(describe(ToolCall("3", "bash", json.dumps({"command": "x" * 500})))) == 80


def test_kcode_checkpoints_lists_and_restores_from_the_command_line(tmp_path: Path) -> None:
    root = tmp_path / "w"
    root.mkdir()
    (root / "f.txt").write_text("old\n")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "XDG_"))} | {"HOME": str(home)}
    store = CheckpointStore(root, store_directory(home / ".local" / "share" / "kcode", root))
    checkpoint = store.snapshot(session="s", step=1, tool="bash", description="rewrite f")
    (root / "f.txt").write_text("new\n")

    def kcode(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kcode", "checkpoints", str(root), *args], env=env,
                              capture_output=True, text=True, timeout=60)

    listed = kcode()
    assert listed.returncode == 0 and checkpoint.short_id in listed.stdout and "rewrite f" in listed.stdout
    restored = kcode("--restore", checkpoint.id[:8])
    assert restored.returncode == 0, restored.stderr
    assert "restored f.txt" in restored.stdout and (root / "f.txt").read_text() == "old\n"
    assert kcode("--restore", "ffffffffff").returncode == 2
