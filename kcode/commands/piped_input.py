"""Piped stdin as the request: `echo "explain main.py" | kcode chat .` and `kcode fix . < issue.md`.

When stdin is a pipe or a file rather than a terminal, `kcode chat` answers what came through it as its one
message and then leaves, as the non-interactive modes of other coding CLIs do, and `kcode fix` takes it as
its task when no --task or --task-file is given. Nobody is at a keyboard to approve a call, so in chat
whatever the approval mode would ask about is refused, with a reason the model can work with.
"""

from __future__ import annotations

from typing import TextIO

from kcode.agent.approvals import ApprovalRequest, Decision
from kcode.errors import KcodeError

NOBODY_TO_ASK = (
    "Not run: kcode chat is answering a message piped to it, so nobody is there to approve this call (it was "
    "started without --yes or --auto-edit). Do not try to get around this; answer with what you can read."
)


def piped_text(stream: TextIO | None) -> str | None:
    """All the text waiting on `stream` when it is a pipe or a file; None when it is a terminal (or absent)."""
    if stream is None or stream.isatty():
        return None
    try:
        return stream.read()
    except UnicodeDecodeError:
        raise KcodeError("the text piped to stdin is not UTF-8") from None


class NobodyToAsk:
    """The approver of a chat reading from a pipe: anything that needs a yes is refused."""

    def decide(self, request: ApprovalRequest) -> Decision:
        return Decision("no", NOBODY_TO_ASK)
