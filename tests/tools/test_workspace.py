"""Path confinement: `..` and escaping symlinks are refused; readable extras are read-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tools.errors import PathOutsideWorkspace
from tools.workspace import Workspace


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    (root / "src").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "src" / "a.py").write_text("a")
    os.symlink(outside, root / "escape")
    os.symlink(root / "src" / "a.py", root / "alias.py")
    return root, outside


def test_relative_and_absolute_paths_inside_resolve(layout: tuple[Path, Path]) -> None:
    root, _ = layout
    ws = Workspace(root)
    assert ws.resolve("src/a.py") == root.resolve() / "src" / "a.py"
    assert ws.resolve(root / "src" / "a.py", write=True) == root.resolve() / "src" / "a.py"
    assert ws.resolve("alias.py") == root.resolve() / "src" / "a.py"
    assert ws.resolve("src/../src/a.py") == root.resolve() / "src" / "a.py"


@pytest.mark.parametrize("path", ["../outside/secret.txt", "escape/secret.txt", "/etc/passwd"])
def test_paths_leading_outside_are_refused(layout: tuple[Path, Path], path: str) -> None:
    root, _ = layout
    with pytest.raises(PathOutsideWorkspace, match="outside the workspace"):
        Workspace(root).resolve(path)


def test_allow_outside_lifts_the_confinement(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    assert Workspace(root, allow_outside=True).resolve("escape/secret.txt") == outside.resolve() / "secret.txt"


def test_readable_roots_can_be_read_but_not_written(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    ws = Workspace(root, readable_roots=(outside,))
    assert ws.resolve(outside / "secret.txt") == outside.resolve() / "secret.txt"
    with pytest.raises(PathOutsideWorkspace):
        ws.resolve(outside / "secret.txt", write=True)


def test_display_is_relative_inside_and_absolute_outside(layout: tuple[Path, Path]) -> None:
    root, outside = layout
    ws = Workspace(root)
    assert ws.display(root.resolve() / "src" / "a.py") == "src/a.py"
    assert ws.display(outside.resolve()) == str(outside.resolve())


def test_a_root_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        Workspace(tmp_path / "missing")


@pytest.mark.parametrize(("path", "inside"), [("~notes.txt", "~notes.txt"), ("~$x.docx", "~$x.docx"),
                                             ("sub/~", "sub/~"), ("./~", "~"), ("./~/a", "~/a")])
def test_a_tilde_not_leading_the_path_is_an_ordinary_character(tmp_path: Path, path: str, inside: str) -> None:
    assert Workspace(tmp_path).resolve(path, write=True) == tmp_path.resolve() / inside


def test_a_leading_tilde_slash_still_means_the_home_directory(tmp_path: Path) -> None:
    home = Path(os.path.realpath(os.path.expanduser("~")))
    assert Workspace(tmp_path, allow_outside=True).resolve("~/notes.txt") == home / "notes.txt"
    assert Workspace(tmp_path, allow_outside=True).resolve("~") == home
