"""Model aliases from `MCP_LLM_MODEL_ALIASES`: short names (`fast`, `smart`) for `provider:model` pairs.

The setting is either comma-separated `name=provider:model` pairs or a JSON object of the same::

    MCP_LLM_MODEL_ALIASES='fast=openai:gpt-5.5-mini,smart=anthropic:claude-opus-5|openai:gpt-5.5|ollama:qwen3'
    MCP_LLM_MODEL_ALIASES='{"fast": "openai:gpt-5.5-mini", "smart": "anthropic:claude-opus-5|openai:gpt-5.5"}'

An alias naming several targets, separated by `|`, is a failover list: asked in order, the next one when a target
cannot answer (`failover.py`). Names are case-insensitive (stored lower-case); only the first colon of a target
separates provider and model, so `local=ollama:llama3.2:3b` works. The provider may be a built-in one or a name from
`MCP_LLM_PROVIDERS` (settings check that it exists). An alias wins over a model of the same name. Pure Python: the
settings module uses it before anything heavy is imported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

__all__ = [
    "ALIAS_VARIABLE",
    "MAX_FAILOVER_TARGETS",
    "PROVIDER_NAMES",
    "AliasMismatch",
    "ModelRef",
    "alias_providers",
    "model_for",
    "parse_aliases",
    "resolve_alias",
]

ALIAS_VARIABLE = "MCP_LLM_MODEL_ALIASES"
MAX_FAILOVER_TARGETS = 8
# The built-in providers' spellings; named providers are their own canonical names.
PROVIDER_NAMES: dict[str, str] = {"openai": "openai", "anthropic": "anthropic", "claude": "anthropic"}
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_TOOLS: dict[str, str] = {"openai": "ask_openai", "anthropic": "ask_claude"}


@dataclass(frozen=True, slots=True)
class ModelRef:
    provider: str
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
        parts = [part.strip() for part in target.split("|")]
        if len(parts) > MAX_FAILOVER_TARGETS:
            raise ValueError(f"alias `{key}` names more than {MAX_FAILOVER_TARGETS} targets")
        aliases[key] = "|".join(str(_target(key, part)) for part in parts)
    return aliases


def _target(alias: str, target: str) -> ModelRef:
    provider_name, colon, model = target.partition(":")
    provider = provider_name.strip().lower()
    if not _NAME.fullmatch(provider) or not colon or not model.strip():
        raise ValueError(f"alias `{alias}` must map to `provider:model` (or several, separated by `|`)")
    return ModelRef(PROVIDER_NAMES.get(provider, provider), model.strip())


def alias_providers(aliases: dict[str, str]) -> set[str]:
    """Every provider the aliases name (settings check each exists)."""
    return {ref.provider for name in aliases for ref in resolve_alias(aliases, name) or ()}


def resolve_alias(aliases: dict[str, str], name: str) -> tuple[ModelRef, ...] | None:
    """The models an alias stands for, in failover order (usually one), or None when `name` is no alias."""
    target = aliases.get(name.strip().lower())
    if target is None:
        return None
    refs = []
    for part in target.split("|"):
        provider, _, model = part.partition(":")
        refs.append(ModelRef(provider, model))
    return tuple(refs)


class AliasMismatch(Exception):
    """An alias names another provider's model than the tool (or target) it was given to, or several models."""

    def __init__(self, alias: str, refs: tuple[ModelRef, ...], wanted: str) -> None:
        self.alias = alias
        if len(refs) > 1:
            what = f"a failover list ({' then '.join(map(str, refs))})"
        else:
            what = f"{refs[0]}, a model of {refs[0].provider}, not {wanted}"
        tool = _TOOLS.get(refs[0].provider) if len(refs) == 1 else None
        use = f"ask it with {tool}, with `ask`," if tool else "ask it with `ask` (model `" + alias + "`)"
        super().__init__(
            f"`{alias}` is an alias ({ALIAS_VARIABLE}) for {what}: {use} or in ask_many as the target `{alias}`. "
            "`list_models` shows every alias."
        )


def model_for(aliases: dict[str, str], provider: str, model: str | None, default: str) -> str:
    """The concrete model a tool of `provider` asks: the default, the alias's model, or `model` as given.

    Raises `AliasMismatch` when `model` is an alias for another provider's model, or for several models.
    """
    if model is None:
        return default
    refs = resolve_alias(aliases, model)
    if refs is None:
        return model
    if len(refs) > 1 or refs[0].provider != provider:
        raise AliasMismatch(model, refs, provider)
    return refs[0].model
