"""The `[mcp_servers.NAME]` tables of config.toml, checked and with their secrets looked up.

    [mcp_servers.docs]                    # a stdio server kcode starts in the workspace
    command = "uvx"
    args = ["mcp-server-fetch"]
    env = { LOG_LEVEL = "warning" }
    env_from_env = { GITHUB_TOKEN = "MY_GH_TOKEN" }   # the server's GITHUB_TOKEN is kcode's $MY_GH_TOKEN
    trust = true                          # its tools run without asking in `ask` mode

    [mcp_servers.tracker]                 # a streamable-HTTP server
    url = "https://mcp.example.com/mcp"
    headers_from_env = { Authorization = "TRACKER_AUTH" }
    startup_timeout_s = 10

As with a profile's `api_key`, a secret may sit in the file itself (`headers`, `env`) only when nobody else can
read the file; otherwise it belongs in a variable named by `headers_from_env` / `env_from_env`. A variable
that is not set does not stop kcode: that server alone fails to start, and says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kcode.errors import ConfigError

Transport = Literal["stdio", "http"]

SERVER_NAME = re.compile(r"[A-Za-z0-9-]+(_[A-Za-z0-9-]+)*")
"""Letters, digits, `-` and single `_`: the name sits between the `__` of `mcp__NAME__TOOL`."""
_SECRET_KEY = re.compile(r"authorization|api[-_]?key|token|secret|passw|credential|cookie", re.IGNORECASE)
_KEYS = frozenset({"command", "args", "env", "env_from_env", "url", "headers", "headers_from_env", "enabled",
                   "startup_timeout_s", "tool_timeout_s", "trust"})


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server as configured; secrets already looked up in the environment."""

    name: str
    command: str | None = None
    """The program of a stdio server (found on PATH); exactly one of `command` and `url` is set."""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables a stdio server gets on top of a minimal environment (PATH, HOME, ...), never kcode's keys."""
    url: str | None = None
    """The endpoint of a streamable-HTTP server."""
    headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    startup_timeout_s: float = 30.0
    """Longest wait for the server to start and list its tools; after it, the session goes on without it."""
    tool_timeout_s: float = 120.0
    """Longest wait for one tool call's answer."""
    trust: bool = False
    """Its tools run without asking in `ask` and `auto-edit` mode, and in headless runs without `--yes`."""
    problem: str | None = None
    """Why it cannot start although configured (a secret's variable is not set), or None."""

    @property
    def transport(self) -> Transport:
        return "stdio" if self.command is not None else "http"

    @property
    def target(self) -> str:
        """What it runs or where it is, for status lines."""
        return " ".join([self.command, *self.args]) if self.command is not None else str(self.url)


def parse_mcp_servers(tables: Any, path: Path | None, env: Mapping[str, str]) -> tuple[McpServerConfig, ...]:
    """The servers of a config file's `mcp_servers` table, in file order; raises ConfigError naming the key."""
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: mcp_servers must be a table of [mcp_servers.NAME] tables")
    return tuple(_server(name, table, path, env) for name, table in tables.items())


def _server(name: str, table: Any, path: Path | None, env: Mapping[str, str]) -> McpServerConfig:
    where = f"{path}: mcp_servers.{name}"
    if not SERVER_NAME.fullmatch(name):
        raise ConfigError(f"{where}: a server name may hold letters, digits, '-' and single '_' only")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
    if ("command" in table) == ("url" in table):
        raise ConfigError(f"{where}: give either command (a stdio server) or url (a streamable-HTTP server)")
    stdio_only, http_only = ("args", "env", "env_from_env"), ("headers", "headers_from_env")
    for key in http_only if "command" in table else stdio_only:
        if key in table:
            raise ConfigError(f"{where}: {key} is for {'HTTP' if key in http_only else 'stdio'} servers only")
    command = _text(table, "command", where)
    url = _text(table, "url", where)
    if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(f"{where}.url must be an http:// or https:// URL, got {url!r}")
    args = table.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise ConfigError(f"{where}.args must be a list of strings, got {args!r}")
    literal_env, literal_headers = _strings(table, "env", where), _strings(table, "headers", where)
    _check_secrets_readable(path, where, {**literal_env, **literal_headers})
    env_values, env_missing = _from_env(_strings(table, "env_from_env", where), env)
    header_values, header_missing = _from_env(_strings(table, "headers_from_env", where), env)
    missing = env_missing + header_missing
    return McpServerConfig(
        name=name, command=command, args=tuple(args), env={**literal_env, **env_values}, url=url,
        headers={**literal_headers, **header_values}, enabled=_flag(table, "enabled", True, where),
        startup_timeout_s=_seconds(table, "startup_timeout_s", McpServerConfig.startup_timeout_s, where),
        tool_timeout_s=_seconds(table, "tool_timeout_s", McpServerConfig.tool_timeout_s, where),
        trust=_flag(table, "trust", False, where),
        problem=f"environment variable {', '.join(missing)} is not set" if missing else None)


def _text(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> dict[str, str]:
    value = table.get(key, {})
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise ConfigError(f"{where}.{key} must be a table of strings, e.g. {key} = {{ NAME = \"value\" }}")
    return dict(value)


def _flag(table: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
    return value


def _seconds(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{where}.{key} must be a number of seconds above 0, got {value!r}")
    return float(value)


def _from_env(names: Mapping[str, str], env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Values of the variables `names` maps to, and the variables that are not set."""
    found = {key: env[variable] for key, variable in names.items() if env.get(variable)}
    return found, [variable for key, variable in names.items() if key not in found]


def _check_secrets_readable(path: Path | None, where: str, values: Mapping[str, str]) -> None:
    """A secret written in the file needs a file only its owner reads (mode 600), as a profile's api_key does."""
    secret = next((key for key in values if _SECRET_KEY.search(key)), None)
    if secret is None or path is None:
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{where}: {secret} looks like a secret and is in a file others can read (mode {mode:o}); "
                          f"run chmod 600 {path}, or better, name a variable holding it in env_from_env or "
                          "headers_from_env")
