"""What every provider adapter takes and gives back, independent of any SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import anyio

from ..errors import FailureKind, UpstreamFailure
from ..resilience import parse_retry_after, retry_status

__all__ = [
    "Completion",
    "LLMRequest",
    "Provider",
    "ProviderId",
    "StreamSink",
    "Usage",
    "failure_from_status",
    "next_event",
    "normalise_stop_reason",
    "with_stall_limit",
]

ProviderId = Literal["openai", "anthropic"]
E = TypeVar("E")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LLMRequest:
    prompt: str
    model: str
    max_tokens: int
    system: str | None = None
    temperature: float | None = None


@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(slots=True)
class Completion:
    text: str
    model: str
    stop_reason: str | None
    usage: Usage = field(default_factory=Usage)
    request_id: str | None = None


class StreamSink(Protocol):
    """Receives answer text as it streams in."""

    async def text(self, delta: str) -> None: ...


class Provider(Protocol):
    """One upstream API; `stream` makes a single attempt (retries belong to the caller)."""

    id: ProviderId
    label: str

    async def stream(self, request: LLMRequest, sink: StreamSink, *, stall_s: float) -> Completion: ...


_STOP_REASONS = {
    "end_turn": "end",
    "stop": "end",
    "completed": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "length": "max_tokens",
    "max_output_tokens": "max_tokens",
    "content_filter": "content_filter",
    "refusal": "refusal",
}


def normalise_stop_reason(raw: str | None) -> str | None:
    """One vocabulary for every API: end, max_tokens, stop_sequence, content_filter, refusal (or the raw value)."""
    if raw is None:
        return None
    return _STOP_REASONS.get(raw, raw)


_STATUS_KINDS: dict[int, FailureKind] = {
    400: "bad_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limited",
    503: "overloaded",
    529: "overloaded",
}


def failure_from_status(
    label: str,
    status: int,
    *,
    detail: str,
    headers: Mapping[str, str] | None,
    request_id: str | None,
) -> UpstreamFailure:
    kind = _STATUS_KINDS.get(status) or ("server_error" if status >= 500 else "bad_request")
    return UpstreamFailure(
        provider=label,
        kind=kind,
        detail=_shorten(detail),
        status=status,
        request_id=request_id,
        retryable=retry_status(status, headers),
        retry_after_s=parse_retry_after(headers),
    )


def _shorten(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def with_stall_limit(awaitable: Awaitable[T], stall_s: float, label: str, waiting_for: str) -> T:
    """Await one step of an upstream exchange, failing as `stalled` when nothing arrives in time."""
    try:
        with anyio.fail_after(stall_s):
            return await awaitable
    except TimeoutError:
        raise UpstreamFailure(
            provider=label,
            kind="stalled",
            detail=f"no {waiting_for} for {stall_s:g} s (the stall limit)",
            retryable=True,
        ) from None


async def next_event(events: AsyncIterator[E], stall_s: float, label: str) -> E | None:
    """The next streamed event, or None at the end of the stream."""
    try:
        return await with_stall_limit(events.__anext__(), stall_s, label, "data")
    except StopAsyncIteration:
        return None
