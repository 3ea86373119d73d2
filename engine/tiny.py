"""A whole tiny K2-format checkpoint directory in one call: random weights plus a real tokenizer.

The directory is what a real checkpoint looks like on disk (config.json, safetensors, `tiktoken.model`,
`tokenizer_config.json`), so `LLM(path)` loads it on the same path as Kimi K2 itself. The model's vocabulary
is the tiny tokenizer's, and its eos id is the tokenizer's `[EOS]` (`<|im_end|>` for Moonlight).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import TinyCheckpointError
from engine.tiny_tokenizer import TINY_VOCAB_SIZE, write_tiny_tokenizer
from engine.tiny_weights import TinyDtype, tiny_config, write_tiny_checkpoint


def make_tiny(
    directory: str | Path,
    *,
    preset: str = "k2",
    dtype: TinyDtype = "bf16",
    shards: int = 1,
    seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write a tiny checkpoint of `preset` (a name in `engine.tiny_weights.PRESETS`) into `directory`,
    creating it, and return its path. `overrides` replace config.json fields (a wider or deeper model for a
    benchmark); the weights depend only on the config and `seed`."""
    config = tiny_config(preset, vocab_size=TINY_VOCAB_SIZE) | dict(overrides or {})
    if config["vocab_size"] != TINY_VOCAB_SIZE:
        raise TinyCheckpointError(
            f"vocab_size must stay the tiny tokenizer's {TINY_VOCAB_SIZE}, got {config['vocab_size']!r}"
        )
    root = write_tiny_checkpoint(directory, config, dtype=dtype, shards=shards, seed=seed)
    write_tiny_tokenizer(root)
    return root
