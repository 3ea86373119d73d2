"""The local backend: kcode's own K2 engine in this process, with no server in between.

This module and `kcode serve` are the only places kcode reaches `engine` (and so torch), and only when a
`local` model is chosen. `--model local` with no path runs a tiny random demonstration checkpoint, made
on first use and cached, so the whole stack runs on a machine with no network and no weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from kcode.backends.base import Finish, StreamEvent
from kcode.backends.chunks import ChunkAssembly
from kcode.config import Settings
from kcode.errors import BackendError, ConfigError
from kcode.messages import Message

DEMO_NOTICE = ("Using kcode's tiny demonstration model: random weights that exercise the whole local stack "
               "but write gibberish. Give --model local:PATH a real K2/DeepSeek-V3 checkpoint for useful answers.")
DEFAULT_MAX_TOKENS = 512


def demo_checkpoint(data_dir: Path) -> Path:
    """The cached demonstration checkpoint, written on first use (atomically, so a crash leaves none)."""
    from engine.tiny import make_tiny

    target = data_dir / "engine" / "tiny-k2-demo"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-k2-demo-", dir=target.parent))
    try:
        make_tiny(scratch / "ckpt", preset="k2", dtype="bf16")
        os.replace(scratch / "ckpt", target)
    except OSError:
        if not (target / "config.json").exists():  # not merely lost a race with another kcode
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class LocalBackend:
    """Streams chat completions from an `engine.LLM` loaded in process."""

    def __init__(self, llm: Any, *, model: str, temperature: float = 0.6, max_tokens: int | None = None,
                 logits_processors: Sequence[Any] = ()) -> None:
        """`logits_processors` constrain every completion (tests use one to script the model's tokens)."""
        self._llm = llm
        self.model = model
        self.context_window: int = llm.max_model_len
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._logits_processors = tuple(logits_processors)

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalBackend:
        try:
            from engine import LLM
        except ImportError as exc:
            raise ConfigError(f"the local engine needs its extra: pip install 'kcode[engine]' ({exc})") from exc
        profile = settings.profile
        path = Path(profile.local_path).expanduser() if profile.local_path else demo_checkpoint(settings.data_dir)
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path} is not a checkpoint directory (it has no config.json)")
        try:
            llm = LLM(path, dtype="float32")
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the checkpoint in {path}: {exc}") from exc
        return cls(llm, model=profile.model, temperature=profile.temperature if profile.temperature is not None
                   else 0.6, max_tokens=profile.max_tokens)

    def stream(self, messages: Sequence[Message], tools: Sequence[Mapping[str, Any]] = (), *,
               max_tokens: int | None = None) -> Iterator[StreamEvent]:
        from engine import SamplingParams

        limit = max_tokens or self.max_tokens or DEFAULT_MAX_TOKENS
        params = SamplingParams(temperature=self.temperature, max_tokens=limit,
                                logits_processors=self._logits_processors)
        try:
            chunks = self._llm.chat_stream([m.to_openai() for m in messages], list(tools) or None, params)
        except ValueError as exc:  # the engine names what is wrong with the request (a prompt too long, say)
            raise BackendError(f"the local model cannot take this request: {exc}") from exc
        assembly = ChunkAssembly()
        for chunk in chunks:
            yield from assembly.feed(chunk)
        if assembly.usage is not None:
            yield assembly.usage
        yield Finish(assembly.finish_reason or "stop")
