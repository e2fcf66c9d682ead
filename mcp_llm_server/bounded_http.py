"""The HTTP client under each provider SDK, with a cap on the bytes one response may bring.

A runaway or hostile upstream can send one endless SSE line: the SDK would hold all of it in memory before the
answer cap in the call pipeline ever sees a delta. This transport ends such a response at the byte cap instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2

from .errors import UpstreamFailure

__all__ = ["bounded_client"]


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, label: str) -> None:
        self._inner = inner
        self._limit = limit
        self._label = label

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for part in self._inner:
            received += len(part)
            if received > self._limit:
                raise UpstreamFailure(
                    self._label,
                    "too_long",
                    detail=f"the response passed {self._limit:,} bytes (MCP_LLM_MAX_RESPONSE_BYTES), so it was cut",
                    hint="The provider sent far more than asked for; call again, or with a smaller max_tokens.",
                )
            yield part

    async def aclose(self) -> None:
        await self._inner.aclose()


class _CappedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, inner: httpx2.AsyncBaseTransport, limit: int, label: str) -> None:
        self._inner = inner
        self._limit = limit
        self._label = label

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _CappedStream(response.stream, self._limit, self._label)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def bounded_client(*, max_response_bytes: int, label: str, timeout: Any) -> httpx2.AsyncClient:
    """An HTTP client with the SDKs' own defaults (connection limits, redirects) and the response byte cap."""
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    transport = _CappedTransport(httpx2.AsyncHTTPTransport(limits=limits), max_response_bytes, label)
    return httpx2.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
