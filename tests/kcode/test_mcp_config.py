"""`[mcp_servers.NAME]` in config.toml: what is accepted, how secrets are looked up, and each mistake's one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kcode.config import Overrides, load_mcp_servers, load_settings
from kcode.errors import ConfigError
from kcode.mcp.config import McpServerConfig

MODEL_ENV = {"KCODE_BASE_URL": "http://127.0.0.1:9/v1", "KCODE_MODEL": "m"}


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def _servers(tmp_path: Path, text: str, env: dict[str, str] | None = None,
             mode: int = 0o600) -> tuple[McpServerConfig, ...]:
    return load_mcp_servers(env or {"HOME": str(tmp_path)}, _write(tmp_path, text, mode))


def test_stdio_and_http_servers_are_read_with_their_defaults(tmp_path: Path) -> None:
    docs, tracker = _servers(tmp_path, """
[mcp_servers.docs]
command = "uvx"
args = ["mcp-server-fetch", "--quiet"]
env = { LOG_LEVEL = "warning" }
trust = true

[mcp_servers.tracker]
url = "https://mcp.example.com/mcp"
headers = { X-Team = "core" }
enabled = false
startup_timeout_s = 5
tool_timeout_s = 2.5
""")
    assert docs == McpServerConfig("docs", command="uvx", args=("mcp-server-fetch", "--quiet"),
                                   env={"LOG_LEVEL": "warning"}, trust=True)
    assert (docs.transport, docs.target, docs.startup_timeout_s, docs.tool_timeout_s) == (
        "stdio", "uvx mcp-server-fetch --quiet", 30.0, 120.0)
    assert tracker == McpServerConfig("tracker", url="https://mcp.example.com/mcp", headers={"X-Team": "core"},
                                      enabled=False, startup_timeout_s=5.0, tool_timeout_s=2.5)
    assert tracker.transport == "http" and not tracker.trust


def test_secrets_come_from_the_variables_named(tmp_path: Path) -> None:
    text = """
[mcp_servers.gh]
command = "gh-mcp"
env_from_env = { GITHUB_TOKEN = "MY_GH_TOKEN" }

[mcp_servers.tracker]
url = "https://mcp.example.com/mcp"
headers_from_env = { Authorization = "TRACKER_AUTH" }
"""
    gh, tracker = _servers(tmp_path, text, {"MY_GH_TOKEN": "ghp_1", "TRACKER_AUTH": "Bearer t"}, mode=0o644)
    assert gh.env == {"GITHUB_TOKEN": "ghp_1"} and gh.problem is None
    assert tracker.headers == {"Authorization": "Bearer t"}
    gh, tracker = _servers(tmp_path, text, {"MY_GH_TOKEN": "ghp_1"})
    assert gh.problem is None  # only the server whose variable is missing cannot start
    assert tracker.problem == "environment variable TRACKER_AUTH is not set" and tracker.headers == {}


def test_a_secret_written_in_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    text = '[mcp_servers.t]\nurl = "https://x.example/mcp"\nheaders = { Authorization = "Bearer abc" }\n'
    with pytest.raises(ConfigError, match=r"mcp_servers.t: Authorization looks like a secret .*\(mode 644\)"):
        _servers(tmp_path, text, mode=0o644)
    assert _servers(tmp_path, text, mode=0o600)[0].headers == {"Authorization": "Bearer abc"}


@pytest.mark.parametrize(("text", "message"), [
    ('[mcp_servers.a]\nargs = ["x"]\n', "mcp_servers.a: give either command (a stdio server) or url"),
    ('[mcp_servers.a]\ncommand = "x"\nurl = "http://h/mcp"\n', "give either command"),
    ('[mcp_servers.a]\ncommand = "x"\nheaders = { A = "b" }\n', "mcp_servers.a: headers is for HTTP servers only"),
    ('[mcp_servers.a]\nurl = "http://h/mcp"\nenv = { A = "b" }\n', "mcp_servers.a: env is for stdio servers only"),
    ('[mcp_servers.a]\ncommand = "x"\ntrust = "yes"\n', "mcp_servers.a.trust must be true or false, got 'yes'"),
    ('[mcp_servers.a]\ncommand = "x"\nstartup_timeout_s = 0\n', "startup_timeout_s must be a number of seconds"),
    ('[mcp_servers.a]\ncommand = "x"\nargs = "y"\n', "mcp_servers.a.args must be a list of strings"),
    ('[mcp_servers.a]\nurl = "ftp://h"\n', "mcp_servers.a.url must be an http:// or https:// URL"),
    ('[mcp_servers.a]\ncommand = "x"\ncwd = "/"\n', "mcp_servers.a: unknown key 'cwd'; allowed: args, command"),
    ('[mcp_servers.a__b]\ncommand = "x"\n', "a server name may hold letters, digits, '-' and single '_' only"),
    ('mcp_servers = 3\n', "mcp_servers must be a table of"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _servers(tmp_path, text)


def test_settings_carry_the_servers_and_no_mcp_turns_them_off(tmp_path: Path) -> None:
    path = _write(tmp_path, '[mcp_servers.a]\ncommand = "x"\n')
    env = {**MODEL_ENV, "HOME": str(tmp_path)}
    settings = load_settings(env, Overrides(config_file=path))
    assert settings.mcp and [server.name for server in settings.mcp_servers] == ["a"]
    assert not load_settings(env, Overrides(config_file=path, settings={"mcp": "false"})).mcp
    assert not load_settings({**env, "KCODE_MCP": "0"}, Overrides(config_file=path)).mcp


def test_listing_servers_needs_no_model(tmp_path: Path) -> None:
    (tmp_path / ".config" / "kcode").mkdir(parents=True)
    (tmp_path / ".config" / "kcode" / "config.toml").write_text('[mcp_servers.a]\ncommand = "x"\n')
    assert [server.name for server in load_mcp_servers({"HOME": str(tmp_path)})] == ["a"]
    assert load_mcp_servers({"HOME": str(tmp_path / "elsewhere")}) == ()


def test_the_readme_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("### MCP servers", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    fetch, tracker = _servers(tmp_path, example, {"TRACKER_AUTH": "Bearer t"}, mode=0o644)
    assert (fetch.target, fetch.trust) == ("uvx mcp-server-fetch", True)
    assert tracker.headers == {"Authorization": "Bearer t"} and tracker.startup_timeout_s == 10.0
