"""One shared SDK client per provider, built on first use and closed at shutdown.

The provider SDKs take seconds to import, so nothing imports them before a host has listed the tools:
the first call (or the background warm-up) imports the SDK in a worker thread and builds the client once.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import anyio
import anyio.to_thread

__all__ = ["LazyClient"]

logger = logging.getLogger(__name__)


class _Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=_Closable)


class LazyClient(Generic[C]):
    """Builds its client once, on the first `get()`, after importing `module` off the event loop."""

    def __init__(self, module: str, factory: Callable[[], C]) -> None:
        self._module = module
        self._factory = factory
        self._client: C | None = None
        self._lock = anyio.Lock()

    @property
    def built(self) -> bool:
        return self._client is not None

    async def get(self) -> C:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                await anyio.to_thread.run_sync(importlib.import_module, self._module)
                self._client = self._factory()
                logger.debug("built the shared %s client", self._module)
            return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.close()
