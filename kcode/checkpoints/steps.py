"""One session's checkpoints: a snapshot before each call that may change files, and /undo and /rewind.

/undo restores the newest checkpoint: the one taken before the last step, and after an /undo the one the
undo itself took first, so a second /undo redoes what the first undid. /rewind N restores the checkpoint
taken before the Nth-last agent step (`step_back`, then `rewind`), and the caller cuts the conversation
back to before the message that made that call (`history_before`). /undo after /rewind brings the files
back but not the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

from kcode.agent.approvals import classify
from kcode.checkpoints.store import Checkpoint, CheckpointError, CheckpointStore, Restored
from kcode.messages import Message, ToolCall

_DESCRIPTION_CHARS = 80
RESTORE_TOOL = "restore"


class SessionCheckpoints:
    """Takes a checkpoint before each call that can change files; the agent loop calls `before_step`."""

    def __init__(self, store: CheckpointStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id
        self.taken: list[Checkpoint] = []
        """This session's checkpoints, oldest first (a resumed session finds its earlier ones)."""
        with suppress(CheckpointError):  # no git, say: each step's snapshot will tell the user so
            self.taken = [c for c in reversed(store.history()) if c.session == session_id]

    def before_step(self, call: ToolCall, history: tuple[Message, ...]) -> str | None:
        """Snapshot before `call`; a note for the user when files were left out or nothing could be saved."""
        arguments = call.parsed_arguments()
        if classify(call.name, arguments or {}) not in ("edit", "command"):
            return None
        try:
            made_by = max((i for i, m in enumerate(history) if m.role == "assistant"), default=-1)
            checkpoint = self._snapshot(call.name, describe(call), call.id, made_by)
        except (CheckpointError, OSError) as exc:
            return f"No checkpoint before this step (it cannot be undone): {exc}"
        if checkpoint.skipped:
            return f"Checkpoint left out {len(checkpoint.skipped)} large file(s): {_names(checkpoint.skipped)}"
        return None

    def start_session(self, session_id: str) -> None:
        """/clear began a new session: /undo and /rewind no longer reach the old one's steps."""
        self.session_id, self.taken = session_id, []

    def undo(self) -> Restored:
        """Restore the newest checkpoint of this session (after an undo, that undoes the undo)."""
        if not self.taken:
            raise CheckpointError("nothing to undo: no step has changed files in this session yet")
        target = self.taken[-1]
        return self.store.restore(target, self._snapshot(RESTORE_TOOL, f"before /undo to step {target.step}"))

    def step_back(self, steps_back: int) -> Checkpoint:
        """The checkpoint taken before the `steps_back`th-last agent step of this session (1: the last)."""
        agent_steps = [c for c in self.taken if c.tool != RESTORE_TOOL]
        if not 1 <= steps_back <= len(agent_steps):
            raise CheckpointError(f"cannot rewind {steps_back} step(s): this session has {len(agent_steps)} step(s) "
                                  "that may have changed files")
        return agent_steps[-steps_back]

    def rewind(self, target: Checkpoint) -> Restored:
        """Restore the files to `target` (from `step_back`); the steps after it are forgotten."""
        current = self._snapshot(RESTORE_TOOL, f"before /rewind to step {target.step}")
        restored = self.store.restore(target, current)
        self.taken = [*self.taken[:self.taken.index(target)], current]
        return restored

    def _snapshot(self, tool: str, description: str, call_id: str = "", message_index: int = -1) -> Checkpoint:
        step = self.taken[-1].step + 1 if self.taken else 1
        checkpoint = self.store.snapshot(session=self.session_id, step=step, tool=tool, description=description,
                                         call_id=call_id, message_index=message_index)
        self.taken.append(checkpoint)
        return checkpoint


def history_before(messages: Sequence[Message], step: Checkpoint) -> tuple[Message, ...] | None:
    """The history up to (not including) the assistant message that made `step`'s call; None when that message
    is no longer where it was (compacted away). Checked by position, as call ids may repeat across turns; the
    cut never splits an assistant message from its results, so the API takes what is left."""
    index = step.message_index
    if 0 <= index < len(messages) and messages[index].role == "assistant" and any(
            call.id == step.call_id and describe(call) == step.description for call in messages[index].tool_calls):
        return tuple(messages[:index])
    return None


def describe(call: ToolCall) -> str:
    """A one-line summary of a call for the checkpoint list: the command, or the edit and its path."""
    arguments = call.parsed_arguments() or {}
    if isinstance(arguments.get("command"), str) and "path" not in arguments:
        text = arguments["command"]
    elif "path" in arguments:
        text = f"{arguments.get('command', '')} {arguments['path']}".strip()
    else:
        text = call.arguments
    line = " ".join(str(text).split())
    return line if len(line) <= _DESCRIPTION_CHARS else line[:_DESCRIPTION_CHARS - 1] + "…"


def _names(paths: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")
