"""The `secret_files` setting: a list of globs from config.toml, `KCODE_SECRET_FILES` or `--set`, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcode.config import Overrides, load_settings
from kcode.errors import ConfigError
from tools.secret_files import DEFAULT_SECRET_FILES


def load(home: Path, config: str = "", overrides: Overrides | None = None, **env: str) -> tuple[str, ...]:
    path = home / "config.toml"
    path.write_text(config, encoding="utf-8")
    environ = {"HOME": str(home), "KCODE_CONFIG": str(path), "MOONSHOT_API_KEY": "sk-x", **env}
    return load_settings(environ, overrides).tool_settings().secret_files


def test_every_layer_sets_the_list_and_an_empty_one_turns_it_off(tmp_path: Path) -> None:
    assert load(tmp_path) == DEFAULT_SECRET_FILES
    assert load(tmp_path, 'secret_files = [".env", "private/"]\n') == (".env", "private/")
    assert load(tmp_path, "secret_files = []\n") == ()
    assert load(tmp_path, "secret_files = []\n", KCODE_SECRET_FILES="*.pem, *.key") == ("*.pem", "*.key")
    assert load(tmp_path, KCODE_SECRET_FILES="[]") == ()
    assert load(tmp_path, overrides=Overrides(settings={"secret_files": "a.txt"})) == ("a.txt",)


@pytest.mark.parametrize("value", ['".env"', '["[a-"]', "[1]"])
def test_a_bad_list_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="secret_files must be a list of gitignore-style globs"):
        load(tmp_path, f"secret_files = {value}\n")
