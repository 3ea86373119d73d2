"""The settings loader: each layer proven to beat the one below, every kind of bad input named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kcode.backends.base import Usage
from kcode.config import NO_MODEL_MESSAGE, Overrides, Settings, load_settings
from kcode.errors import ConfigError
from kcode.profiles import DEFAULT_CONTEXT_WINDOW, Profile


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def write_config(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / ".config" / "kcode" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load(home: Path, overrides: Overrides | None = None, **env: str) -> Settings:
    return load_settings({"HOME": str(home), **env}, overrides)


def test_moonshot_is_built_in_and_chosen_by_its_key(home: Path) -> None:
    settings = load(home, MOONSHOT_API_KEY="sk-moon")
    profile = settings.profile
    assert (profile.name, profile.provider, profile.model) == ("moonshot", "openai", "kimi-k2-0905-preview")
    assert profile.base_url == "https://api.moonshot.ai/v1"
    assert (profile.api_key, profile.api_key_env) == ("sk-moon", "MOONSHOT_API_KEY")
    assert profile.temperature == 0.6 and profile.context_window == 262_144 and profile.quirks == "moonshot"
    assert (profile.input_price_per_mtok, profile.cached_input_price_per_mtok,
            profile.output_price_per_mtok) == (0.60, 0.15, 2.50)
    assert "sk-moon" not in repr(settings)


def test_defaults_and_data_paths(home: Path) -> None:
    settings = load(home, MOONSHOT_API_KEY="k")
    assert (settings.approval_mode, settings.max_steps, settings.compact_threshold) == ("ask", 100, 0.85)
    assert (settings.bash_timeout_s, settings.max_output_chars, settings.cost_limit_usd) == (120.0, 16_000, None)
    assert (settings.max_attempts, settings.request_timeout_s) == (6, 300.0)
    assert settings.config_dir == home / ".config" / "kcode"
    assert settings.data_dir == home / ".local" / "share" / "kcode"
    assert settings.config_file is None


def test_xdg_directories_are_honoured_and_relative_ones_ignored(home: Path, tmp_path: Path) -> None:
    settings = load(home, MOONSHOT_API_KEY="k", XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME="rel/data")
    assert settings.config_dir == tmp_path / "cfg" / "kcode"
    assert settings.data_dir == home / ".local" / "share" / "kcode"


def test_the_config_file_in_xdg_config_home_is_read(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "kcode" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("max_steps = 7\n")
    settings = load(home, MOONSHOT_API_KEY="k", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    assert settings.max_steps == 7 and settings.config_file == path


@pytest.mark.parametrize("layers", ["file", "file+env", "file+env+flag"])
def test_each_layer_beats_the_one_below(home: Path, layers: str) -> None:
    write_config(home, 'max_steps = 20\napproval_mode = "auto-edit"\n[profiles.moonshot]\nmodel = "from-file"\n')
    env = {"MOONSHOT_API_KEY": "k"}
    overrides = None
    if "env" in layers:
        env |= {"KCODE_MAX_STEPS": "30", "KCODE_MODEL": "from-env"}
    if "flag" in layers:
        overrides = Overrides(model="from-flag", settings={"max_steps": 40})
    settings = load(home, overrides, **env)
    expected = {"file": (20, "from-file"), "file+env": (30, "from-env"), "file+env+flag": (40, "from-flag")}[layers]
    assert (settings.max_steps, settings.profile.model) == expected
    assert settings.approval_mode == "auto-edit"  # set in the file only, kept through every layer


def test_base_url_layers_file_env_flag(home: Path) -> None:
    write_config(home, 'default_profile = "work"\n[profiles.work]\nbase_url = "http://file.test/v1"\n'
                       'model = "m"\n')
    assert load(home).profile.base_url == "http://file.test/v1"
    assert load(home, KCODE_BASE_URL="http://env.test/v1/").profile.base_url == "http://env.test/v1"
    flagged = load(home, Overrides(base_url="http://flag.test/v1"), KCODE_BASE_URL="http://env.test/v1")
    assert flagged.profile.base_url == "http://flag.test/v1"


def test_profile_choice_file_default_then_variable_then_flag(home: Path) -> None:
    write_config(home, 'default_profile = "a"\n[profiles.a]\nbase_url = "http://a.test"\nmodel = "ma"\n'
                       '[profiles.b]\nbase_url = "http://b.test"\nmodel = "mb"\n')
    assert load(home).profile.name == "a"
    assert load(home, KCODE_PROFILE="b").profile.name == "b"
    assert load(home, Overrides(profile="moonshot"), KCODE_PROFILE="b", MOONSHOT_API_KEY="k").profile.name == "moonshot"


def test_kcode_api_key_replaces_the_profiles_key(home: Path) -> None:
    profile = load(home, MOONSHOT_API_KEY="sk-moon", KCODE_API_KEY="sk-other").profile
    assert (profile.api_key, profile.api_key_env) == ("sk-other", "KCODE_API_KEY")


def test_nothing_configured_says_how_in_two_lines(home: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(home)
    assert str(caught.value) == NO_MODEL_MESSAGE
    assert len(str(caught.value).splitlines()) == 2
    assert "MOONSHOT_API_KEY" in str(caught.value) and "KCODE_BASE_URL" in str(caught.value)


def test_the_loader_reads_only_the_mapping_it_is_given(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "from-os-environ")
    with pytest.raises(ConfigError, match="No model is configured"):
        load(home)


def test_openai_profile_from_the_sdk_variables(home: Path) -> None:
    profile = load(home, OPENAI_API_KEY="sk-oa", OPENAI_BASE_URL="http://proxy.test/v1", OPENAI_MODEL="gpt-x").profile
    assert (profile.name, profile.base_url, profile.model, profile.api_key) == (
        "openai", "http://proxy.test/v1", "gpt-x", "sk-oa")
    assert profile.quirks == "none" and profile.input_price_per_mtok is None
    assert profile.context_window == DEFAULT_CONTEXT_WINDOW


def test_openai_profile_without_a_model_says_where_to_set_one(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"profile 'openai' names no model; .*OPENAI_MODEL, KCODE_MODEL or --model"):
        load(home, OPENAI_API_KEY="sk-oa")


def test_moonshot_is_tried_before_openai(home: Path) -> None:
    assert load(home, OPENAI_API_KEY="a", OPENAI_MODEL="m", MOONSHOT_API_KEY="b").profile.name == "moonshot"


def test_a_base_url_of_ones_own_never_receives_a_built_in_key(home: Path) -> None:
    profile = load(home, MOONSHOT_API_KEY="sk-moon", KCODE_BASE_URL="http://localhost:8000/v1",
                   KCODE_MODEL="qwen").profile
    assert (profile.name, profile.base_url, profile.model) == ("custom", "http://localhost:8000/v1", "qwen")
    assert profile.api_key is None and profile.quirks == "none"


def test_a_base_url_without_a_model_is_an_error(home: Path) -> None:
    with pytest.raises(ConfigError, match="profile 'custom' names no model"):
        load(home, KCODE_BASE_URL="http://localhost:8000/v1")


@pytest.mark.parametrize(("model", "path"), [("local", None), ("local:/models/k2", "/models/k2")])
def test_local_models_need_no_url_or_key(home: Path, model: str, path: str | None) -> None:
    profile = load(home, Overrides(model=model)).profile
    assert (profile.provider, profile.model, profile.local_path, profile.base_url) == ("local", model, path, None)


def test_changing_the_model_drops_prices_kcode_does_not_know(home: Path) -> None:
    profile = load(home, Overrides(model="kimi-k2-turbo-preview"), MOONSHOT_API_KEY="k").profile
    assert profile.input_price_per_mtok is None and profile.pricing is None
    older = load(home, Overrides(model="kimi-k2-0711-preview"), MOONSHOT_API_KEY="k").profile
    assert older.context_window == 131_072 and older.output_price_per_mtok == 2.50


def test_prices_from_the_file_win_and_drive_the_cost(home: Path) -> None:
    write_config(home, "[profiles.moonshot]\ninput_price_per_mtok = 1\noutput_price_per_mtok = 4\n"
                       "context_window = 100000\n")
    profile = load(home, MOONSHOT_API_KEY="k").profile
    assert profile.context_window == 100_000 and profile.cached_input_price_per_mtok is None
    assert profile.pricing is not None
    assert profile.pricing.cost_usd(Usage(2_000_000, 500_000, cached_tokens=1_000_000)) == pytest.approx(2.0 + 2.0)


def test_cost_of_a_moonshot_completion_uses_the_cache_price() -> None:
    profile = Profile(name="p", provider="openai", model="m", input_price_per_mtok=0.6,
                      cached_input_price_per_mtok=0.15, output_price_per_mtok=2.5)
    assert profile.pricing is not None
    usage = Usage(1_000_000, 1_000_000, cached_tokens=400_000)
    assert profile.pricing.cost_usd(usage) == pytest.approx(0.36 + 0.06 + 2.5)


def test_quirks_follow_the_url_unless_the_profile_says(home: Path) -> None:
    write_config(home, 'default_profile = "proxy"\n[profiles.proxy]\nbase_url = "http://proxy.test/v1"\n'
                       'model = "kimi"\nquirks = "moonshot"\n')
    assert load(home).profile.quirks == "moonshot"
    assert load(home, Overrides(base_url="https://api.moonshot.cn/v1"), MOONSHOT_API_KEY="k",
                KCODE_PROFILE="moonshot").profile.quirks == "moonshot"


def test_kcode_config_points_at_another_file(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("max_steps = 3\n")
    assert load(home, MOONSHOT_API_KEY="k", KCODE_CONFIG=str(other)).max_steps == 3
    assert load(home, Overrides(config_file=other), MOONSHOT_API_KEY="k").config_file == other
    with pytest.raises(ConfigError, match=r"missing.toml \(named by KCODE_CONFIG\) does not exist"):
        load(home, MOONSHOT_API_KEY="k", KCODE_CONFIG=str(tmp_path / "missing.toml"))


def test_invalid_toml_names_the_file(home: Path) -> None:
    path = write_config(home, "max_steps = = 3\n")
    with pytest.raises(ConfigError, match=rf"^{path}: invalid TOML: .*line 1"):
        load(home, MOONSHOT_API_KEY="k")


@pytest.mark.parametrize(("text", "message"), [
    ("max_step = 3\n", "unknown key 'max_step'; allowed: .*max_steps"),
    ("[profiles.work]\ntmperature = 0.5\n", "unknown key profiles.work.tmperature; allowed: .*temperature"),
    ('max_steps = "50"\n', "max_steps must be an integer >= 1, got '50'"),
    ("max_steps = 0\n", "max_steps must be an integer >= 1, got 0"),
    ("max_steps = true\n", "max_steps must be an integer >= 1, got True"),
    ('approval_mode = "sometimes"\n', "approval_mode must be one of ask, auto-edit, yolo, got 'sometimes'"),
    ("compact_threshold = 1.5\n", "compact_threshold must be a number from 0.3 to 1, got 1.5"),
    ("compact_threshold = 0.2\n", "compact_threshold must be a number from 0.3 to 1, got 0.2"),
    ('[profiles.w]\nbase_url = "api.test/v1"\n', r"profiles.w.base_url must be an http:// or https:// URL"),
    ("[profiles.w]\ntemperature = 3\n", "profiles.w.temperature must be a number from 0 to 2, got 3"),
    ('[profiles.w]\napi_key_env = "sk-123"\n', "profiles.w.api_key_env must be the name of an environment variable"),
    ('[profiles.w]\nquirks = "kimi"\n', "profiles.w.quirks must be one of none, moonshot, got 'kimi'"),
    ("profiles = 3\n", "profiles must be a table"),
    ("default_profile = 3\n", "default_profile must be a profile name"),
])
def test_bad_file_values_name_the_file_key_and_allowed_values(home: Path, text: str, message: str) -> None:
    path = write_config(home, text)
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        load(home, MOONSHOT_API_KEY="k")


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("KCODE_MAX_STEPS", "many", "environment variable KCODE_MAX_STEPS: max_steps must be an integer >= 1, got 'many'"),
    ("KCODE_COST_LIMIT_USD", "nan", "cost_limit_usd must be a number of US dollars above 0, got 'nan'"),
    ("KCODE_MODLE", "x", "unknown environment variable KCODE_MODLE; kcode reads .*KCODE_MODEL"),
    ("KCODE_BASE_URL", "localhost:8000", "environment variable KCODE_BASE_URL: base_url must be an http"),
])
def test_bad_variables_are_named(home: Path, variable: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"HOME": str(home), "MOONSHOT_API_KEY": "k", variable: value})


def test_variables_parse_to_their_types_and_empty_means_unset(home: Path) -> None:
    settings = load(home, MOONSHOT_API_KEY="k", KCODE_COST_LIMIT_USD="2.5", KCODE_BASH_TIMEOUT_S="30",
                    KCODE_APPROVAL_MODE="yolo", KCODE_MAX_STEPS="", KCODE_MODEL="")
    assert (settings.cost_limit_usd, settings.bash_timeout_s, settings.approval_mode) == (2.5, 30.0, "yolo")
    assert settings.max_steps == 100 and settings.profile.model == "kimi-k2-0905-preview"


@pytest.mark.parametrize(("settings", "message"), [
    ({"max_steps": "x"}, "--set max_steps: max_steps must be an integer"),
    ({"approval_mode": "never"}, "--set approval_mode: approval_mode must be one of ask, auto-edit, yolo"),
    ({"colour": "red"}, "unknown setting 'colour'"),
])
def test_bad_flags_are_named(home: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(home, Overrides(settings=settings), MOONSHOT_API_KEY="k")


def test_unknown_profile_lists_the_known_ones(home: Path) -> None:
    write_config(home, '[profiles.work]\nbase_url = "http://w.test"\nmodel = "m"\n')
    expected = "^--profile: unknown profile 'wrok'; known profiles: moonshot, openai, work$"
    with pytest.raises(ConfigError, match=expected):
        load(home, Overrides(profile="wrok"))
    path = write_config(home, 'default_profile = "nope"\n')
    with pytest.raises(ConfigError, match=f"^{path}: default_profile: unknown profile 'nope'"):
        load(home)


def test_file_profiles_without_a_choice_say_how_to_choose(home: Path) -> None:
    write_config(home, '[profiles.work]\nbase_url = "http://w.test"\nmodel = "m"\n')
    with pytest.raises(ConfigError, match="defines profiles work but none is chosen; set default_profile"):
        load(home)


def test_api_key_env_that_is_not_set_is_named(home: Path) -> None:
    write_config(home, 'default_profile = "w"\n[profiles.w]\nbase_url = "http://w.test"\nmodel = "m"\n'
                       'api_key_env = "WORK_KEY"\n')
    with pytest.raises(ConfigError, match="profile 'w' reads its API key from WORK_KEY, which is not set"):
        load(home)
    assert load(home, WORK_KEY="sk-work").profile.api_key == "sk-work"


def test_a_key_in_the_file_is_accepted_only_when_nobody_else_can_read_it(home: Path) -> None:
    text = 'default_profile = "w"\n[profiles.w]\nbase_url = "http://w.test"\nmodel = "m"\napi_key = "sk-file"\n'
    path = write_config(home, text, mode=0o644)
    expected = r"profiles.w.api_key is in a file others can read \(mode 644\); run chmod 600"
    with pytest.raises(ConfigError, match=expected):
        load(home)
    path.chmod(0o600)
    profile = load(home).profile
    assert (profile.api_key, profile.api_key_env) == ("sk-file", None)
    write_config(home, text + 'api_key_env = "K"\n')
    with pytest.raises(ConfigError, match="sets both api_key and api_key_env"):
        load(home)


def test_tool_settings_carry_the_configured_limits(home: Path) -> None:
    settings = load(home, Overrides(settings={"bash_timeout_s": 900, "max_output_chars": 5000}), MOONSHOT_API_KEY="k")
    tools = settings.tool_settings()
    assert (tools.bash_timeout_s, tools.max_output_chars, tools.max_bash_timeout_s) == (900.0, 5000, 900.0)


def test_loading_settings_imports_neither_openai_nor_torch() -> None:
    code = ("import sys; from kcode.config import load_settings; "
            "load_settings({'HOME': '/nonexistent', 'MOONSHOT_API_KEY': 'k'}); "
            "print(sorted({'openai', 'torch', 'httpx2'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[2], env={**os.environ, "PYTHONPATH": "."})
    assert result.stdout.strip() == "[]"


def test_secret_names_finds_credentials_by_name_and_always_the_built_in_keys() -> None:
    from kcode.config import secret_names

    environ = {"ANTHROPIC_API_KEY": "a", "HF_TOKEN": "b", "AWS_SECRET_ACCESS_KEY": "c", "DB_PASSWORD": "d",
               "GITHUB_TOKEN": "e", "PATH": "/bin", "TOKENIZERS_PARALLELISM": "false", "HOME": "/root"}
    assert secret_names(environ) == {"ANTHROPIC_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                                     "GITHUB_TOKEN", "KCODE_API_KEY", "MOONSHOT_API_KEY", "OPENAI_API_KEY"}


def test_settings_remember_the_credentials_of_the_environment_they_came_from(home: Path) -> None:
    settings = load(home, MOONSHOT_API_KEY="k", HF_TOKEN="t", PLAIN="p")
    assert {"HF_TOKEN", "MOONSHOT_API_KEY", "KCODE_API_KEY"} <= settings.secret_variables()
    assert "PLAIN" not in settings.secret_variables()
