"""Files that look like secrets: the editor refuses them and search leaves them out, unless configured otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.base import ToolResult
from tools.editor import EditorTool
from tools.errors import ToolError
from tools.search import FindFilesTool, SearchTextTool
from tools.search_ripgrep import find_ripgrep
from tools.secret_files import DEFAULT_SECRET_FILES, SecretFiles
from tools.settings import ToolSettings
from tools.workspace import Workspace

BACKENDS = [pytest.param(True, id="ripgrep", marks=pytest.mark.skipif(find_ripgrep() is None, reason="no rg")),
            pytest.param(False, id="python")]
SECRET = "TOKEN=hunter2\n"


@pytest.mark.parametrize(("path", "glob"), [
    (".env", ".env"), ("app/.env.local", ".env.*"), (".env.example", None), (".env.template", None),
    ("id_rsa", "id_rsa*"), ("home/.ssh/id_ed25519", "id_ed25519*"), ("home/.ssh/id_ed25519.pub", None),
    ("certs/server.pem", "*.pem"), ("tls.key", "*.key"), ("store.p12", "*.p12"), ("vault.kdbx", "*.kdbx"),
    (".netrc", ".netrc"), ("/home/u/.pypirc", ".pypirc"), (".git-credentials", ".git-credentials"),
    ("gcp/credentials-prod.json", "credentials*.json"), ("config/secrets.yaml", "secrets.{json,toml,yaml,yml}"),
    ("src/secrets.py", None), ("src/env.py", None), ("keyboard.py", None), ("README.md", None),
])
def test_the_default_list(path: str, glob: str | None) -> None:
    assert SecretFiles(DEFAULT_SECRET_FILES).match(path) == glob


def test_globs_are_gitignore_style_and_the_list_can_be_emptied() -> None:
    secrets = SecretFiles(["private/", "/top.txt", "*.cfg", "!public.cfg"])
    assert secrets.match("a/private/b/c.txt") == "private/"
    assert secrets.match("top.txt") == "/top.txt" and secrets.match("sub/top.txt") is None
    assert secrets.match("x/app.cfg") == "*.cfg" and secrets.match("x/public.cfg") is None
    assert SecretFiles([]).match(".env") is None
    with pytest.raises(ValueError, match="list of globs"):
        ToolSettings(secret_files=".env")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"secret_files: .*\[a-"):
        ToolSettings(secret_files=("[a-",))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "keys").mkdir()
    (root / "src" / "app.py").write_text(f"# {SECRET}")
    (root / ".env").write_text(SECRET)
    (root / ".env.example").write_text("TOKEN=\n")
    (root / "keys" / "server.key").write_text(SECRET)
    (root / "keys" / "id_rsa").write_text(SECRET)
    (root / "notes.txt").symlink_to(".env")
    (root / "keys" / "secrets.yaml").symlink_to("../src/app.py")
    return root


def edit(root: Path, settings: ToolSettings | None = None, **arguments: Any) -> ToolResult | str:
    try:
        return EditorTool(Workspace(root), settings or ToolSettings()).run(arguments)
    except ToolError as exc:  # the toolset turns these into error results
        return str(exc)


@pytest.mark.parametrize(("path", "shown", "glob"), [
    (".env", ".env", ".env"), ("keys/server.key", "keys/server.key", "*.key"),
    ("notes.txt", ".env", ".env"),  # a symlink to a secret file, by what it resolves to
    ("keys/secrets.yaml", "src/app.py", "secrets.{json,toml,yaml,yml}"),  # by the name asked for
])
def test_the_editor_refuses_secret_files_for_every_command(root: Path, path: str, shown: str, glob: str) -> None:
    for command, arguments, doing in (("view", {}, "read"),
                                      ("str_replace", {"old_str": "hunter2", "new_str": "x"}, "read or write"),
                                      ("insert", {"insert_line": 0, "new_str": "x\n"}, "read or write"),
                                      ("create", {"file_text": "x\n", "overwrite": True}, "read or write")):
        message = edit(root, command=command, path=path, **arguments)
        assert message == (f"{shown} looks like a secret file (matches `{glob}`); kcode does not {doing} it. "
                           "The user can change `secret_files` in config.toml.")
    assert (root / ".env").read_text() == SECRET and (root / "keys" / "server.key").read_text() == SECRET
    assert edit(root, command="create", path="new/.env.production", file_text="x") == (
        "new/.env.production looks like a secret file (matches `.env.*`); kcode does not read or write it. "
        "The user can change `secret_files` in config.toml.")
    assert not (root / "new").exists()


def test_the_editor_opens_examples_and_everything_once_the_list_is_empty(root: Path) -> None:
    viewed = edit(root, command="view", path=".env.example")
    assert isinstance(viewed, ToolResult) and "TOKEN=" in viewed.output
    listing = edit(root, command="view", path="keys")
    assert isinstance(listing, ToolResult) and "keys/server.key" in listing.output  # names are listed
    opened = edit(root, ToolSettings(secret_files=()), command="view", path=".env")
    assert isinstance(opened, ToolResult) and "hunter2" in opened.output


@pytest.mark.parametrize("use_ripgrep", BACKENDS)
def test_search_leaves_secret_files_out_and_says_how_many(root: Path, use_ripgrep: bool) -> None:
    settings = ToolSettings()
    search = SearchTextTool(Workspace(root), settings, use_ripgrep=use_ripgrep)
    found = search.run({"pattern": "hunter2"})
    assert found.output == (
        "1 matching line in 1 file:\nsrc/app.py:1:# TOKEN=hunter2\n"
        "[2 matching lines in 2 files that look like secret files (.env, keys, credentials) left out: kcode does "
        "not read them. The user can change `secret_files` in config.toml.]")
    assert found.data["secret_files_left_out"] == 2
    nothing = search.run({"pattern": "hunter2", "path": "keys"})
    assert nothing.output.startswith("No matches for 'hunter2' in keys.") and "2 matching lines in 2 files" in (
        nothing.output)
    files = FindFilesTool(Workspace(root), settings, use_ripgrep=use_ripgrep).run({"pattern": "*"})
    assert files.output.startswith("1 file:\nsrc/app.py\n[2 files that look like secret files")  # links skipped
    everything = SearchTextTool(Workspace(root), ToolSettings(secret_files=()), use_ripgrep=use_ripgrep)
    assert everything.run({"pattern": "hunter2"}).data["matches"] == 3


def test_search_of_one_secret_file_is_refused(root: Path) -> None:
    with pytest.raises(ToolError, match=r"keys/id_rsa looks like a secret file \(matches `id_rsa\*`\); kcode "
                                        "does not search it"):
        SearchTextTool(Workspace(root), ToolSettings(), use_ripgrep=False).run({"pattern": "x", "path": "keys/id_rsa"})
