"""Every error the engine raises on bad input, in one hierarchy.

All are `ValueError`s under `EngineError`, so a caller (the local backend, `kcode serve`) can catch the whole
engine's input errors in one clause and show the message, which names the bad value. The modules that raise
them import them from here; their old homes (`engine.config.ConfigError`, ...) still name the same classes.
"""

from __future__ import annotations


class EngineError(ValueError):
    """Bad input to the engine: a file, a config, a prompt, a request."""


class ConfigError(EngineError):
    """A config.json field is missing, malformed or describes a model this engine cannot run."""


class CheckpointError(EngineError):
    """The checkpoint's files or tensors do not match its config."""


class TinyCheckpointError(EngineError):
    """An unknown preset, dtype or shard count."""


class Fp8ShapeError(EngineError):
    """A weight and its scale grid do not describe the same blocked matrix."""


class ModelInputError(EngineError):
    """Bad options, ids, positions, mask or cache handed to the model."""


class TokenizerError(EngineError):
    """Bad tokenizer input: files, names or ids."""


class TokenizerFileError(TokenizerError):
    """A tokenizer file is missing or malformed; the message names the file (and line)."""


class UnknownTokenError(TokenizerError):
    """A special-token name or a token id that this vocabulary does not have."""


class ChatFormatError(EngineError):
    """A message or tool list that cannot be rendered; the message names the offending index and value."""


class SamplingParamsError(EngineError):
    """A sampling parameter out of range; the message names the field, the value and what is allowed."""


class RequestError(EngineError):
    """A prompt the model cannot take: empty, too long for the context, or holding ids outside the vocabulary."""


class ContextLengthError(RequestError):
    """A prompt that leaves no room to generate in the context (OpenAI's `context_length_exceeded`)."""
