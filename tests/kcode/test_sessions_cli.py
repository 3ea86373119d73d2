"""`kcode sessions` as a user runs it: the saved sessions of this workspace, or of all with --all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kcode.messages import user
from kcode.sessions import SessionStore


def _sessions(args: list[str], home: Path, cwd: Path, columns: int = 200) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KCODE_", "XDG_", "MOONSHOT_", "OPENAI_"))}
    return subprocess.run([sys.executable, "-m", "kcode", "sessions", *args], env={**env, "HOME": str(home),
                          "COLUMNS": str(columns)}, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_lists_this_workspaces_sessions_and_all_with_all(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / ".local" / "share" / "kcode" / "sessions")
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    mine = store.create(here.resolve(), "kimi-k2-0905-preview")
    mine.add(user("fix the flaky date test"))
    other = store.create(elsewhere.resolve(), "other-model")
    other.add(user("explain the build"))

    done = _sessions([], tmp_path, here)
    assert done.returncode == 0, done.stderr
    assert mine.id in done.stdout and "fix the flaky date test" in done.stdout
    assert other.id not in done.stdout
    assert "kcode chat --resume ID" in done.stdout

    everything = _sessions(["--all"], tmp_path, here)
    assert mine.id in everything.stdout and other.id in everything.stdout
    assert str(elsewhere.resolve()) in everything.stdout


def test_no_sessions_says_how_to_start_one(tmp_path: Path) -> None:
    done = _sessions([], tmp_path, tmp_path)
    assert done.returncode == 0
    assert "No sessions" in done.stdout and "kcode chat" in done.stdout


def test_at_80_columns_ids_and_requests_stay_readable_and_empty_sessions_are_left_out(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / ".local" / "share" / "kcode" / "sessions")
    deep = tmp_path / "projects" / "a-rather-long-project-name" / "with" / "nested" / "folders"
    deep.mkdir(parents=True)
    request = "fix the flaky date test in tests/test_dates.py and then run the whole suite again"
    kept = store.create(deep.resolve(), "kimi-k2-0905-preview")
    kept.add(user(request))
    empty = store.create(deep.resolve(), "kimi-k2-0905-preview")  # a chat left at once, or one /clear started

    done = _sessions(["--all"], tmp_path, tmp_path, columns=80)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] != "…" and str(deep.resolve()) in done.stdout.replace("\n", "")
    assert any(line.startswith(kept.id + "  ") for line in lines)
    assert any(line.strip().startswith(request[:60]) for line in lines)
    assert empty.id not in done.stdout
