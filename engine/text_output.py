"""Generated ids into text as they arrive: streaming decode and stop strings.

`TextOutput` is the plain-text `OutputWatcher`, with vLLM's stop-string rule: the string and what follows
are cut, and text that could be the start of a stop string is held back until it cannot (only that much,
so streamed text lags no more than it must). `StopStrings` is the rule alone, which the chat output applies
to the content while the tool-call parser sees every id.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.sampling import SamplingParams
from engine.tokenizer import Tokenizer


class StopStrings:
    """Text in, text out: cut at the first stop string, and hold back a tail that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""
        self.matched: str | None = None

    def push(self, text: str) -> str:
        """The text now known to precede any stop string; "" once one has matched."""
        if self.matched is not None:
            return ""
        pending = self._pending + text
        hits = [(pending.find(s), s) for s in self._stops if s in pending]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self._pending = ""
            return pending[:at]
        cut = len(pending) - self._held(pending)
        self._pending = pending[cut:]
        return pending[:cut]

    def _held(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        return max(
            (k for s in self._stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
            default=0,
        )

    def flush(self) -> str:
        """End of output without a stop string: release what was held back."""
        pending, self._pending = self._pending, ""
        return pending


class TextOutput:
    """The decoded text of one sequence, stop strings applied; `text` grows as tokens arrive."""

    def __init__(self, tokenizer: Tokenizer, params: SamplingParams) -> None:
        self._tokenizer = tokenizer
        self._skip_special = params.skip_special_tokens
        self._decoder = tokenizer.stream_decoder()
        self._stops = StopStrings(params.stop)
        self.text = ""

    def feed(self, token_id: int) -> str | None:
        if not (self._skip_special and self._tokenizer.is_special(token_id)):
            self.text += self._stops.push(self._decoder.feed(token_id))
        return self._stops.matched

    def finish(self) -> str:
        """The final text: bytes of a cut-off character become U+FFFD, held-back text is released."""
        self.text += self._stops.push(self._decoder.flush())
        self.text += self._stops.flush()
        return self.text
