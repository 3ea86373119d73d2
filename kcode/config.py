"""The settings of one kcode run, built in one place: defaults < config.toml < KCODE_* variables < flags.

Nothing else in kcode reads the environment: the CLI passes `os.environ` to `load_settings`, tests pass
a dict. The file is `$XDG_CONFIG_HOME/kcode/config.toml` (default `~/.config/kcode/config.toml`), or
wherever `KCODE_CONFIG` points:

    default_profile = "work"
    approval_mode = "auto-edit"          # any setting below, by its field name
    max_steps = 150

    [profiles.moonshot]                  # changes keys of the built-in profile
    model = "kimi-k2-turbo-preview"

    [profiles.work]
    base_url = "https://llm.example.com/v1"
    api_key_env = "WORK_LLM_KEY"         # the NAME of the variable that holds the key
    model = "qwen3-coder"
    context_window = 131072
    input_price_per_mtok = 0.4           # USD; with output_price_per_mtok, enables cost_limit_usd
    output_price_per_mtok = 1.6

Keys belong in the environment. A profile may hold `api_key` itself, but only in a file nobody else can
read (mode 600), the rule ssh applies to private keys. Each setting `name` can also be set by the
variable `KCODE_NAME` (an empty value counts as unset); `KCODE_PROFILE`, `KCODE_BASE_URL`,
`KCODE_API_KEY` and `KCODE_MODEL` choose and change the profile. `[mcp_servers.NAME]` tables add the tools
of MCP servers (see kcode/mcp/config.py).
"""

from __future__ import annotations

import math
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast, get_args

from kcode.agent.approvals import ApprovalMode
from kcode.errors import ConfigError
from kcode.mcp.config import McpServerConfig, parse_mcp_servers
from kcode.profiles import (
    DEFAULT_CONTEXT_WINDOW,
    Profile,
    Quirks,
    builtin_profiles,
    is_local_model,
    is_moonshot_url,
    model_facts,
)
from tools.sandbox import SANDBOX_MODES, SandboxMode
from tools.secret_files import SecretFiles
from tools.settings import MIN_OUTPUT_CHARS, ToolSettings

APPROVAL_MODES: tuple[ApprovalMode, ...] = get_args(ApprovalMode)

NO_MODEL_MESSAGE = (
    "No model is configured.\n"
    "Set MOONSHOT_API_KEY=... (Kimi K2), or KCODE_BASE_URL, KCODE_API_KEY and KCODE_MODEL for any "
    "OpenAI-compatible API; see README 'Configuration'."
)


API_KEY_VARIABLES = frozenset({"KCODE_API_KEY", "MOONSHOT_API_KEY", "OPENAI_API_KEY"})
"""The built-in profiles' key variables, kept from the agent's shell and from repository code."""
_SECRET_NAME = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)


def secret_names(environ: Mapping[str, str]) -> frozenset[str]:
    """The variables of `environ` that look like credentials (`*_API_KEY`, `*_TOKEN`, `*SECRET*`, ...) and the
    built-in key variables: what code kcode did not write (a benchmark's repository, say) must not see."""
    return API_KEY_VARIABLES | {name for name in environ if _SECRET_NAME.search(name)}


@dataclass(frozen=True)
class Settings:
    """Everything one kcode run is configured with."""

    profile: Profile
    """The model to talk to, resolved and with its key looked up."""
    config_dir: Path
    """`$XDG_CONFIG_HOME/kcode` (default `~/.config/kcode`): where config.toml lives."""
    data_dir: Path
    """`$XDG_DATA_HOME/kcode` (default `~/.local/share/kcode`): sessions and prompt history."""
    config_file: Path | None = None
    """The config file that was read, if any."""
    approval_mode: ApprovalMode = "ask"
    """`ask` before every edit and command, `auto-edit` asks only for commands, `yolo` never asks."""
    max_steps: int = 100
    """Most model calls in one turn before the agent stops and says so."""
    bash_timeout_s: float = ToolSettings.bash_timeout_s
    """Default wall-clock limit of one shell command; the model may ask for more, up to 10 minutes or this."""
    max_output_chars: int = ToolSettings.max_output_chars
    """Most characters of one tool result the model reads; the rest is saved to a file it can view."""
    compact_threshold: float = 0.85
    """Share of the context window at which the history is compacted."""
    cost_limit_usd: float | None = None
    """Stop a run that has spent this many US dollars; needs the profile's prices. None: no limit."""
    token_limit: int | None = None
    """Stop a run once its completions have used this many tokens (prompt plus completion). None: no limit."""
    time_limit_s: float | None = None
    """Stop a turn that has run this many seconds (checked between model calls). None: no limit."""
    max_attempts: int = 6
    """Tries of one model request, the first included, on rate limits, server errors and broken streams."""
    request_timeout_s: float = 300.0
    """Longest wait for the next byte of a model response before the try counts as failed."""
    sandbox: SandboxMode = "workspace-write"
    """How the agent's shell is confined: `workspace-write` (only the workspace and /tmp are writable, no
    credential files, no network unless `allow_network`), `read-only` (only /tmp), or `off`."""
    allow_network: bool = False
    """Let sandboxed commands reach the network (downloads, package installs)."""
    allow_destructive: bool = False
    """Let `yolo` and headless runs run commands the destructive-command guard catches (`rm -rf ~`,
    `git reset --hard`, ...); otherwise they are refused. In `ask` and `auto-edit` the user is asked instead."""
    secret_files: tuple[str, ...] = ToolSettings.secret_files
    """Gitignore-style globs of files the editor and search leave alone because they look like credentials
    (`.env`, private keys, ...; see tools/secret_files.py). `[]` turns this off."""
    mcp: bool = True
    """Give the agent the tools of the servers in `[mcp_servers]`; `--no-mcp` sets it false for one run."""
    mcp_servers: tuple[McpServerConfig, ...] = ()
    """The `[mcp_servers.NAME]` tables of the config file, in order (disabled ones too)."""
    credential_variables: frozenset[str] = frozenset()
    """Variables of the environment the settings were loaded from whose names say they hold credentials
    (`*_API_KEY`, `*_TOKEN`, `*SECRET*`, ...); filled in by `load_settings`."""

    def secret_variables(self) -> frozenset[str]:
        """Environment variables holding model API keys or other credentials: the agent's shell must not see
        them."""
        names = set(API_KEY_VARIABLES) | self.credential_variables
        if self.profile.api_key_env:
            names.add(self.profile.api_key_env)
        return frozenset(names)

    def tool_settings(self) -> ToolSettings:
        """The tools' limits as configured here (the rest keep the tools' own defaults)."""
        return ToolSettings(max_output_chars=self.max_output_chars, bash_timeout_s=self.bash_timeout_s,
                            max_bash_timeout_s=max(ToolSettings.max_bash_timeout_s, self.bash_timeout_s),
                            secret_files=self.secret_files)


@dataclass(frozen=True)
class Overrides:
    """What the command line sets; it beats the file and the environment."""

    profile: str | None = None
    model: str | None = None
    base_url: str | None = None
    config_file: Path | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Settings by field name from `--set NAME=VALUE`; strings are parsed as variables are."""

    @classmethod
    def parse_set(cls, assignments: Sequence[str]) -> dict[str, str]:
        """`["max_steps=50"]` as `{"max_steps": "50"}`; unknown names are caught later, with the allowed ones."""
        settings: dict[str, str] = {}
        for assignment in assignments:
            name, equals, value = assignment.partition("=")
            if not equals or not name.strip():
                raise ConfigError(f"--set expects NAME=VALUE, got {assignment!r}")
            if name.strip() not in _SETTINGS_KEYS:
                raise ConfigError(f"--set: unknown setting {name.strip()!r}; settings: {', '.join(_SETTINGS_KEYS)}")
            settings[name.strip()] = value.strip()
        return settings


@dataclass(frozen=True)
class _Key:
    """The type and the allowed values of one configuration key, in words for error messages."""

    kind: type
    expect: str
    check: Callable[[Any], bool] = bool


def _is_url(value: str) -> bool:
    return re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) is not None


def _valid_globs(globs: tuple[Any, ...]) -> bool:
    try:
        SecretFiles(globs)
    except ValueError:
        return False
    return True


_SETTINGS_KEYS: dict[str, _Key] = {
    "approval_mode": _Key(str, "one of ask, auto-edit, yolo", lambda v: v in APPROVAL_MODES),
    "max_steps": _Key(int, "an integer >= 1", lambda v: v >= 1),
    "bash_timeout_s": _Key(float, "a number of seconds above 0 and at most 3600", lambda v: 0 < v <= 3600),
    "max_output_chars": _Key(int, f"an integer >= {MIN_OUTPUT_CHARS}", lambda v: v >= MIN_OUTPUT_CHARS),
    # The compactor keeps the newest quarter of the window word for word, so the threshold must lie above it.
    "compact_threshold": _Key(float, "a number from 0.3 to 1", lambda v: 0.3 <= v <= 1),
    "cost_limit_usd": _Key(float, "a number of US dollars above 0", lambda v: v > 0),
    "token_limit": _Key(int, "an integer >= 1", lambda v: v >= 1),
    "time_limit_s": _Key(float, "a number of seconds above 0", lambda v: v > 0),
    "max_attempts": _Key(int, "an integer from 1 to 20", lambda v: 1 <= v <= 20),
    "request_timeout_s": _Key(float, "a number of seconds above 0", lambda v: v > 0),
    "sandbox": _Key(str, "one of off, workspace-write, read-only", lambda v: v in SANDBOX_MODES),
    "allow_network": _Key(bool, "true or false", lambda v: True),
    "allow_destructive": _Key(bool, "true or false", lambda v: True),
    "mcp": _Key(bool, "true or false", lambda v: True),
    "secret_files": _Key(tuple, "a list of gitignore-style globs (comma-separated in a variable or flag)",
                         _valid_globs),
}
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
_PRICE = _Key(float, "a number of US dollars >= 0", lambda v: v >= 0)
_PROFILE_KEYS: dict[str, _Key] = {
    "base_url": _Key(str, "an http:// or https:// URL", _is_url),
    "api_key_env": _Key(str, "the name of an environment variable",
                        lambda v: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) is not None),
    "api_key": _Key(str, "a non-empty string"),
    "model": _Key(str, "a non-empty model id"),
    "temperature": _Key(float, "a number from 0 to 2", lambda v: 0 <= v <= 2),
    "max_tokens": _Key(int, "an integer >= 1", lambda v: v >= 1),
    "context_window": _Key(int, "an integer >= 1024", lambda v: v >= 1024),
    "input_price_per_mtok": _PRICE,
    "output_price_per_mtok": _PRICE,
    "cached_input_price_per_mtok": _PRICE,
    "quirks": _Key(str, "one of none, moonshot", lambda v: v in ("none", "moonshot")),
}
_PRICE_KEYS = ("input_price_per_mtok", "output_price_per_mtok", "cached_input_price_per_mtok")
_PROFILE_VARIABLES = {"KCODE_BASE_URL": "base_url", "KCODE_MODEL": "model"}
_KNOWN_VARIABLES = frozenset({"KCODE_CONFIG", "KCODE_PROFILE", "KCODE_API_KEY", *_PROFILE_VARIABLES,
                              *(f"KCODE_{name.upper()}" for name in _SETTINGS_KEYS)})


def load_settings(env: Mapping[str, str], overrides: Overrides | None = None) -> Settings:
    """Layer defaults, the config file, `KCODE_*` variables and `overrides`, validating each value.

    Raises ConfigError naming the file or variable, the key and the allowed values.
    """
    overrides = overrides or Overrides()
    env = {name: value for name, value in env.items() if value != "" or not name.startswith("KCODE_")}
    unknown = sorted(name for name in env if name.startswith("KCODE_") and name not in _KNOWN_VARIABLES)
    if unknown:
        known = ", ".join(sorted(_KNOWN_VARIABLES))
        raise ConfigError(f"unknown environment variable {unknown[0]}; kcode reads {known}")
    config_dir = _xdg_dir(env, "XDG_CONFIG_HOME", ".config")
    path = _config_path(env, overrides, config_dir)
    document = _read_toml(path) if path is not None else {}
    values = _layered_settings(document, path, env, overrides)
    profile = _resolve_profile(document, path, env, overrides)
    return Settings(profile=profile, config_dir=config_dir, data_dir=data_dir(env), config_file=path,
                    mcp_servers=parse_mcp_servers(document.get("mcp_servers", {}), path, env),
                    credential_variables=secret_names(env), **values)


def load_mcp_servers(env: Mapping[str, str], config_file: Path | None = None) -> tuple[McpServerConfig, ...]:
    """The config file's MCP servers alone: `kcode mcp list` needs no model configured."""
    path = _config_path(env, Overrides(config_file=config_file), config_dir(env))
    document = _read_toml(path) if path is not None else {}
    return parse_mcp_servers(document.get("mcp_servers", {}), path, env)


def data_dir(env: Mapping[str, str]) -> Path:
    """Where sessions and prompt history live; needs no model, so `kcode sessions` works unconfigured."""
    return _xdg_dir(env, "XDG_DATA_HOME", ".local/share")


def config_dir(env: Mapping[str, str]) -> Path:
    """Where config.toml lives: `$XDG_CONFIG_HOME/kcode`, default `~/.config/kcode`."""
    return _xdg_dir(env, "XDG_CONFIG_HOME", ".config")


def cache_dir(env: Mapping[str, str]) -> Path:
    """Where rebuildable things live (the SWE-bench harness's environments): `$XDG_CACHE_HOME/kcode`."""
    return _xdg_dir(env, "XDG_CACHE_HOME", ".cache")


def _xdg_dir(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    """`$variable/kcode`, or `~/fallback/kcode`; the XDG spec says relative values are to be ignored."""
    root = env.get(variable)
    if root and Path(root).is_absolute():
        return Path(root) / "kcode"
    home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / fallback / "kcode"


def _config_path(env: Mapping[str, str], overrides: Overrides, config_dir: Path) -> Path | None:
    if overrides.config_file is not None:
        explicit, named_by = overrides.config_file, "--config"
    elif env.get("KCODE_CONFIG"):
        explicit, named_by = Path(env["KCODE_CONFIG"]), "KCODE_CONFIG"
    else:
        default = config_dir / "config.toml"
        return default if default.is_file() else None
    if not explicit.is_file():
        raise ConfigError(f"config file {explicit} (named by {named_by}) does not exist")
    return explicit


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    allowed = {"default_profile", "profiles", "mcp_servers", *_SETTINGS_KEYS}
    for key in document:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
    if not isinstance(document.get("default_profile", ""), str):
        raise ConfigError(f"{path}: default_profile must be a profile name, got {document['default_profile']!r}")
    return document


def _coerce(value: Any, key: str, spec: _Key, source: str, *, from_text: bool = False) -> Any:
    """`value` checked against `spec`; with `from_text` (variables, flags) a string is parsed first.

    TOML values have types of their own, so a quoted number in the file is an error, not a number.
    """
    parsed = value
    if spec.kind is tuple:  # a TOML array, or comma-separated text ("" or "[]" for none)
        if from_text and isinstance(value, str):
            value = [] if value.strip() in ("", "[]") else [item.strip() for item in value.split(",")]
        parsed = tuple(value) if isinstance(value, list) else value
    elif from_text and isinstance(value, str) and spec.kind is bool:
        parsed = _BOOLEANS.get(value.strip().lower(), value)
    elif from_text and isinstance(value, str) and spec.kind is not str:
        try:
            parsed = spec.kind(value.strip())
        except ValueError:
            raise ConfigError(f"{source}: {key} must be {spec.expect}, got {value!r}") from None
    if spec.kind is float and isinstance(parsed, int) and not isinstance(parsed, bool):
        parsed = float(parsed)
    fits = isinstance(parsed, spec.kind) and (spec.kind is bool or not isinstance(parsed, bool))
    if fits and isinstance(parsed, float):
        fits = math.isfinite(parsed)
    if not fits or not spec.check(parsed):
        raise ConfigError(f"{source}: {key} must be {spec.expect}, got {value!r}")
    return parsed


def _layered_settings(document: Mapping[str, Any], path: Path | None, env: Mapping[str, str],
                      overrides: Overrides) -> dict[str, Any]:
    for name in overrides.settings:
        if name not in _SETTINGS_KEYS:
            raise ConfigError(f"unknown setting {name!r}; known: {', '.join(_SETTINGS_KEYS)}")
    values: dict[str, Any] = {}
    for name, spec in _SETTINGS_KEYS.items():
        variable = f"KCODE_{name.upper()}"
        if name in document:
            values[name] = _coerce(document[name], name, spec, str(path))
        if variable in env:
            values[name] = _coerce(env[variable], name, spec, f"environment variable {variable}", from_text=True)
        if name in overrides.settings:
            values[name] = _coerce(overrides.settings[name], name, spec, f"--set {name}", from_text=True)
    return values


def _file_profiles(document: Mapping[str, Any], path: Path | None) -> dict[str, dict[str, Any]]:
    """The `[profiles.NAME]` tables of the file, every key checked."""
    tables = document.get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: profiles must be a table of [profiles.NAME] tables")
    checked: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: profiles.{name} must be a table, got {table!r}")
        for key in table:
            if key not in _PROFILE_KEYS:
                raise ConfigError(f"{path}: unknown key profiles.{name}.{key}; "
                                  f"allowed: {', '.join(_PROFILE_KEYS)}")
        checked[name] = {key: _coerce(value, f"profiles.{name}.{key}", _PROFILE_KEYS[key], str(path))
                         for key, value in table.items()}
        if "api_key" in table:
            _check_key_file(cast(Path, path), name, table)
    return checked


def _check_key_file(path: Path, name: str, table: Mapping[str, Any]) -> None:
    if "api_key_env" in table:
        raise ConfigError(f"{path}: profiles.{name} sets both api_key and api_key_env; keep one (api_key_env)")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"{path}: profiles.{name}.api_key is in a file others can read (mode {mode:o}); "
                          f"run chmod 600 {path}, or better, keep the key in a variable named by api_key_env")


def _chosen_profile(document: Mapping[str, Any], env: Mapping[str, str],
                    overrides: Overrides, path: Path | None) -> tuple[str, str] | None:
    """The profile the user named, and where: the flag, then KCODE_PROFILE, then the file's default."""
    if overrides.profile:
        return overrides.profile, "--profile"
    if env.get("KCODE_PROFILE"):
        return env["KCODE_PROFILE"], "KCODE_PROFILE"
    if document.get("default_profile"):
        return document["default_profile"], f"{path}: default_profile"
    return None


def _resolve_profile(document: Mapping[str, Any], path: Path | None, env: Mapping[str, str],
                     overrides: Overrides) -> Profile:
    files = _file_profiles(document, path)
    builtins = builtin_profiles(env)
    chosen = _chosen_profile(document, env, overrides, path)
    if chosen is not None:
        name, named_by = chosen
        if name not in builtins and name not in files:
            known = ", ".join(sorted({*builtins, *files}))
            raise ConfigError(f"{named_by}: unknown profile {name!r}; known profiles: {known}")
    elif _own_endpoint(env, overrides):
        # A base URL of one's own starts from a blank profile, so no built-in key goes to another host.
        name = "custom"
    else:
        name = next((n for n, table in builtins.items() if env.get(table["api_key_env"])), "")
        if not name:
            if files:
                raise ConfigError(f"{path} defines profiles {', '.join(sorted(files))} but none is chosen; "
                                  "set default_profile there, KCODE_PROFILE, or --profile")
            raise ConfigError(NO_MODEL_MESSAGE)
    table = {**builtins.get(name, {}), **files.get(name, {})}
    for variable, key in _PROFILE_VARIABLES.items():
        if variable in env:
            table[key] = _coerce(env[variable], key, _PROFILE_KEYS[key], f"environment variable {variable}")
    for key, value in (("base_url", overrides.base_url), ("model", overrides.model)):
        if value:
            table[key] = _coerce(value, key, _PROFILE_KEYS[key], f"--{key.replace('_', '-')}")
    return _build_profile(name, table, env)


def _own_endpoint(env: Mapping[str, str], overrides: Overrides) -> bool:
    """Whether the variables or flags name a base URL or the local engine, instead of a profile."""
    model = overrides.model or env.get("KCODE_MODEL", "")
    return bool(overrides.base_url or env.get("KCODE_BASE_URL")) or is_local_model(model)


def _build_profile(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Profile:
    model = table.get("model")
    if not model:
        where = "OPENAI_MODEL, " if name == "openai" else ""
        raise ConfigError(f"profile {name!r} names no model; set model in [profiles.{name}], {where}KCODE_MODEL "
                          "or --model")
    common = {"name": name, "model": model, "temperature": table.get("temperature"),
              "max_tokens": table.get("max_tokens")}
    if is_local_model(model):
        return Profile(provider="local", local_path=model.partition(":")[2] or None,
                       context_window=table.get("context_window", DEFAULT_CONTEXT_WINDOW), **common)
    base_url = table.get("base_url")
    if not base_url:
        raise ConfigError(f"profile {name!r} has no base_url; set it in [profiles.{name}], KCODE_BASE_URL or "
                          "--base-url")
    api_key, api_key_env = _api_key(name, table, env)
    facts = model_facts(base_url, model)
    if facts is not None and not any(key in table for key in _PRICE_KEYS):
        table = {**table, "input_price_per_mtok": facts.input_price_per_mtok,
                 "output_price_per_mtok": facts.output_price_per_mtok,
                 "cached_input_price_per_mtok": facts.cached_input_price_per_mtok}
    context_window = table.get("context_window") or (facts.context_window if facts else DEFAULT_CONTEXT_WINDOW)
    quirks: Quirks = table.get("quirks") or ("moonshot" if is_moonshot_url(base_url) else "none")
    return Profile(provider="openai", base_url=base_url.rstrip("/"), api_key=api_key, api_key_env=api_key_env,
                   context_window=context_window, quirks=quirks,
                   input_price_per_mtok=table.get("input_price_per_mtok"),
                   output_price_per_mtok=table.get("output_price_per_mtok"),
                   cached_input_price_per_mtok=table.get("cached_input_price_per_mtok"), **common)


def _api_key(name: str, table: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The key and the variable it came from: KCODE_API_KEY, else the file's api_key, else api_key_env."""
    if env.get("KCODE_API_KEY"):
        return env["KCODE_API_KEY"], "KCODE_API_KEY"
    if table.get("api_key"):
        return table["api_key"], None
    variable = table.get("api_key_env")
    if variable is None:
        return None, None
    if not env.get(variable):
        raise ConfigError(f"profile {name!r} reads its API key from {variable}, which is not set")
    return env[variable], variable
