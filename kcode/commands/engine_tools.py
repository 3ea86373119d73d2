"""`kcode engine ...`: the engine's own tools on the command line; like the local backend, it reaches `engine`
only inside the command, so the rest of the CLI never pays for torch."""

from __future__ import annotations

from pathlib import Path

from kcode.errors import ConfigError


def write_tiny_checkpoint(directory: Path, *, preset: str, dtype: str, shards: int, seed: int) -> Path:
    """A tiny random checkpoint in the real format; bad presets or dtypes come back as ConfigError."""
    from engine.errors import EngineError
    from engine.tiny import make_tiny

    try:
        return make_tiny(directory, preset=preset, dtype=dtype, shards=shards, seed=seed)  # type: ignore[arg-type]
    except EngineError as exc:
        raise ConfigError(str(exc)) from exc
