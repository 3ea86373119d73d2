"""Chat sessions on disk: one JSONL file per session, appended to as messages happen, listed and resumed.

A file holds a header line, then one line per message (`{"type": "message", "message": {OpenAI form}}`)
and one per compaction or /rewind (`{"type": "compacted", "messages": [...]}`, the whole new history; type
"rewound" for a rewind). After each completion a `{"type": "usage", "total_tokens": N, "cost_usd": X}`
line holds the session's running totals, so a resumed session counts on from where it stopped. Each line
is written and flushed the moment its event arrives, so killing kcode loses nothing already shown; a line
cut short by a crash is skipped on reading. Ids start with the UTC start time, so sorting ids sorts
sessions.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kcode.agent.events import ApprovalDecided, Compacted, Event, MessageAdded, UsageReport
from kcode.errors import KcodeError
from kcode.messages import Message

SESSION_FORMAT_VERSION = 1
_PREVIEW_CHARS = 200


class SessionError(KcodeError, ValueError):
    """A session that cannot be found or read: an unknown or ambiguous id, a damaged file."""


@dataclass(frozen=True)
class SessionInfo:
    """What a session list shows about one session."""

    id: str
    path: Path
    started_at: datetime
    workspace: str
    model: str
    first_user_message: str
    """The first line of the first user message, cut to 200 characters."""
    message_count: int
    """Messages in the history a resume would start from."""


@dataclass(frozen=True)
class LoadedSession:
    """A session read back: its description and the history to resume from (compactions replayed)."""

    info: SessionInfo
    messages: tuple[Message, ...]
    total_tokens: int = 0
    """Tokens the session has spent so far, summary requests included."""
    cost_usd: float | None = None
    """What they cost; None when the model had no prices."""


class SessionRecorder:
    """An event sink that appends messages and compactions to one session file."""

    def __init__(self, session_id: str, path: Path) -> None:
        self.id = session_id
        self.path = path

    def __call__(self, event: Event) -> None:
        if isinstance(event, MessageAdded):
            self.add(event.message)
        elif isinstance(event, Compacted) and event.history:  # an event without the history cannot be replayed
            self._write({"type": "compacted", "messages": [m.to_openai() for m in event.history]})
        elif isinstance(event, ApprovalDecided):  # a record of who allowed what; reading skips it
            self._write({"type": "approval", "call_id": event.call_id, "tool": event.tool, "verdict": event.verdict,
                         "asked": event.asked, "scope": event.scope, "warning": event.warning})
        elif isinstance(event, UsageReport):
            self._write({"type": "usage", "total_tokens": event.total_tokens, "cost_usd": event.cost_usd})

    def rewound(self, history: tuple[Message, ...]) -> None:
        """Record that /rewind cut the conversation back to `history`, so a resume starts from there."""
        self._write({"type": "rewound", "messages": [m.to_openai() for m in history]})

    def add(self, message: Message) -> None:
        """Record a message the loop did not emit, such as the system prompt a new session starts with."""
        self._write({"type": "message", "message": message.to_openai()})

    def _write(self, record: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:  # closing flushes: the line is on disk at return
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


class SessionStore:
    """The folder of session files."""

    def __init__(self, directory: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.directory = directory
        self._clock = clock

    def create(self, workspace: Path, model: str) -> SessionRecorder:
        """Start a new session file (header only) and return the sink that fills it."""
        # Sessions hold whatever the agent read (secrets included): only their owner may read them.
        self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.mkdir(exist_ok=True, mode=0o700)
        started = self._clock().astimezone(UTC)
        session_id = f"{started:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        header = {"type": "session", "version": SESSION_FORMAT_VERSION, "id": session_id,
                  "started_at": started.isoformat(), "workspace": str(workspace), "model": model}
        path = self.directory / f"{session_id}.jsonl"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            f.write(json.dumps(header, ensure_ascii=False) + "\n")
        return SessionRecorder(session_id, path)

    def list(self, workspace: Path | None = None) -> list[SessionInfo]:
        """Sessions newest first, only those of `workspace` when given; damaged files are left out."""
        infos = []
        for path in sorted(self.directory.glob("*.jsonl"), reverse=True):
            try:
                info = _read(path).info
            except SessionError:
                continue
            if workspace is None or info.workspace == str(workspace):
                infos.append(info)
        return infos

    def load(self, session_id: str) -> LoadedSession:
        """The session whose id is `session_id` or starts with it."""
        matches = sorted(self.directory.glob(f"{_safe_prefix(session_id)}*.jsonl"))
        exact = [p for p in matches if p.stem == session_id]
        if exact:
            matches = exact
        if not matches:
            raise SessionError(f"no session with id {session_id!r} in {self.directory}")
        if len(matches) > 1:
            raise SessionError(f"session id {session_id!r} is ambiguous: it starts "
                               + ", ".join(p.stem for p in matches))
        return _read(matches[0])

    def recorder(self, session_id: str) -> SessionRecorder:
        """The sink for a resumed session: it appends to the existing file, first dropping a line cut short."""
        path = self.load(session_id).info.path
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            with path.open("rb+") as f:
                f.truncate(data.rfind(b"\n") + 1)
        return SessionRecorder(path.stem, path)


def _safe_prefix(session_id: str) -> str:
    if not session_id or any(c in session_id for c in "/\\*?[]"):
        raise SessionError(f"session id {session_id!r} is not a valid id (like 20250101-120000-a1b2c3)")
    return session_id


def _read(path: Path) -> LoadedSession:
    records = _records(path)
    header = next(records, None)
    if not header or header.get("type") != "session":
        raise SessionError(f"{path} is not a kcode session file: its first line is not a session header")
    messages: list[Message] = []
    first_user = ""
    usage: dict[str, Any] = {}
    try:
        for record in records:
            if record.get("type") == "message":
                messages.append(Message.from_openai(record["message"]))
                first_user = first_user or _preview(messages[-1])
            elif record.get("type") in ("compacted", "rewound"):
                messages = [Message.from_openai(m) for m in record["messages"]]
            elif record.get("type") == "usage":
                usage = record
        started_at = datetime.fromisoformat(header["started_at"])
        info = SessionInfo(id=header["id"], path=path, started_at=started_at, workspace=header["workspace"],
                           model=header.get("model", ""), first_user_message=first_user,
                           message_count=len(messages))
        total_tokens = int(usage.get("total_tokens", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise SessionError(f"{path} is damaged: {type(exc).__name__}: {exc}") from exc
    return LoadedSession(info=info, messages=tuple(messages), total_tokens=total_tokens,
                         cost_usd=_optional_float(usage.get("cost_usd")))


def _optional_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of a session file; a last line without its newline is a write cut short and skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SessionError(f"cannot read session file {path}: {exc}") from exc
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                return
            raise SessionError(f"{path}, line {number}, is not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise SessionError(f"{path}, line {number}, is not a JSON object")
        yield record


def _preview(message: Message) -> str:
    """The first line of a user message, cut for a list; "" for any other message."""
    if message.role != "user":
        return ""
    return message.content.strip().split("\n", 1)[0][:_PREVIEW_CHARS]
