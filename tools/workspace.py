"""Where the editor and search may reach: the workspace root, plus read-only extras such as saved outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tools.errors import PathOutsideWorkspace


@dataclass(frozen=True)
class Workspace:
    """A root directory that confines file access.

    Paths resolve relative to `root`; symlinks are followed before the check, so a link that escapes
    the root is refused like `../`. The check is by name: the editor then reaches the real path it
    returns through tools/nofollow.py, so a symlink swapped in afterwards is refused, not followed.
    `readable_roots` may be viewed and searched but never written.
    """

    root: Path
    readable_roots: tuple[Path, ...] = field(default=())
    allow_outside: bool = False

    def __post_init__(self) -> None:
        root = Path(os.path.realpath(self.root))
        if not root.is_dir():
            raise ValueError(f"workspace root {self.root} is not a directory")
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "readable_roots",
                           tuple(Path(os.path.realpath(p)) for p in self.readable_roots))

    def resolve(self, path: str | Path, *, write: bool = False) -> Path:
        """The real absolute path for `path`, or PathOutsideWorkspace naming where it leads."""
        candidate = _expand_home(os.fspath(path))
        if not candidate.is_absolute():
            candidate = self.root / candidate
        real = Path(os.path.realpath(candidate))
        if self.allow_outside or real.is_relative_to(self.root):
            return real
        if not write and any(real.is_relative_to(extra) for extra in self.readable_roots):
            return real
        raise PathOutsideWorkspace(
            f"{path} resolves to {real}, which is outside the workspace {self.root}; "
            "use a path inside the workspace"
        )

    def display(self, path: Path) -> str:
        """`path` as the model should see it: relative to the root when inside it."""
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)


def _expand_home(path: str) -> Path:
    """`~` and `~/...` name the home directory; `~notes.txt`, `~$x.docx` and `./~` are ordinary file names.

    `Path.expanduser` would read `~notes.txt` as user `notes`'s home, and raise when there is no such user.
    """
    if path == "~" or path.startswith("~/"):
        return Path(os.path.expanduser(path))
    return Path(path)
