"""The models each provider's models endpoint offers, cached for `MCP_LLM_MODELS_TTL_S`.

One entry per provider. A listing is fetched on the first `list_models` call, again once the entry is older
than the TTL, or at once with `refresh`. Concurrent calls share one fetch (a lock per provider). A failed
listing is not cached: it is reported for that provider alone, and the next call tries again. A listing is an
upstream request like any other, so it holds one of the provider's concurrency slots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from .errors import ProviderNotConfigured, UpstreamFailure
from .providers.base import ProviderId

if TYPE_CHECKING:
    from .state import ProviderSlot

__all__ = ["ModelCache", "ModelListing"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelListing:
    """What one provider's models endpoint said: `models`, or `error` (then `models` is None)."""

    models: list[str] | None
    error: str | None
    fetched_at: float | None  # Unix time of the fetch the models come from
    from_cache: bool


@dataclass(frozen=True, slots=True)
class _Entry:
    models: list[str]
    fetched_at: float  # Unix time
    fetched_mono: float  # monotonic, for the TTL


class ModelCache:
    def __init__(self, ttl_s: float, timeout_s: float) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._entries: dict[ProviderId, _Entry] = {}
        self._locks: dict[ProviderId, anyio.Lock] = {}

    def _fresh(self, provider: ProviderId) -> _Entry | None:
        entry = self._entries.get(provider)
        if entry is not None and time.monotonic() - entry.fetched_mono < self.ttl_s:
            return entry
        return None

    async def listing(self, slot: ProviderSlot, *, refresh: bool = False) -> ModelListing:
        """The provider's models: from the cache when fresh (and not `refresh`), else from its endpoint."""
        try:
            adapter = slot.require()
        except ProviderNotConfigured as exc:
            return ModelListing(None, str(exc), None, from_cache=False)
        if not refresh and (entry := self._fresh(slot.id)) is not None:
            return ModelListing(entry.models, None, entry.fetched_at, from_cache=True)
        lock = self._locks.setdefault(slot.id, anyio.Lock())
        started = time.monotonic()
        async with lock:
            entry = self._entries.get(slot.id)
            if entry is not None and entry.fetched_mono >= started:  # fetched by a call we waited for
                return ModelListing(entry.models, None, entry.fetched_at, from_cache=True)
            try:
                with anyio.fail_after(self.timeout_s):
                    async with slot.limiter.slot():
                        models = await adapter.list_models()
            except UpstreamFailure as failure:
                logger.warning("listing %s models failed: %s", slot.label, failure.describe_briefly())
                return ModelListing(None, failure.describe(), None, from_cache=False)
            except TimeoutError:
                message = f"{slot.label}: listing the models timed out after {self.timeout_s:g} s. Call again later."
                return ModelListing(None, message, None, from_cache=False)
            except Exception as exc:  # one provider's listing must not fail the others
                logger.exception("listing %s models failed unexpectedly", slot.label)
                message = f"{slot.label}: listing the models failed ({type(exc).__name__}: {exc})."
                return ModelListing(None, message, None, from_cache=False)
            entry = _Entry(models, time.time(), time.monotonic())
            self._entries[slot.id] = entry
            return ModelListing(entry.models, None, entry.fetched_at, from_cache=False)
