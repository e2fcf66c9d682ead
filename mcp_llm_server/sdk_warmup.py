"""Warming the provider SDKs before the first call, off the event loop.

A provider SDK pays for its first streamed answer: its pydantic models of the stream's events are built on first use
(the first `responses.create(stream=True)` took 148 ms, the second 6 ms). The warm-up thread makes one such request
per configured API through a throwaway client whose transport answers in memory with the stand-in's wire format,
so the shared clients, the network and the ledger are untouched and the first real call finds the models built.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import httpx2

__all__ = ["WarmApi", "warm_sdks"]

logger = logging.getLogger(__name__)

WarmApi = Literal["responses", "chat", "messages"]

_BASE_URL = "http://warm-up.invalid"  # never resolved: the transport answers in memory


def warm_sdks(apis: list[WarmApi]) -> None:
    """One in-memory streamed answer per API (in its own event loop: call it from a thread). Never raises."""
    try:
        asyncio.run(_warm(apis))
    except Exception as exc:  # an SDK that changed shape: the first real call pays, nothing breaks
        logger.debug("warming the SDKs failed: %s", exc)


async def _warm(apis: list[WarmApi]) -> None:
    import httpx2  # here, not at import: the server's start-up does not pay for it

    for api in apis:
        body = _stream_body(api)
        transport = httpx2.MockTransport(
            lambda _request, body=body: httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, content=body
            )
        )
        async with httpx2.AsyncClient(transport=transport) as http:
            await _stream(api, http)


def _stream_body(api: WarmApi) -> bytes:
    """A short streamed answer, with reasoning, in the API's wire format (the stand-in's)."""
    from ._standin._wire import Completion, chat_stream, messages_stream, responses_stream

    answer = Completion(
        serial=1,
        model="warm-up",
        chunks=["Warm", "ed."],
        reasoning=["thinking"],
        max_tokens_hit=False,
        input_tokens=3,
        output_tokens=2,
    )
    if api == "responses":
        events = responses_stream(answer)
    elif api == "messages":
        events = messages_stream(answer)
    else:
        events = chat_stream(answer, include_usage=True)
    return b"".join(event.frame for event in events)


async def _stream(api: WarmApi, http: httpx2.AsyncClient) -> None:
    stream: Any
    if api == "messages":
        from anthropic import AsyncAnthropic

        anthropic = AsyncAnthropic(api_key="warm-up", base_url=_BASE_URL, http_client=http, max_retries=0)
        stream = await anthropic.messages.create(
            model="warm-up", max_tokens=8, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    else:
        from openai import AsyncOpenAI

        openai = AsyncOpenAI(api_key="warm-up", base_url=_BASE_URL + "/v1", http_client=http, max_retries=0)
        if api == "responses":
            stream = await openai.responses.create(model="warm-up", input="hi", stream=True)
        else:
            stream = await openai.chat.completions.create(
                model="warm-up", messages=[{"role": "user", "content": "hi"}], stream=True
            )
    async with stream:
        async for _ in stream:
            pass
