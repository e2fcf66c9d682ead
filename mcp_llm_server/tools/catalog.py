"""What this server is configured to reach: the `llm://models` resource and the `list_providers` tool.

Both give the same JSON: per provider whether it can be called (and which variable is missing if not), its
default model, base URL host, API style and concurrency limit, plus the time limits and retry policy. Never a
key, and only the host of a base URL (a path or user info may carry secrets).

The tool exists beside the resource because many hosts (Claude Desktop among them) let only the user attach
resources: a model that wants to know its `ask_many` targets can call a tool, not read a resource.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from ..settings import Settings
from ..state import AppState, ProviderSlot, build_state
from .common import app_state
from .fanout import MAX_TARGETS

__all__ = ["MODELS_URI", "ProviderCatalog", "ProviderInfo", "describe_providers", "register_catalog"]

MODELS_URI = "llm://models"

_DEFAULT_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
_TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
_LIMIT_VARIABLES = {"openai": "MCP_LLM_OPENAI_CONCURRENCY", "anthropic": "MCP_LLM_ANTHROPIC_CONCURRENCY"}


class ProviderInfo(BaseModel):
    id: str = Field(description="Provider id, as used in `ask_many` targets (`openai`, `anthropic`).")
    label: str
    tool: str = Field(description="The single-model tool for this provider.")
    configured: bool = Field(description="Whether calls to this provider can be made.")
    key_set: bool = Field(description="Whether an API key is set (the key itself is never shown).")
    missing_variable: str | None = Field(description="The environment variable to set when not configured.")
    default_model: str
    base_url_host: str = Field(description="Host (and port) of the base URL; never its path or credentials.")
    api_style: str = Field(description="`responses` or `chat` (OpenAI), `messages` (Anthropic).")
    concurrency_limit: int = Field(description="Upstream requests open to this provider at once, across all calls.")
    concurrency_variable: str = Field(description="The environment variable that sets `concurrency_limit`.")


class TimeLimits(BaseModel):
    call_timeout_s: float = Field(description="Default limit for a whole call (retries included).")
    max_call_timeout_s: float = Field(description="Largest `timeout_s` a call may ask for.")
    connect_timeout_s: float
    stall_timeout_s: float = Field(description="Longest silence tolerated from a stream.")


class RetryPolicyInfo(BaseModel):
    max_attempts: int = Field(description="Attempts per call, the first included.")
    backoff_initial_s: float
    backoff_max_s: float
    retry_after_max_s: float = Field(description="Longest upstream `retry-after` the server waits for.")


class ProviderCatalog(BaseModel):
    providers: list[ProviderInfo]
    max_fanout_targets: int = Field(description="Most targets one `ask_many` call takes.")
    default_max_tokens: int
    max_prompt_chars: int
    timeouts: TimeLimits
    retries: RetryPolicyInfo


def _host(base_url: str | None, provider: str) -> str:
    if base_url is None:
        return _DEFAULT_HOSTS[provider]
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port is not None else host


def _provider_info(slot: ProviderSlot, settings: Settings) -> ProviderInfo:
    api_style: str
    if slot.id == "openai":
        key, base_url, api_style = settings.openai_api_key, settings.openai_base_url, settings.openai_api
    else:
        key, base_url, api_style = settings.anthropic_api_key, settings.anthropic_base_url, "messages"
    configured = slot.adapter is not None
    return ProviderInfo(
        id=slot.id,
        label=slot.label,
        tool=_TOOLS[slot.id],
        configured=configured,
        key_set=key is not None and key.get_secret_value() != "",
        missing_variable=None if configured else slot.missing_variable,
        default_model=slot.default_model,
        base_url_host=_host(base_url, slot.id),
        api_style=api_style,
        concurrency_limit=int(slot.limiter.total_tokens),
        concurrency_variable=_LIMIT_VARIABLES[slot.id],
    )


def describe_providers(state: AppState) -> ProviderCatalog:
    s = state.settings
    return ProviderCatalog(
        providers=[_provider_info(slot, s) for slot in state.slots.values()],
        max_fanout_targets=MAX_TARGETS,
        default_max_tokens=s.max_tokens,
        max_prompt_chars=s.max_prompt_chars,
        timeouts=TimeLimits(
            call_timeout_s=s.call_timeout_s,
            max_call_timeout_s=s.max_call_timeout_s,
            connect_timeout_s=s.connect_timeout_s,
            stall_timeout_s=s.stall_timeout_s,
        ),
        retries=RetryPolicyInfo(
            max_attempts=s.max_attempts,
            backoff_initial_s=s.backoff_initial_s,
            backoff_max_s=s.backoff_max_s,
            retry_after_max_s=s.retry_after_max_s,
        ),
    )


def register_catalog(server: MCPServer, settings: Settings) -> None:
    @server.resource(
        MODELS_URI,
        name="models",
        title="Configured providers, default models and limits",
        description="JSON: each provider (configured or not, which variable is missing, default model, base URL "
        "host, API style, concurrency limit), the time limits and the retry policy. Never a key.",
        mime_type="application/json",
    )
    async def models_resource() -> str:
        # A static resource gets no Context; the same settings give the same catalog as the running state.
        return json.dumps(describe_providers(build_state(settings)).model_dump(mode="json"), indent=2)

    @server.tool(
        name="list_providers",
        title="List the configured providers",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True),
        description="List the providers this server can ask (OpenAI, Anthropic): whether each is configured "
        "(and which environment variable is missing if not), its default model, base URL host, API style and "
        "concurrency limit, plus the time limits and retry policy. Makes no upstream request. Use it before "
        "`ask_many` to see which targets are available. The same data is the `llm://models` resource.",
    )
    async def list_providers(ctx: Context[AppState]) -> ProviderCatalog:
        return describe_providers(app_state(ctx))
