"""What this server can reach: the `list_models` tool and the `llm://models` resource.

`list_models` gives, per provider, whether it can be called (and which variable is missing if not), its default
model, base URL host, API style and concurrency limit, and the models its models endpoint offers (cached for
`MCP_LLM_MODELS_TTL_S`, fetched again with `refresh`); plus the model aliases, time limits and retry policy. One
provider's listing failing is reported in its entry; the others are listed all the same.

The resource gives the same without the live model lists: it makes no upstream request, and a static resource
gets no state to share a cache with. The tool exists beside it because many hosts (Claude Desktop among them)
let only the user attach resources; it replaces the earlier `list_providers` tool, whose data it includes, so a
host pays for one catalogue tool definition, not two.

Never a key, and only the host of a base URL (a path or user info may carry secrets).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlsplit

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ..aliases import resolve_alias
from ..model_catalog import ModelListing
from ..pipeline.policy import retry_policy
from ..sdk_adapter import app_state
from ..settings import Settings
from ..state import AppState, ProviderSlot, build_state
from .fanout import MAX_TARGETS

__all__ = [
    "MODELS_URI",
    "ModelCatalog",
    "ProviderCatalog",
    "ProviderInfo",
    "ProviderModels",
    "describe_models",
    "describe_providers",
    "register_catalog",
]

MODELS_URI = "llm://models"

_DEFAULT_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}

Refresh = Annotated[
    bool,
    Field(description="Fetch the model lists from the providers now instead of using the cached ones."),
]


class ProviderInfo(BaseModel):
    id: str = Field(description="Provider id, as written in targets (`openai`, `anthropic`, or a named one).")
    label: str
    tool: str = Field(description="The single-model tool for this provider (`ask` takes every one).")
    configured: bool = Field(description="Whether calls to this provider can be made.")
    key_set: bool = Field(description="Whether an API key is set (the key itself is never shown).")
    missing_variable: str | None = Field(description="The environment variable to set when not configured.")
    default_model: str | None = Field(description="Null: a named provider without one (name the model).")
    base_url_host: str = Field(description="Host (and port) of the base URL; never its path or credentials.")
    api_style: str = Field(description="`responses`, `chat` (OpenAI's APIs) or `messages` (Anthropic's).")
    concurrency_limit: int = Field(
        description="Upstream requests that may be open to this provider at once now, across all calls: it grows "
        "on success and shrinks when the provider answers 429/529, up to `concurrency_ceiling`."
    )
    concurrency_ceiling: int = Field(description="The most `concurrency_limit` grows to.")
    concurrency_variable: str = Field(description="The environment variable that sets `concurrency_ceiling`.")


class ProviderModels(ProviderInfo):
    models: list[str] | None = Field(
        description="Model ids the provider's models endpoint offers (null when it could not be listed)."
    )
    models_error: str | None = Field(description="Why the models could not be listed (null when they were).")
    models_fetched_at: str | None = Field(description="When the list was fetched (UTC, ISO 8601).")
    models_from_cache: bool = Field(description="Whether the list came from the cache (see `refresh`).")
    default_model_listed: bool | None = Field(
        description="Whether the default model is among `models` (null when they could not be listed)."
    )


class AliasInfo(BaseModel):
    name: str = Field(description="Give this as `model` (or as an `ask_many` target) to ask `provider`'s `model`.")
    provider: str
    model: str
    listed: bool | None = Field(
        default=None, description="Whether `model` is among its provider's listed models (null: not known)."
    )
    then: list[str] | None = Field(
        default=None, description="A failover alias: the targets asked in order when `provider:model` cannot answer."
    )


class TimeLimits(BaseModel):
    call_timeout_s: float = Field(description="Default limit for a whole call (retries included).")
    max_call_timeout_s: float = Field(description="Largest `timeout_s` a call may ask for.")
    connect_timeout_s: float
    stall_timeout_s: float = Field(description="Longest silence tolerated from a stream.")
    detach_after_s: float = Field(
        description="A model call still running after this long returns `status: running` and an `answer_id` "
        "(get_answer fetches the rest); 0: never."
    )


class RetryPolicyInfo(BaseModel):
    max_attempts: int = Field(description="Attempts per call, the first included.")
    backoff_initial_s: float
    backoff_max_s: float
    retry_after_max_s: float = Field(description="Longest upstream `retry-after` the server waits for.")


P = TypeVar("P", bound=ProviderInfo)


class _Catalog(BaseModel, Generic[P]):
    providers: list[P]
    aliases: list[AliasInfo] = Field(description="Model aliases (MCP_LLM_MODEL_ALIASES).")
    max_fanout_targets: int = Field(description="Most targets one `ask_many` call takes.")
    default_max_tokens: int
    max_prompt_chars: int
    max_output_chars: int = Field(description="Longest answer text returned whole; longer ones are truncated.")
    timeouts: TimeLimits
    retries: RetryPolicyInfo


class ProviderCatalog(_Catalog[ProviderInfo]):
    """The configuration: providers, aliases, limits."""


class ModelCatalog(_Catalog[ProviderModels]):
    """The configuration, with the models each provider offers."""


def _host(base_url: str | None, provider: str) -> str:
    if base_url is None:
        return _DEFAULT_HOSTS.get(provider, "?")
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


def _provider_info(slot: ProviderSlot) -> ProviderInfo:
    configured = slot.adapter is not None
    return ProviderInfo(
        id=slot.id,
        label=slot.label,
        tool=slot.tool,
        configured=configured,
        key_set=slot.key_set,
        missing_variable=None if configured else slot.missing_variable,
        default_model=slot.default_model,
        base_url_host=_host(slot.base_url, slot.id),
        api_style=slot.api,
        concurrency_limit=slot.limiter.limit,
        concurrency_ceiling=slot.limiter.ceiling,
        concurrency_variable=slot.concurrency_variable,
    )


def _aliases(settings: Settings, listings: dict[str, ModelListing]) -> list[AliasInfo]:
    infos = []
    for name in settings.model_aliases:
        refs = resolve_alias(settings.model_aliases, name)
        assert refs
        first = refs[0]
        listing = listings.get(first.provider)
        listed = None if listing is None or listing.models is None else first.model in listing.models
        failover = [str(ref) for ref in refs[1:]] or None
        infos.append(AliasInfo(name=name, provider=first.provider, model=first.model, listed=listed, then=failover))
    return infos


def _limits(settings: Settings, listings: dict[str, ModelListing]) -> dict[str, Any]:
    """Every catalogue field but `providers`."""
    s = settings
    return dict(
        aliases=_aliases(s, listings),
        max_fanout_targets=MAX_TARGETS,
        default_max_tokens=s.max_tokens,
        max_prompt_chars=s.max_prompt_chars,
        max_output_chars=s.max_output_chars,
        timeouts=TimeLimits(
            call_timeout_s=s.call_timeout_s,
            max_call_timeout_s=s.max_call_timeout_s,
            connect_timeout_s=s.connect_timeout_s,
            stall_timeout_s=s.stall_timeout_s,
            detach_after_s=s.detach_after_s,
        ),
        retries=RetryPolicyInfo(**asdict(retry_policy(s))),
    )


def describe_providers(state: AppState) -> ProviderCatalog:
    """The configuration alone: no upstream request."""
    providers = [_provider_info(slot) for slot in state.slots.values()]
    return ProviderCatalog(providers=providers, **_limits(state.settings, {}))


def _timestamp(unix: float | None) -> str | None:
    return None if unix is None else datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


async def describe_models(state: AppState, *, refresh: bool) -> ModelCatalog:
    """The configuration and every provider's models, listed at once (from the cache unless stale or `refresh`)."""
    listings: dict[str, ModelListing] = {}

    async def fetch(slot: ProviderSlot) -> None:
        listings[slot.id] = await state.models.listing(slot, refresh=refresh)

    async with anyio.create_task_group() as tg:
        for slot in state.slots.values():
            tg.start_soon(fetch, slot)
    providers = []
    for slot in state.slots.values():
        listing = listings[slot.id]
        info = _provider_info(slot)
        providers.append(
            ProviderModels(
                **dict(info),
                models=listing.models,
                models_error=None if listing.error is None else state.redact(listing.error),
                models_fetched_at=_timestamp(listing.fetched_at),
                models_from_cache=listing.from_cache,
                default_model_listed=None if listing.models is None else info.default_model in listing.models,
            )
        )
    return ModelCatalog(providers=providers, **_limits(state.settings, listings))


def register_catalog(server: MCPServer, settings: Settings) -> None:
    @server.resource(
        MODELS_URI,
        name="models",
        title="Configured providers, default models and limits",
        description="JSON: each provider (configured or not, which variable is missing, default model, base URL "
        "host, API style, concurrency limit), the model aliases, the time limits and the retry policy. Never a "
        "key; no upstream request (the `list_models` tool adds the models each provider offers).",
        mime_type="application/json",
    )
    async def models_resource() -> str:
        # A static resource gets no Context; the same settings give the same catalog as the running state.
        return json.dumps(describe_providers(build_state(settings)).model_dump(mode="json"), indent=2)

    @server.tool(
        name="list_models",
        title="List the available models",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=True),
        description="List the models you can ask: for each provider (OpenAI, Anthropic, and any the operator "
        "named), the model ids its models endpoint offers, its default model, and whether it is configured (if "
        "not, which environment variable is missing); plus the model aliases this server defines (short names "
        "such as `fast`, some naming several models tried in order), the time limits and the retry policy. Give "
        "`provider:<id>` or an alias as `ask`'s `model` or an `ask_many` target (an id alone as ask_openai's or "
        "ask_claude's `model`). Lists are cached; `refresh` fetches them again. A provider whose list cannot be "
        "fetched says why in `models_error`; the others are still listed.",
    )
    async def list_models(ctx: Context[AppState], refresh: Refresh = False) -> ModelCatalog:
        return await describe_models(app_state(ctx), refresh=refresh)
