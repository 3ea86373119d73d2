"""Every limit of the tools in one place, so a toolset can be tuned as a whole."""

from __future__ import annotations

from dataclasses import dataclass

from tools.secret_files import DEFAULT_SECRET_FILES, SecretFiles

MIN_OUTPUT_CHARS = 1_000
"""Below this a clamped output is mostly its marker line, leaving the model almost nothing to read."""


@dataclass(frozen=True)
class ToolSettings:
    """Defaults follow DESIGN.md §5: roomier than SWE-agent's window, tighter than Claude Code's 30k."""

    max_output_chars: int = 16_000
    """Most characters of one tool result the model reads; the rest is saved to a file it can view."""
    head_fraction: float = 0.5
    """Share of `max_output_chars` given to the head of a clamped output; the tail gets the rest."""
    bash_timeout_s: float = 120.0
    """Wall-clock limit of one bash call; the model may ask for less or more per call."""
    max_bash_timeout_s: float = 600.0
    """Upper bound on the per-call timeout the model may ask for."""
    view_window_lines: int = 100
    """Lines shown by one editor `view` of a file when no range is given."""
    max_line_chars: int = 500
    """Longer lines in a file view are clipped with a marker."""
    snippet_context_lines: int = 4
    """Lines of context shown around an edit."""
    max_search_matches: int = 200
    """Most matching lines (or files) one search returns before saying how many more there were."""
    allow_outside_workspace: bool = False
    """Let the editor and search touch paths outside the workspace root (standard_toolset sets it on the Workspace)."""
    secret_files: tuple[str, ...] = DEFAULT_SECRET_FILES
    """Gitignore-style globs of files the editor and search leave alone (tools/secret_files.py); () for none."""

    def __post_init__(self) -> None:
        if self.max_output_chars < MIN_OUTPUT_CHARS:
            raise ValueError(f"max_output_chars must be at least {MIN_OUTPUT_CHARS:,}, got {self.max_output_chars}")
        if not 0.0 < self.head_fraction < 1.0:
            raise ValueError(f"head_fraction must lie strictly between 0 and 1, got {self.head_fraction}")
        for name in ("bash_timeout_s", "max_bash_timeout_s", "view_window_lines", "max_line_chars",
                     "max_search_matches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        SecretFiles(self.secret_files)  # raises ValueError naming a glob that does not parse
        if self.snippet_context_lines < 0:
            raise ValueError(f"snippet_context_lines must be >= 0, got {self.snippet_context_lines}")
