"""Errors of the terminal UI: settings a screen cannot work with."""


class DisplaySettingError(ValueError):
    """A display setting that cannot work, such as a preview of no lines."""
