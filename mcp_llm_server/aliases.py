"""Model aliases from `MCP_LLM_MODEL_ALIASES`: short names (`fast`, `smart`) for `provider:model` pairs.

The setting is either comma-separated `name=provider:model` pairs or a JSON object of the same::

    MCP_LLM_MODEL_ALIASES='fast=openai:gpt-5.5-mini,smart=anthropic:claude-opus-5'
    MCP_LLM_MODEL_ALIASES='{"fast": "openai:gpt-5.5-mini", "smart": "anthropic:claude-opus-5"}'

Names are case-insensitive (stored lower-case); only the first colon of a value separates provider and model,
so `local=openai:llama3.2:3b` works. An alias wins over a model of the same name. Pure Python: the settings
module uses it before anything heavy is imported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALIAS_VARIABLE",
    "PROVIDER_NAMES",
    "AliasMismatch",
    "ModelRef",
    "model_for",
    "parse_aliases",
    "resolve_alias",
]

ALIAS_VARIABLE = "MCP_LLM_MODEL_ALIASES"
Provider = Literal["openai", "anthropic"]
PROVIDER_NAMES: dict[str, Provider] = {"openai": "openai", "anthropic": "anthropic", "claude": "anthropic"}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOOLS: dict[Provider, str] = {"openai": "ask_openai", "anthropic": "ask_claude"}


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: Provider
    model: str

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"


def _pairs(text: str) -> dict[str, object]:
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a valid JSON object ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object or `name=provider:model` pairs")
        return value
    pairs: dict[str, object] = {}
    for number, item in enumerate((part.strip() for part in text.split(",")), start=1):
        if not item:
            continue
        name, equals, target = item.partition("=")
        if not equals:  # the entry is not echoed: it may be a key pasted into the wrong variable
            raise ValueError(f"entry {number} is not `name=provider:model` (comma-separated, or a JSON object)")
        pairs[name] = target
    return pairs


def parse_aliases(value: object) -> dict[str, str]:
    """`{name: "provider:model"}` (names lower-case, provider canonical); ValueError says what is wrong."""
    if value is None:
        return {}
    raw = _pairs(value) if isinstance(value, str) else value
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object or `name=provider:model` pairs")
    aliases: dict[str, str] = {}
    for name, target in raw.items():
        key = str(name).strip().lower()
        if not _NAME.fullmatch(key):
            raise ValueError("alias names must be 1 to 64 letters, digits, `.`, `_` or `-`")
        if key in PROVIDER_NAMES:
            raise ValueError(f"alias name `{name}` is a provider name")
        if key in aliases:
            raise ValueError(f"alias `{key}` is given twice")
        if not isinstance(target, str):
            raise ValueError(f"alias `{key}` must map to a `provider:model` string")
        provider_name, colon, model = target.strip().partition(":")
        provider = PROVIDER_NAMES.get(provider_name.strip().lower())
        if provider is None or not colon or not model.strip():
            raise ValueError(f"alias `{key}` must map to `provider:model` (provider openai or anthropic)")
        aliases[key] = f"{provider}:{model.strip()}"
    return aliases


def resolve_alias(aliases: dict[str, str], name: str) -> ModelRef | None:
    """The model an alias stands for, or None when `name` is no alias."""
    target = aliases.get(name.strip().lower())
    if target is None:
        return None
    provider, _, model = target.partition(":")
    return ModelRef(PROVIDER_NAMES[provider], model)


class AliasMismatch(Exception):
    """An alias names another provider's model than the tool (or target) it was given to."""

    def __init__(self, alias: str, ref: ModelRef, wanted: Provider) -> None:
        self.alias = alias
        self.ref = ref
        super().__init__(
            f"`{alias}` is an alias ({ALIAS_VARIABLE}) for {ref}, a model of {ref.provider}, not {wanted}: "
            f"ask it with {_TOOLS[ref.provider]}, or in ask_many as the target `{alias}`. "
            "`list_models` shows every alias."
        )


def model_for(aliases: dict[str, str], provider: Provider, model: str | None, default: str) -> str:
    """The concrete model a tool of `provider` asks: the default, the alias's model, or `model` as given.

    Raises `AliasMismatch` when `model` is an alias for another provider's model.
    """
    if model is None:
        return default
    ref = resolve_alias(aliases, model)
    if ref is None:
        return model
    if ref.provider != provider:
        raise AliasMismatch(model, ref, provider)
    return ref.model
