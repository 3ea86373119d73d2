"""Errors that end a kcode command with one clear line for the user."""


class KcodeError(Exception):
    """Base of every error kcode reports to the user instead of a traceback."""


class ConfigError(KcodeError, ValueError):
    """Configuration that cannot work: an unknown profile, a bad value, no model configured."""


class BackendError(KcodeError):
    """The model API failed for good (after retries, or with an error retrying cannot fix)."""
