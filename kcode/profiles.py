"""Model profiles: where a model is served, how to authenticate, what it can hold and what it costs.

Two profiles are built in: `moonshot` (Kimi K2 on Moonshot's API) and `openai` (any endpoint named by
the OpenAI SDK's usual variables). A model named `local` or `local:PATH` is kcode's own engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from kcode.agent.limits import Pricing

Provider = Literal["openai", "local"]
"""`openai`: any OpenAI-compatible HTTP API; `local`: kcode's own engine, in process."""
Quirks = Literal["none", "moonshot"]
"""Provider rules the remote backend applies to requests (see DESIGN.md §3 for Moonshot's)."""

DEFAULT_CONTEXT_WINDOW = 131_072
"""Assumed when a profile does not say: 128K tokens, which most current chat models hold."""
MOONSHOT_BASE_URL = "https://api.moonshot.ai/v1"
OPENAI_BASE_URL = "https://api.openai.com/v1"
LOCAL_MODEL = "local"


@dataclass(frozen=True)
class ModelFacts:
    """Published limits and prices (USD per million tokens) of one model."""

    context_window: int
    input_price_per_mtok: float
    cached_input_price_per_mtok: float
    output_price_per_mtok: float


# Moonshot's price list, platform.moonshot.ai/docs/pricing/chat, "Generation Model kimi-k2" (as archived
# 2026-03-26): per 1M tokens, input $0.15 on a cache hit, $0.60 on a miss, output $2.50; context 262,144
# tokens for 0905 and 131,072 for 0711. Only models with a published price are listed.
MOONSHOT_MODELS: Mapping[str, ModelFacts] = {
    "kimi-k2-0905-preview": ModelFacts(262_144, 0.60, 0.15, 2.50),
    "kimi-k2-0711-preview": ModelFacts(131_072, 0.60, 0.15, 2.50),
}


@dataclass(frozen=True)
class Profile:
    """One resolved model profile: everything a backend needs, with the API key already looked up."""

    name: str
    """The profile's name (`moonshot`, `openai`, a `[profiles.NAME]` table, or `custom` from variables)."""
    provider: Provider
    model: str
    """The model id sent to the API; `local` or `local:PATH` for the engine."""
    base_url: str | None = None
    """The API root, such as `https://api.moonshot.ai/v1`; None for the local engine."""
    api_key: str | None = field(default=None, repr=False)
    """The key itself, never printed; None for servers that need none."""
    api_key_env: str | None = None
    """The variable the key came from, named in error messages so the user knows what to fix."""
    temperature: float | None = None
    """Sampling temperature; None leaves the server's default."""
    max_tokens: int | None = None
    """Most tokens one completion may produce; None leaves the server's default."""
    context_window: int = DEFAULT_CONTEXT_WINDOW
    """Tokens the model holds, prompt and completion together; compaction aims below this."""
    input_price_per_mtok: float | None = None
    """USD per million prompt tokens (cache misses); None when unknown, which turns cost limits off."""
    output_price_per_mtok: float | None = None
    """USD per million completion tokens."""
    cached_input_price_per_mtok: float | None = None
    """USD per million prompt tokens served from the provider's cache; None means the full input price."""
    quirks: Quirks = "none"
    """Request rules of the provider; `moonshot` by default when the base URL is Moonshot's."""
    local_path: str | None = None
    """For `local:PATH`, the checkpoint directory; None means the engine's default."""

    @property
    def pricing(self) -> Pricing | None:
        """The prices the budget charges completions at; None unless input and output prices are both known."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        return Pricing(self.input_price_per_mtok, self.output_price_per_mtok, self.cached_input_price_per_mtok)


def builtin_profiles(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The built-in profiles as raw tables, in the order they are tried when none is chosen.

    They have the shape of a `[profiles.NAME]` table so a config file can override any key of them.
    Prices and context windows are not here: they follow the model (see `model_facts`).
    """
    openai: dict[str, Any] = {"base_url": env.get("OPENAI_BASE_URL") or OPENAI_BASE_URL,
                              "api_key_env": "OPENAI_API_KEY"}
    if env.get("OPENAI_MODEL"):
        openai["model"] = env["OPENAI_MODEL"]
    return {
        "moonshot": {"base_url": MOONSHOT_BASE_URL, "api_key_env": "MOONSHOT_API_KEY",
                     "model": "kimi-k2-0905-preview", "temperature": 0.6},
        "openai": openai,
    }


def is_moonshot_url(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in ("api.moonshot.ai", "api.moonshot.cn") or host.endswith((".moonshot.ai", ".moonshot.cn"))


def model_facts(base_url: str | None, model: str) -> ModelFacts | None:
    """Published limits and prices for a model at a base URL, when kcode knows them."""
    if base_url is not None and is_moonshot_url(base_url):
        return MOONSHOT_MODELS.get(model)
    return None


def is_local_model(model: str) -> bool:
    return model == LOCAL_MODEL or model.startswith(LOCAL_MODEL + ":")
