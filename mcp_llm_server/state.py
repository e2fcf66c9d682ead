"""What lives for the whole server: settings, one shared client per provider, their concurrency limits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from .adaptive_limit import DEFAULT_INITIAL_CONCURRENCY, AdaptiveLimiter
from .answers import Detacher
from .clients import LazyClient
from .errors import ProviderNotConfigured
from .files import FileLimits
from .model_catalog import ModelCache
from .pricing import Pricing
from .provider_health import ProviderHealth
from .providers.anthropic_api import AnthropicMessages
from .providers.base import Provider, ProviderId
from .providers.openai_api import OpenAIChat, OpenAIResponses
from .providers_config import PROVIDERS_VARIABLE, ApiStyle, ProviderSpec
from .redact import Redactor
from .sdk_warmup import WarmApi, warm_sdks
from .settings import Settings
from .store import AnswerStore, ConversationStore, Database, SpendStore
from .store.db import import_sqlalchemy

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from openai import AsyncOpenAI

__all__ = ["AppState", "ProviderSlot", "app_lifespan", "build_state"]

logger = logging.getLogger(__name__)

# Local servers (Ollama, vLLM...) ignore the key, but the SDKs insist on a non-empty one.
_PLACEHOLDER_KEY = "not-needed"
_WARMUP_DELAY_S = 1.0
DEFAULT_NAMED_CEILING = 64


@dataclass
class ProviderSlot:
    """One provider as the tools see it: its adapter (None when unconfigured), default model and limit."""

    id: ProviderId
    label: str
    adapter: Provider | None
    default_model: str | None  # None: a named provider without one (every call names its model)
    limiter: AdaptiveLimiter
    missing_variable: str
    api: ApiStyle
    base_url: str | None = None  # None: the provider's own
    key_set: bool = False
    concurrency_variable: str = ""
    tool: str = "ask"  # the single-model tool that asks it by default

    def require(self) -> Provider:
        if self.adapter is None:
            raise ProviderNotConfigured(self.label, self.missing_variable)
        return self.adapter


@dataclass
class AppState:
    settings: Settings
    slots: dict[ProviderId, ProviderSlot]
    clients: list[LazyClient[Any]]
    models: ModelCache
    redact: Redactor
    conversations: ConversationStore
    file_limits: FileLimits
    pricing: Pricing
    spend: SpendStore
    detacher: Detacher  # runs the model tools' calls; detached ones are fetched later by id
    health: ProviderHealth = field(default_factory=ProviderHealth)  # providers found unreachable lately

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
        await self.conversations.db.aclose()


def _http_client(settings: Settings, label: str) -> Any:
    import httpx2

    from .bounded_http import bounded_client

    # Our own stall limit and deadline cut calls short; the SDK's timeout is only a backstop.
    timeout = httpx2.Timeout(settings.max_call_timeout_s, connect=settings.connect_timeout_s)
    return bounded_client(max_response_bytes=settings.max_response_bytes, label=label, timeout=timeout)


def _is_openai_host(base_url: str | None) -> bool:
    return base_url is None or (urlsplit(base_url).hostname or "").endswith("openai.com")


def _limiter(settings: Settings, initial: int | None, ceiling: int) -> AdaptiveLimiter:
    # A provider's retry-after holds new requests back at most as long as a call waits for one.
    start = min(DEFAULT_INITIAL_CONCURRENCY, ceiling) if initial is None else initial
    return AdaptiveLimiter(initial=start, ceiling=ceiling, max_hold_s=settings.retry_after_max_s)


def _adapter(slot: ProviderSlot, key: str | None, settings: Settings) -> tuple[Provider, LazyClient[Any]]:
    """The adapter speaking `slot.api` to `slot.base_url`, on a shared client built on first use."""
    redactor = Redactor(settings.secrets())
    if slot.api == "messages":

        def build_anthropic() -> AsyncAnthropic:
            from anthropic import AsyncAnthropic

            http = _http_client(settings, slot.label)
            return AsyncAnthropic(
                api_key=key or _PLACEHOLDER_KEY, base_url=slot.base_url, max_retries=0, http_client=http
            )

        anthropic_client: LazyClient[AsyncAnthropic] = LazyClient("anthropic", build_anthropic)
        return AnthropicMessages(anthropic_client, slot.label, redactor=redactor, provider_id=slot.id), anthropic_client

    def build_openai() -> AsyncOpenAI:
        from openai import AsyncOpenAI

        http = _http_client(settings, slot.label)
        return AsyncOpenAI(api_key=key or _PLACEHOLDER_KEY, base_url=slot.base_url, max_retries=0, http_client=http)

    client: LazyClient[AsyncOpenAI] = LazyClient("openai", build_openai)
    kind = OpenAIChat if slot.api == "chat" else OpenAIResponses
    return kind(client, slot.label, redactor=redactor, provider_id=slot.id), client


def _configured(
    slot: ProviderSlot, key: str | None, usable: bool, settings: Settings
) -> tuple[ProviderSlot, LazyClient[Any] | None]:
    if not usable:
        return slot, None
    slot.adapter, client = _adapter(slot, key, settings)
    return slot, client


def _openai_slot(settings: Settings) -> tuple[ProviderSlot, LazyClient[Any] | None]:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    limiter = _limiter(settings, settings.openai_initial_concurrency, settings.openai_concurrency)
    slot = ProviderSlot(
        "openai",
        "OpenAI",
        None,
        settings.openai_model,
        limiter,
        "OPENAI_API_KEY",
        api=settings.openai_api,
        base_url=settings.openai_base_url,
        key_set=key is not None,
        concurrency_variable="MCP_LLM_OPENAI_CONCURRENCY",
        tool="ask_openai",
    )
    return _configured(slot, key, key is not None or not _is_openai_host(settings.openai_base_url), settings)


def _anthropic_slot(settings: Settings) -> tuple[ProviderSlot, LazyClient[Any] | None]:
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    limiter = _limiter(settings, settings.anthropic_initial_concurrency, settings.anthropic_concurrency)
    slot = ProviderSlot(
        "anthropic",
        "Anthropic",
        None,
        settings.anthropic_model,
        limiter,
        "ANTHROPIC_API_KEY",
        api="messages",
        base_url=settings.anthropic_base_url,
        key_set=key is not None,
        concurrency_variable="MCP_LLM_ANTHROPIC_CONCURRENCY",
        tool="ask_claude",
    )
    return _configured(slot, key, key is not None, settings)


def _named_slot(spec: ProviderSpec, settings: Settings) -> tuple[ProviderSlot, LazyClient[Any] | None]:
    slot = ProviderSlot(
        spec.name,
        spec.name,
        None,
        spec.default_model,
        _limiter(settings, None, spec.concurrency or DEFAULT_NAMED_CEILING),
        spec.api_key_env or "",
        api=spec.api,
        base_url=spec.base_url,
        key_set=spec.api_key is not None,
        concurrency_variable=f'{PROVIDERS_VARIABLE}["{spec.name}"].concurrency',
    )
    return _configured(slot, spec.api_key, spec.configured, settings)


def _slots(settings: Settings) -> tuple[dict[ProviderId, ProviderSlot], list[LazyClient[Any]]]:
    built = [_openai_slot(settings), _anthropic_slot(settings)]
    built += [_named_slot(spec, settings) for spec in settings.providers.values()]
    slots = {slot.id: slot for slot, _ in built}
    return slots, [client for _, client in built if client is not None]


def build_state(settings: Settings, *, clock: Callable[[], float] = time.time) -> AppState:
    slots, clients = _slots(settings)
    conversations = _conversation_store(settings)
    answers = AnswerStore(conversations.db, max_age_s=conversations.max_age_s)  # real time: heartbeats
    return AppState(
        settings=settings,
        slots=slots,
        clients=clients,
        # A listing is one short response: bounded like the wait for a stream's first bytes.
        models=ModelCache(ttl_s=settings.models_ttl_s, timeout_s=settings.stall_timeout_s),
        redact=Redactor(settings.secrets()),
        conversations=conversations,
        file_limits=_file_limits(settings),
        pricing=Pricing(
            settings.model_prices,
            settings.unknown_model_price,
            cache_apart={slot.id for slot in slots.values() if slot.api == "messages"},
        ),
        spend=SpendStore(conversations.db, clock=clock),
        detacher=Detacher(answers, detach_after_s=settings.detach_after_s, max_detached=settings.max_detached),
    )


def _conversation_store(settings: Settings) -> ConversationStore:
    """Nothing is opened here: the database is opened on first use (SQLAlchemy is imported in the background)."""
    days = settings.conversation_max_age_days
    return ConversationStore(
        Database(settings.database_url),
        max_age_s=days * 86_400.0 if days > 0 else None,
        max_chars=settings.conversations_max_chars or None,
    )


def _file_limits(settings: Settings) -> FileLimits:
    """No implicit root (not the working directory): without MCP_LLM_FILE_ROOTS only the client's roots are open."""
    return FileLimits(
        roots=tuple(Path(root).expanduser().absolute() for root in settings.file_roots),
        max_file_bytes=settings.max_file_bytes,
        max_total_bytes=settings.max_files_total_bytes,
        max_image_bytes=settings.max_image_bytes,
        max_document_bytes=settings.max_document_bytes,
        max_media_total_bytes=settings.max_media_total_bytes,
        allow_secrets=settings.allow_secret_files,
        own_secrets=tuple(settings.secrets()),
    )


def _warm_up(apis: list[WarmApi], models: list[tuple[str, str]]) -> None:
    """Before the first call: the SDKs' stream models (`sdk_warmup`), the price table, and SQLAlchemy (a detaching
    request waits for its answer's row, and importing it then, ~0.25 s, came on top of the detach limit)."""
    warm_sdks(apis)
    for provider, model in models:
        Pricing({}).rates(provider, model)
    import_sqlalchemy()


async def _open_store_soon(db: Database) -> None:
    """Open the database shortly after start, not in the first call's time: a detaching request waits for its
    answer's row, and a cold open (the driver's import, the schema check) took 0.1 s idle, over 1 s on a busy
    machine, on top of the detach limit. A failure here is the first call's to report."""
    await anyio.sleep(_WARMUP_DELAY_S)
    try:
        await db.engine()
    except Exception as exc:  # the first call that needs the database reports it
        logger.debug("the database could not be opened ahead of the first call: %s", exc)


@asynccontextmanager
async def app_lifespan(settings: Settings, *, clock: Callable[[], float] = time.time) -> AsyncIterator[AppState]:
    """Shared clients for the server's life; closed (their HTTP pools included) at shutdown."""
    state = build_state(settings)
    state.spend.clock = clock
    configured = [slot for slot in state.slots.values() if slot.adapter is not None]
    apis: list[WarmApi] = sorted({slot.api for slot in configured})
    if apis:
        # A daemon thread, not a task: the warm-up must not hold up shutdown, and it starts only after the
        # host has had time to list the tools (start-up speed is measured to that answer).
        models = [(slot.id, slot.default_model) for slot in configured if slot.default_model is not None]
        timer = threading.Timer(_WARMUP_DELAY_S, _warm_up, args=(apis, models))
        timer.daemon = True
        timer.start()
    try:
        # Deferred writes outlast the detached jobs that make them, and end before the database closes.
        async with (
            state.conversations.db.behind.running(),
            state.detacher.running(),
            anyio.create_task_group() as opening,
        ):
            opening.start_soon(_open_store_soon, state.conversations.db)
            try:
                yield state
            finally:
                opening.cancel_scope.cancel()
    finally:
        if apis:
            timer.cancel()
        await state.aclose()
        logger.debug("shared clients closed")
