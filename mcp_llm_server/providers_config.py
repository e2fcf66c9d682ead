"""Named providers from `MCP_LLM_PROVIDERS`: any server speaking one of the three APIs, beside OpenAI and Anthropic.

    MCP_LLM_PROVIDERS='{"ollama": {"base_url": "http://localhost:11434/v1", "api": "chat",
                                   "default_model": "qwen3"},
                        "openrouter": {"base_url": "https://openrouter.ai/api/v1", "api": "chat",
                                       "api_key_env": "OPENROUTER_API_KEY", "concurrency": 8}}'

Each entry is checked whole at start; a mistake names the entry and the field, never a value (a key may have been
pasted into the wrong place). The key is read from the variable `api_key_env` names, in the server's environment;
a provider without `api_key_env` (a local server) needs none. Pure Python: settings use it before anything heavy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

from .json_setting import json_object

__all__ = [
    "BUILTIN_PROVIDERS",
    "PROVIDERS_VARIABLE",
    "ApiStyle",
    "ProviderSpec",
    "parse_providers",
]

PROVIDERS_VARIABLE = "MCP_LLM_PROVIDERS"
ApiStyle = Literal["chat", "responses", "messages"]
# Names a named provider may not take: the built-in providers and their spellings.
BUILTIN_PROVIDERS = ("openai", "anthropic", "claude")
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")  # the ledger's provider column holds 32 characters
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_FIELDS = (
    "base_url",
    "api",
    "api_key_env",
    "default_model",
    "concurrency",
    "budget_daily_usd",
    "budget_monthly_usd",
)
_SHAPE = '{"name": {"base_url": "http://…/v1", "api": "chat" | "responses" | "messages", …}}'


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    base_url: str
    api: ApiStyle
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)  # read from `api_key_env` at start
    default_model: str | None = None
    concurrency: int | None = None  # the ceiling of its adaptive limit (None: 64)
    budget_daily_usd: float | None = None
    budget_monthly_usd: float | None = None

    @property
    def configured(self) -> bool:
        return self.api_key_env is None or self.api_key is not None


def parse_providers(value: object, environ: Mapping[str, str] | None = None) -> dict[str, ProviderSpec]:
    """`{name: ProviderSpec}` from the setting; a ValueError names the entry and field that are wrong."""
    if isinstance(value, Mapping) and all(isinstance(v, ProviderSpec) for v in value.values()):
        return dict(value)
    raw = json_object(value, _SHAPE)
    env = os.environ if environ is None else environ
    specs: dict[str, ProviderSpec] = {}
    for name, entry in raw.items():
        key = str(name).strip().lower()
        if not NAME_PATTERN.fullmatch(key):
            raise ValueError(f"entry {str(name)[:40]!r}: a name is 1 to 32 lower-case letters, digits, `.`, `_`, `-`")
        if key in BUILTIN_PROVIDERS:
            raise ValueError(f"entry `{key}`: `{key}` is built in (configure it with its own variables)")
        if key in specs:
            raise ValueError(f"entry `{key}` is given twice")
        specs[key] = _spec(key, entry, env)
    return specs


def _spec(name: str, entry: object, env: Mapping[str, str]) -> ProviderSpec:
    where = f"entry `{name}`"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object with `base_url` and `api`")
    unknown = sorted(str(k) for k in entry if k not in _FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field `{unknown[0][:40]}` (fields: {', '.join(_FIELDS)})")
    key_env = _optional_text(entry, "api_key_env", where)
    if key_env is not None and not _VARIABLE.fullmatch(key_env):
        raise ValueError(f"{where}, field `api_key_env`: must be the NAME of an environment variable, not a key")
    key = env.get(key_env, "").strip() if key_env else ""
    if any(char.isspace() for char in key):
        raise ValueError(f"{where}: the key in {key_env} contains whitespace (a stray space or newline?)")
    return ProviderSpec(
        name=name,
        base_url=_base_url(entry.get("base_url"), where),
        api=_api(entry.get("api"), where),
        api_key_env=key_env,
        api_key=key or None,
        default_model=_optional_text(entry, "default_model", where),
        concurrency=_optional_int(entry, "concurrency", where, 1, 1024),
        budget_daily_usd=_optional_usd(entry, "budget_daily_usd", where),
        budget_monthly_usd=_optional_usd(entry, "budget_monthly_usd", where),
    )


def _base_url(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip().startswith(("http://", "https://")):
        raise ValueError(f"{where}, field `base_url`: required, an http:// or https:// URL")
    return value.strip().rstrip("/")


def _api(value: object, where: str) -> ApiStyle:
    styles = get_args(ApiStyle)
    if value not in styles:
        raise ValueError(f"{where}, field `api`: required, one of {', '.join(styles)}")
    return cast(ApiStyle, value)


def _optional_text(entry: dict[str, object], name: str, where: str) -> str | None:
    value = entry.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise ValueError(f"{where}, field `{name}`: must be a non-empty string")
    return value.strip()


def _optional_int(entry: dict[str, object], name: str, where: str, low: int, high: int) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}, field `{name}`: must be a whole number from {low} to {high}")
    return value


def _optional_usd(entry: dict[str, object], name: str, where: str) -> float | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        raise ValueError(f"{where}, field `{name}`: must be a number of US dollars, 0 or more")
    return float(value)
