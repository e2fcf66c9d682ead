"""What a caller's target names: `provider`, `provider:model` or an alias, resolved to the models to ask in order.

A provider is a built-in one (`openai`, `anthropic`, `claude` for it) or a name from MCP_LLM_PROVIDERS; a provider
alone means its default model; an alias (MCP_LLM_MODEL_ALIASES) stands for one model, or for several asked in
failover order.
"""

from __future__ import annotations

from ..aliases import PROVIDER_NAMES, AliasMismatch, ModelRef, model_for, resolve_alias
from ..providers_config import PROVIDERS_VARIABLE
from ..state import AppState, ProviderSlot

__all__ = ["TargetInvalid", "default_model", "provider_named", "resolve_target"]


class TargetInvalid(ValueError):
    """A target names no provider, model or alias this server has; the message says what it could be."""


def provider_named(name: str, state: AppState) -> str | None:
    """The provider id `name` spells (case-insensitive; `claude` is `anthropic`), or None."""
    key = name.strip().lower()
    provider = PROVIDER_NAMES.get(key, key)
    return provider if provider in state.slots else None


def default_model(slot: ProviderSlot) -> str:
    if slot.default_model is None:
        raise TargetInvalid(
            f"`{slot.id}` has no default model: write `{slot.id}:<model>` (`list_models` lists what it offers), "
            f"or set its `default_model` in {PROVIDERS_VARIABLE}"
        )
    return slot.default_model


def resolve_target(spec: str, state: AppState) -> tuple[ModelRef, ...]:
    """The models `spec` stands for, in the order to ask them; raises `TargetInvalid`."""
    spec = spec.strip()
    name, colon, model = spec.partition(":")
    provider = provider_named(name, state)
    aliases = state.settings.model_aliases
    if colon:
        if provider is None:
            raise TargetInvalid(f"unknown provider `{name.strip()}` (providers: {_providers(state)})")
        model = model.strip()
        if not model:
            raise TargetInvalid(f"empty model name (write `{provider}` for its default model)")
        try:
            return (ModelRef(provider, model_for(aliases, provider, model, model)),)
        except AliasMismatch as exc:
            raise TargetInvalid(str(exc)) from None
    if provider is not None:
        return (ModelRef(provider, default_model(state.slots[provider])),)
    refs = resolve_alias(aliases, spec)
    if refs is None:
        raise TargetInvalid(
            f"unknown provider or model alias `{spec}` (providers: {_providers(state)}; `list_models` shows the "
            "aliases)"
        )
    return refs


def _providers(state: AppState) -> str:
    return ", ".join(state.slots)
