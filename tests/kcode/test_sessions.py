"""Sessions: written line by line as the loop works, listed, resumed, and robust to a crash mid-write."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kcode.agent.conversation import Conversation
from kcode.agent.events import Compacted, Event, MessageAdded, UsageReport
from kcode.agent.loop import Agent
from kcode.messages import Message, system, user
from kcode.sessions import SessionError, SessionStore
from tests.kcode.scripted import ScriptedBackend, answer, calls, create, make_toolset


class StepClock:
    """Each call is one minute after the previous one."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> SessionStore:
    return SessionStore(tmp_path / "sessions", clock=StepClock())


def last_record(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


def test_every_message_is_on_disk_by_the_time_the_next_event_arrives(tmp_path: Path, store: SessionStore) -> None:
    root = tmp_path / "work"
    root.mkdir()
    recorder = store.create(root, "kimi-k2")
    checked: list[str] = []

    def sink(event: Event) -> None:
        recorder(event)
        if isinstance(event, MessageAdded):  # what a kill right now would leave behind
            assert last_record(recorder.path) == {"type": "message", "message": event.message.to_openai()}
            checked.append(event.message.role)

    conversation = Conversation([system("sys")])
    recorder.add(conversation.messages[0])
    backend = ScriptedBackend([calls(create("a.txt", "a")), answer("Wrote a.txt.")])
    Agent(backend, make_toolset(root), sink, conversation=conversation).run_turn(user("write a"))

    assert checked == ["user", "assistant", "tool", "assistant"]
    loaded = store.load(recorder.id)
    assert loaded.messages == conversation.messages
    assert loaded.info.message_count == 5 and loaded.info.model == "kimi-k2"
    assert loaded.info.workspace == str(root)


def test_a_killed_process_leaves_every_recorded_message_readable(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from kcode.agent.events import MessageAdded
        from kcode.messages import user
        from kcode.sessions import SessionStore
        recorder = SessionStore(Path({str(directory)!r})).create(Path("/w"), "m")
        recorder(MessageAdded(user("first")))
        recorder(MessageAdded(user("second")))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True,
                          timeout=60)
    assert done.returncode == -9, done.stderr
    (info,) = SessionStore(directory).list()
    assert [m.content for m in SessionStore(directory).load(info.id).messages] == ["first", "second"]


def test_list_shows_sessions_newest_first_with_their_first_request(tmp_path: Path, store: SessionStore) -> None:
    first = store.create(tmp_path / "a", "m1")
    first.add(system("sys"))
    first(MessageAdded(user("Fix the flaky test\nin tests/test_io.py")))
    second = store.create(tmp_path / "b", "m2")
    second(MessageAdded(user("x" * 500)))

    infos = store.list()

    assert [i.id for i in infos] == [second.id, first.id]
    assert infos[1].first_user_message == "Fix the flaky test"
    assert infos[1].message_count == 2
    assert infos[0].first_user_message == "x" * 200
    assert infos[1].started_at == datetime(2025, 3, 1, 9, 1, tzinfo=UTC)
    assert first.id.startswith("20250301-090100-")
    assert [i.id for i in store.list(workspace=tmp_path / "a")] == [first.id]


def test_ids_sort_by_start_time(tmp_path: Path) -> None:
    times = iter([datetime(2025, 1, 2, tzinfo=UTC), datetime(2024, 12, 31, 23, 59, tzinfo=UTC),
                  datetime(2025, 1, 2, 0, 0, 1, tzinfo=UTC)])
    store = SessionStore(tmp_path, clock=lambda: next(times))
    made = [store.create(tmp_path, "m").id for _ in range(3)]
    assert sorted(made) == [made[1], made[0], made[2]]
    assert [i.id for i in store.list()] == [made[2], made[0], made[1]]


def test_resume_appends_to_the_same_file(store: SessionStore, tmp_path: Path) -> None:
    recorder = store.create(tmp_path, "m")
    recorder(MessageAdded(user("one")))

    resumed = store.recorder(recorder.id[:18])  # a unique prefix is enough
    resumed(MessageAdded(Message("assistant", "two")))

    assert resumed.path == recorder.path
    assert [m.content for m in store.load(recorder.id).messages] == ["one", "two"]


def test_the_last_usage_totals_are_loaded_with_the_session(store: SessionStore, tmp_path: Path) -> None:
    recorder = store.create(tmp_path, "m")
    recorder(MessageAdded(user("one")))
    recorder(UsageReport(prompt_tokens=900, completion_tokens=100, total_tokens=1000, cost_usd=0.25))
    recorder(UsageReport(prompt_tokens=1200, completion_tokens=34, total_tokens=2234, cost_usd=0.5))
    loaded = store.load(recorder.id)
    assert (loaded.total_tokens, loaded.cost_usd) == (2234, 0.5)
    assert store.load(store.create(tmp_path, "m").id).total_tokens == 0


def test_a_compaction_is_replayed_on_load(store: SessionStore, tmp_path: Path) -> None:
    recorder = store.create(tmp_path, "m")
    for text in ("a", "b", "c"):
        recorder(MessageAdded(user(text)))
    recorder(Compacted(tokens_before=900, tokens_after=100, summary="S", history=(system("sys"), user("S"))))
    recorder(MessageAdded(user("d")))
    recorder(Compacted(tokens_before=900, tokens_after=100, summary="no history given"))

    loaded = store.load(recorder.id)

    assert [m.content for m in loaded.messages] == ["sys", "S", "d"]
    assert loaded.info.first_user_message == "a"  # what the session was about, not the summary


def test_a_line_cut_short_by_a_crash_is_skipped_and_dropped_on_resume(
        store: SessionStore, tmp_path: Path) -> None:
    recorder = store.create(tmp_path, "m")
    recorder(MessageAdded(user("kept")))
    with recorder.path.open("a") as f:
        f.write('{"type": "message", "message": {"role": "us')

    assert [m.content for m in store.load(recorder.id).messages] == ["kept"]
    store.recorder(recorder.id)(MessageAdded(user("after")))
    assert [m.content for m in store.load(recorder.id).messages] == ["kept", "after"]


def test_a_damaged_file_is_an_error_on_load_and_left_out_of_the_list(store: SessionStore, tmp_path: Path) -> None:
    good = store.create(tmp_path, "m")
    bad = store.create(tmp_path, "m")
    lines = bad.path.read_text() + "not json\n" + json.dumps({"type": "message", "message": {"role": "user"}}) + "\n"
    bad.path.write_text(lines)

    with pytest.raises(SessionError, match="line 2, is not valid JSON"):
        store.load(bad.id)
    assert [i.id for i in store.list()] == [good.id]
    (store.directory / "stray.jsonl").write_text('{"type": "message"}\n')
    assert [i.id for i in store.list()] == [good.id]


def test_unknown_ambiguous_and_malformed_ids_are_refused(store: SessionStore, tmp_path: Path) -> None:
    store.create(tmp_path, "m")
    store.create(tmp_path, "m")
    with pytest.raises(SessionError, match="no session with id '1999'"):
        store.load("1999")
    with pytest.raises(SessionError, match="ambiguous"):
        store.load("2025")
    with pytest.raises(SessionError, match="not a valid id"):
        store.load("../etc/passwd")
    with pytest.raises(SessionError, match="not a valid id"):
        store.load("")


def test_listing_a_missing_folder_finds_nothing(tmp_path: Path) -> None:
    assert SessionStore(tmp_path / "none").list() == []


def test_session_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "kcode" / "sessions")
    recorder = store.create(tmp_path, "m")
    assert stat.S_IMODE(recorder.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.directory.parent.stat().st_mode) == 0o700
