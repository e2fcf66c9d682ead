"""Anthropic: the Messages API, always streamed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clients import LazyClient
from ..errors import FailureKind, UpstreamFailure
from ..redact import Redactor
from .base import (
    REASONING_BUDGETS,
    Completion,
    LLMRequest,
    ProviderId,
    StallClock,
    StreamSink,
    Usage,
    failure_from_status,
    normalise_stop_reason,
    output_allowance,
    stall_guard,
)
from .history import anthropic_messages

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic, AsyncStream
    from anthropic.types import RawMessageStreamEvent

__all__ = ["AnthropicMessages", "classify_anthropic_error"]

LABEL = "Anthropic"

# The `error.type` of an `event: error` inside a stream (the SDK raises it as a status-200 APIStatusError).
_STREAM_ERROR_KINDS: dict[str, tuple[FailureKind, bool]] = {
    "overloaded_error": ("overloaded", True),
    "rate_limit_error": ("rate_limited", True),
    "api_error": ("server_error", True),
    "timeout_error": ("timeout", True),
    "invalid_request_error": ("bad_request", False),
    "authentication_error": ("authentication", False),
    "permission_error": ("permission", False),
    "not_found_error": ("not_found", False),
}


def classify_anthropic_error(exc: BaseException, label: str = LABEL) -> UpstreamFailure | None:
    """Map an `anthropic` (or raw `httpx2` transport) exception to an `UpstreamFailure`."""
    import anthropic
    import httpx2

    if isinstance(exc, anthropic.APIStatusError):
        detail = exc.api_message or exc.message
        if exc.status_code == 200:
            kind, retryable = _STREAM_ERROR_KINDS.get(exc.type or "", ("stream_error", True))
            return UpstreamFailure(label, kind, detail=detail, request_id=exc.request_id, retryable=retryable)
        return failure_from_status(
            label, exc.status_code, detail=detail, headers=exc.response.headers, request_id=exc.request_id
        )
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return UpstreamFailure(label, "timeout", detail="the HTTP request timed out", retryable=True)
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        cause = exc.__cause__ if isinstance(exc, anthropic.APIConnectionError) else exc
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return UpstreamFailure(label, "connection", detail=detail, retryable=True)
    if isinstance(exc, anthropic.APIError):
        return UpstreamFailure(label, "stream_error", detail=exc.message, retryable=True)
    return None


def _messages_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema in the dialect the Messages API takes (the SDK's `transform_schema`: objects closed, keywords it
    does not support moved into descriptions); as given when the SDK cannot transform it (type lists, untyped parts).
    """
    import anthropic

    try:
        return anthropic.transform_schema(dict(schema))
    except (ValueError, TypeError, KeyError, AssertionError):
        return dict(schema)


class AnthropicMessages:
    """`POST /v1/messages` with `stream: true`."""

    def __init__(
        self,
        client: LazyClient[AsyncAnthropic],
        label: str = LABEL,
        *,
        redactor: Redactor | None = None,
        provider_id: ProviderId = "anthropic",
    ) -> None:
        self.id = provider_id
        self._client = client
        self.label = label
        self._redactor = redactor or Redactor()  # upstream error texts may echo a key

    async def stream(self, request: LLMRequest, sink: StreamSink, *, stall_s: float) -> Completion:
        import anthropic
        import httpx2

        client = await self._client.get()
        try:
            return await self._stream(client, request, sink, stall_s)
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            failure = classify_anthropic_error(exc, self.label)
            if failure is None:
                raise
            raise failure.redacted(self._redactor) from exc

    async def list_models(self) -> list[str]:
        """`GET /v1/models`, every page (newest models first)."""
        import anthropic
        import httpx2

        client = await self._client.get()
        try:
            return [model.id async for model in client.models.list(limit=1000)]
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            failure = classify_anthropic_error(exc, self.label)
            if failure is None:
                raise
            raise failure.redacted(self._redactor) from exc

    async def _stream(
        self, client: AsyncAnthropic, request: LLMRequest, sink: StreamSink, stall_s: float
    ) -> Completion:
        params: dict[str, Any] = {}
        if request.system:
            params["system"] = request.system
        if request.output_format is not None and request.output_format.schema is not None:
            output_format = {"type": "json_schema", "schema": _messages_schema(request.output_format.schema)}
            params["output_config"] = {"format": output_format}
        if request.reasoning_effort is not None:
            # max_tokens covers thinking and answer: the budget is added on top (output_allowance), so it stays
            # below max_tokens and the answer keeps its own allowance. `display`: newer models omit it by default.
            budget = REASONING_BUDGETS[request.reasoning_effort]
            params["thinking"] = {"type": "enabled", "budget_tokens": budget, "display": "summarized"}
        with stall_guard(stall_s, self.label) as clock:
            stream = await client.messages.create(
                model=request.model,
                max_tokens=output_allowance(request),
                messages=anthropic_messages(request),
                stream=True,
                **params,
            )
            request_id = stream.response.headers.get("request-id")
            completion = await self._consume(stream, request, request_id, sink, clock)
        return completion

    async def _consume(
        self,
        stream: AsyncStream[RawMessageStreamEvent],
        request: LLMRequest,
        request_id: str | None,
        sink: StreamSink,
        clock: StallClock,
    ) -> Completion:
        parts: list[str] = []
        completion = Completion(text="", model=request.model, stop_reason=None, request_id=request_id)
        usage = Usage()
        thinking_blocks = 0
        async with stream:
            async for event in stream:
                clock.touch()
                if event.type == "content_block_delta":
                    if event.delta.type == "text_delta":
                        parts.append(event.delta.text)
                        await sink.text(event.delta.text)
                    elif event.delta.type == "thinking_delta" and event.delta.thinking:
                        await sink.reasoning(event.delta.thinking)
                elif event.type == "content_block_start" and event.content_block.type == "thinking":
                    thinking_blocks += 1
                    if thinking_blocks > 1:  # interleaved thinking: a blank line between blocks
                        await sink.reasoning("\n\n")
                elif event.type == "message_start":
                    completion.model = event.message.model or request.model
                    usage.input_tokens = event.message.usage.input_tokens
                    usage.output_tokens = event.message.usage.output_tokens
                    usage.cached_input_tokens = event.message.usage.cache_read_input_tokens
                elif event.type == "message_delta":
                    completion.stop_reason = normalise_stop_reason(event.delta.stop_reason)
                    usage.output_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        usage.input_tokens = event.usage.input_tokens
                    if event.usage.output_tokens_details is not None:  # thinking tokens, when the API counts them
                        usage.reasoning_tokens = event.usage.output_tokens_details.thinking_tokens
        completion.usage = usage
        completion.text = "".join(parts)
        return completion
