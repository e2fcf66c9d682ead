"""OpenAI: the Responses API (default) and Chat Completions (for OpenAI-compatible servers), always streamed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..clients import LazyClient
from ..errors import UpstreamFailure
from ..redact import Redactor
from .base import (
    Completion,
    LLMRequest,
    OutputFormat,
    ProviderId,
    StallClock,
    StreamSink,
    Usage,
    failure_from_status,
    normalise_stop_reason,
    output_allowance,
    stall_guard,
)
from .history import chat_messages, responses_input

if TYPE_CHECKING:
    from openai import AsyncOpenAI, AsyncStream
    from openai.types.chat import ChatCompletionChunk
    from openai.types.responses import ResponseStreamEvent

__all__ = ["OpenAIChat", "OpenAIResponses", "classify_openai_error"]

LABEL = "OpenAI"


def classify_openai_error(exc: BaseException, label: str = LABEL) -> UpstreamFailure | None:
    """Map an `openai` exception to an `UpstreamFailure`; None for anything that is not the SDK's."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return failure_from_status(
            label,
            exc.status_code,
            detail=_body_message(exc.body) or exc.message,
            headers=exc.response.headers,
            request_id=exc.request_id,
        )
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamFailure(label, "timeout", detail="the HTTP request timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else exc.message
        return UpstreamFailure(label, "connection", detail=detail, retryable=True)
    if isinstance(exc, openai.APIError):  # an error object inside a Chat Completions stream
        return UpstreamFailure(label, "stream_error", detail=_body_message(exc.body) or exc.message, retryable=True)
    return None


def _body_message(body: object) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return ""


class _OpenAIBase:
    def __init__(
        self,
        client: LazyClient[AsyncOpenAI],
        label: str = LABEL,
        *,
        redactor: Redactor | None = None,
        provider_id: ProviderId = "openai",
    ) -> None:
        self.id = provider_id
        self._client = client
        self.label = label
        self._redactor = redactor or Redactor()  # upstream error texts may echo a key

    async def stream(self, request: LLMRequest, sink: StreamSink, *, stall_s: float) -> Completion:
        import openai

        client = await self._client.get()
        try:
            return await self._stream(client, request, sink, stall_s)
        except openai.OpenAIError as exc:
            failure = classify_openai_error(exc, self.label)
            if failure is None:
                raise
            raise failure.redacted(self._redactor) from exc

    async def _stream(self, client: AsyncOpenAI, request: LLMRequest, sink: StreamSink, stall_s: float) -> Completion:
        raise NotImplementedError

    async def list_models(self) -> list[str]:
        """`GET /v1/models` (one page: the endpoint does not paginate)."""
        import openai

        client = await self._client.get()
        try:
            return [model.id async for model in client.models.list()]
        except openai.OpenAIError as exc:
            failure = classify_openai_error(exc, self.label)
            if failure is None:
                raise
            raise failure.redacted(self._redactor) from exc


class OpenAIResponses(_OpenAIBase):
    """`POST /v1/responses` with `stream: true`."""

    async def _stream(self, client: AsyncOpenAI, request: LLMRequest, sink: StreamSink, stall_s: float) -> Completion:
        params: dict[str, Any] = {"max_output_tokens": output_allowance(request)}
        if request.system:
            params["instructions"] = request.system
        if request.reasoning_effort is not None:
            params["reasoning"] = {"effort": request.reasoning_effort, "summary": "auto"}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.output_format is not None:
            params["text"] = {"format": _responses_format(request.output_format)}
        with stall_guard(stall_s, self.label) as clock:
            stream = await client.responses.create(
                model=request.model, input=responses_input(request), stream=True, **params
            )
            request_id = stream.response.headers.get("x-request-id")
            completion = await self._consume(stream, request, request_id, sink, clock)
        return completion

    async def _consume(
        self,
        stream: AsyncStream[ResponseStreamEvent],
        request: LLMRequest,
        request_id: str | None,
        sink: StreamSink,
        clock: StallClock,
    ) -> Completion:
        parts: list[str] = []
        completion = Completion(text="", model=request.model, stop_reason=None, request_id=request_id)
        reasoning = _ReasoningJoiner(sink)
        async with stream:
            async for event in stream:
                clock.touch()
                if event.type == "response.output_text.delta":
                    parts.append(event.delta)
                    await sink.text(event.delta)
                elif event.type == "response.reasoning_summary_text.delta":
                    await reasoning.add((event.item_id, event.summary_index), event.delta)
                elif event.type == "response.reasoning_text.delta":  # raw reasoning (open-weight models)
                    await reasoning.add((event.item_id, event.content_index), event.delta)
                elif event.type in ("response.completed", "response.incomplete"):
                    response = event.response
                    completion.model = response.model or request.model
                    details = response.incomplete_details
                    raw_reason = details.reason if details is not None and details.reason else response.status
                    completion.stop_reason = normalise_stop_reason(raw_reason)
                    if response.usage is not None:
                        details = getattr(response.usage, "output_tokens_details", None)
                        completion.usage = Usage(
                            response.usage.input_tokens,
                            response.usage.output_tokens,
                            reasoning_tokens=getattr(details, "reasoning_tokens", None),
                        )
                        cached = response.usage.input_tokens_details
                        completion.usage.cached_input_tokens = cached.cached_tokens if cached is not None else None
                elif event.type == "response.failed":
                    error = event.response.error
                    raise UpstreamFailure(
                        self.label,
                        "server_error",
                        detail=error.message if error is not None else "the response failed",
                        request_id=request_id,
                        retryable=True,
                    )
                elif event.type == "error":
                    raise UpstreamFailure(
                        self.label,
                        _kind_of_stream_error(event.code),
                        detail=event.message,
                        request_id=request_id,
                        retryable=True,
                    )
        completion.text = "".join(parts)
        return completion


class _ReasoningJoiner:
    """Forwards reasoning deltas, with a blank line where a new summary part (or reasoning item) begins."""

    def __init__(self, sink: StreamSink) -> None:
        self._sink = sink
        self._part: object = None

    async def add(self, part: object, delta: str) -> None:
        if not delta:
            return
        if self._part is not None and part != self._part:
            delta = "\n\n" + delta
        self._part = part
        await self._sink.reasoning(delta)


def _kind_of_stream_error(code: str | None) -> Any:
    if code and "rate" in code:
        return "rate_limited"
    if code and "overload" in code:
        return "overloaded"
    return "stream_error"


def _responses_format(output: OutputFormat) -> dict[str, Any]:
    """`text.format` of the Responses API: a JSON Schema (strict or not), or JSON mode."""
    if output.schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "name": output.name, "schema": dict(output.schema), "strict": output.strict}


def _chat_response_format(output: OutputFormat) -> dict[str, Any]:
    """`response_format` of Chat Completions (vLLM, Ollama, llama.cpp and LM Studio understand it too)."""
    if output.schema is None:
        return {"type": "json_object"}
    schema = {"name": output.name, "schema": dict(output.schema), "strict": output.strict}
    return {"type": "json_schema", "json_schema": schema}


class OpenAIChat(_OpenAIBase):
    """`POST /v1/chat/completions` with `stream: true`: the endpoint every OpenAI-compatible server speaks."""

    async def _stream(self, client: AsyncOpenAI, request: LLMRequest, sink: StreamSink, stall_s: float) -> Completion:
        messages: list[Any] = chat_messages(request)
        params: dict[str, Any] = {"max_tokens": output_allowance(request)}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.reasoning_effort is not None:
            params["reasoning_effort"] = request.reasoning_effort
        if request.output_format is not None:
            params["response_format"] = _chat_response_format(request.output_format)
        with stall_guard(stall_s, self.label) as clock:
            stream = await client.chat.completions.create(
                model=request.model,
                messages=messages,
                stream=True,
                stream_options={"include_usage": True},
                **params,
            )
            request_id = stream.response.headers.get("x-request-id")
            completion = await self._consume(stream, request, request_id, sink, clock)
        return completion

    async def _consume(
        self,
        stream: AsyncStream[ChatCompletionChunk],
        request: LLMRequest,
        request_id: str | None,
        sink: StreamSink,
        clock: StallClock,
    ) -> Completion:
        parts: list[str] = []
        completion = Completion(text="", model=request.model, stop_reason=None, request_id=request_id)
        async with stream:
            async for chunk in stream:
                clock.touch()
                if chunk.model:
                    completion.model = chunk.model
                if chunk.choices:
                    choice = chunk.choices[0]
                    if choice.delta is not None:
                        # Compatible servers (vLLM, Ollama, DeepSeek…) stream reasoning in a field of their own.
                        extra = choice.delta.model_extra or {}
                        thinking = extra.get("reasoning_content") or extra.get("reasoning")
                        if isinstance(thinking, str) and thinking:
                            await sink.reasoning(thinking)
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                            await sink.text(choice.delta.content)
                    if choice.finish_reason:
                        completion.stop_reason = normalise_stop_reason(choice.finish_reason)
                if chunk.usage is not None:
                    details = chunk.usage.completion_tokens_details
                    completion.usage = Usage(
                        chunk.usage.prompt_tokens,
                        chunk.usage.completion_tokens,
                        reasoning_tokens=details.reasoning_tokens if details is not None else None,
                    )
                    prompt_details = chunk.usage.prompt_tokens_details
                    if prompt_details is not None:
                        completion.usage.cached_input_tokens = prompt_details.cached_tokens
        completion.text = "".join(parts)
        return completion
