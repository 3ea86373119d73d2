"""Model backends: anything that streams an OpenAI-shaped chat completion.

`remote` speaks to any OpenAI-compatible API; `local` runs kcode's own engine in process and is the one
place (besides `kcode serve`) allowed to import `engine`, lazily.
"""

from kcode.backends.base import (
    Backend,
    Finish,
    ReasoningDelta,
    Retrying,
    StreamEvent,
    TextDelta,
    ToolCallReady,
    Usage,
)

__all__ = ["Backend", "Finish", "ReasoningDelta", "Retrying", "StreamEvent", "TextDelta", "ToolCallReady", "Usage"]
