"""Bodies and SSE events in the OpenAI Responses, Chat Completions and Anthropic Messages formats."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Provider = Literal["openai", "anthropic"]
EventKind = Literal["text", "reasoning", "other"]

_TEXT_KEYS = frozenset({"content", "text", "input", "instructions", "system"})


@dataclass(frozen=True)
class SseEvent:
    """One SSE frame, ready to send; ``kind`` says whether it carries a text or reasoning delta."""

    frame: bytes
    kind: EventKind = "other"


@dataclass(frozen=True)
class Completion:
    """Everything a builder needs to render one answer."""

    serial: int
    model: str
    chunks: list[str]
    reasoning: list[str]
    max_tokens_hit: bool
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)


def sse(data: Any, event: str | None = None, kind: EventKind = "other") -> SseEvent:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return SseEvent(f"{head}data: {payload}\n\n".encode(), kind)


def count_input_tokens(body: Any) -> int:
    """A rough token count: whitespace-separated words of all message and instruction text (at least 1)."""
    return max(1, sum(len(s.split()) for s in _texts(body, collect=False)))


def _texts(node: Any, *, collect: bool) -> Iterator[str]:
    if isinstance(node, str):
        if collect:
            yield node
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item, collect=collect)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("messages", *_TEXT_KEYS):
                yield from _texts(value, collect=collect or key in _TEXT_KEYS)


# --- OpenAI Responses -------------------------------------------------------------------------------------


def _responses_ids(c: Completion) -> tuple[str, str, str]:
    return f"resp_standin_{c.serial}", f"msg_standin_{c.serial}", f"rs_standin_{c.serial}"


def _responses_usage(c: Completion) -> dict[str, Any]:
    return {
        "input_tokens": c.input_tokens,
        "input_tokens_details": {"cached_tokens": c.cached_input_tokens, "cache_write_tokens": 0},
        "output_tokens": c.output_tokens,
        "output_tokens_details": {"reasoning_tokens": len(c.reasoning)},
        "total_tokens": c.input_tokens + c.output_tokens,
    }


def _responses_object(c: Completion, status: str, output: list[Any], *, usage: bool) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": _responses_ids(c)[0],
        "object": "response",
        "created_at": int(time.time()),
        "model": c.model,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": _responses_usage(c) if usage else None,
    }


def _message_item(c: Completion, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": _responses_ids(c)[1],
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _reasoning_item(c: Completion, text: str | None) -> dict[str, Any]:
    summary = [] if text is None else [{"type": "summary_text", "text": text}]
    return {"type": "reasoning", "id": _responses_ids(c)[2], "summary": summary}


def _final_status(c: Completion) -> str:
    return "incomplete" if c.max_tokens_hit else "completed"


def _final_output(c: Completion) -> list[Any]:
    output = [_reasoning_item(c, c.reasoning_text)] if c.reasoning else []
    return [*output, _message_item(c, _final_status(c), c.text)]


def responses_json(c: Completion) -> dict[str, Any]:
    return _responses_object(c, _final_status(c), _final_output(c), usage=True)


def responses_stream(c: Completion) -> list[SseEvent]:
    raw: list[tuple[dict[str, Any], EventKind]] = []

    def add(kind: EventKind = "other", **fields: Any) -> None:
        raw.append((fields, kind))

    _, msg_id, rs_id = _responses_ids(c)
    add(type="response.created", response=_responses_object(c, "in_progress", [], usage=False))
    add(type="response.in_progress", response=_responses_object(c, "in_progress", [], usage=False))
    index = 0
    if c.reasoning:
        loc: dict[str, Any] = {"item_id": rs_id, "output_index": index, "summary_index": 0}
        add(type="response.output_item.added", output_index=index, item=_reasoning_item(c, None))
        add(type="response.reasoning_summary_part.added", part={"type": "summary_text", "text": ""}, **loc)
        for piece in c.reasoning:
            add("reasoning", type="response.reasoning_summary_text.delta", delta=piece, **loc)
        add(type="response.reasoning_summary_text.done", text=c.reasoning_text, **loc)
        part = {"type": "summary_text", "text": c.reasoning_text}
        add(type="response.reasoning_summary_part.done", part=part, **loc)
        add(type="response.output_item.done", output_index=index, item=_reasoning_item(c, c.reasoning_text))
        index += 1
    loc = {"item_id": msg_id, "output_index": index, "content_index": 0}
    add(type="response.output_item.added", output_index=index, item=_message_item(c, "in_progress", None))
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    add(type="response.content_part.added", part=empty_part, **loc)
    for piece in c.chunks:
        add("text", type="response.output_text.delta", delta=piece, logprobs=[], **loc)
    add(type="response.output_text.done", text=c.text, logprobs=[], **loc)
    full_part = {"type": "output_text", "text": c.text, "annotations": [], "logprobs": []}
    add(type="response.content_part.done", part=full_part, **loc)
    done_item = _message_item(c, _final_status(c), c.text)
    add(type="response.output_item.done", output_index=index, item=done_item)
    final = _responses_object(c, _final_status(c), _final_output(c), usage=True)
    add(type=f"response.{_final_status(c)}", response=final)
    return [
        sse({**fields, "sequence_number": seq}, event=fields["type"], kind=kind)
        for seq, (fields, kind) in enumerate(raw)
    ]


def responses_error_event(error_type: str, message: str, sequence_number: int) -> SseEvent:
    data = {
        "type": "error",
        "code": error_type,
        "message": message,
        "param": None,
        "sequence_number": sequence_number,
    }
    return sse(data, event="error")


# --- OpenAI Chat Completions ------------------------------------------------------------------------------


def _chat_head(c: Completion, obj: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-standin-{c.serial}",
        "object": obj,
        "created": int(time.time()),
        "model": c.model,
    }


def _chat_usage(c: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": c.input_tokens,
        "completion_tokens": c.output_tokens,
        "total_tokens": c.input_tokens + c.output_tokens,
        "prompt_tokens_details": {"cached_tokens": c.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": len(c.reasoning)},
    }


def _finish_reason(c: Completion) -> str:
    return "length" if c.max_tokens_hit else "stop"


def chat_json(c: Completion) -> dict[str, Any]:
    message = {"role": "assistant", "content": c.text, "refusal": None}
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(c), "logprobs": None}
    return {**_chat_head(c, "chat.completion"), "choices": [choice], "usage": _chat_usage(c)}


def chat_stream(c: Completion, *, include_usage: bool) -> list[SseEvent]:
    head = _chat_head(c, "chat.completion.chunk")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {**head, "choices": [choice], **({"usage": None} if include_usage else {})}

    events = [sse(chunk({"role": "assistant", "content": "", "refusal": None}))]
    # Reasoning as vLLM and DeepSeek stream it (OpenAI's own Chat Completions streams none).
    events += [sse(chunk({"reasoning_content": piece}), kind="reasoning") for piece in c.reasoning]
    events += [sse(chunk({"content": piece}), kind="text") for piece in c.chunks]
    events.append(sse(chunk({}, _finish_reason(c))))
    if include_usage:
        events.append(sse({**head, "choices": [], "usage": _chat_usage(c)}))
    events.append(sse("[DONE]"))
    return events


def chat_error_event(error_type: str, message: str) -> SseEvent:
    return sse({"error": {"message": message, "type": error_type, "param": None, "code": error_type}})


# --- Anthropic Messages -----------------------------------------------------------------------------------

_SIGNATURE = "c3RhbmRpbi1zaWduYXR1cmU="  # base64("standin-signature")


def _stop_reason(c: Completion) -> str:
    return "max_tokens" if c.max_tokens_hit else "end_turn"


def _message_object(c: Completion, content: list[Any], stop: str | None, output_tokens: int) -> dict[str, Any]:
    return {
        "id": f"msg_standin_{c.serial}",
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": c.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": c.cached_input_tokens,
        },
    }


def messages_json(c: Completion) -> dict[str, Any]:
    content: list[Any] = []
    if c.reasoning:
        content.append({"type": "thinking", "thinking": c.reasoning_text, "signature": _SIGNATURE})
    content.append({"type": "text", "text": c.text})
    return _message_object(c, content, _stop_reason(c), c.output_tokens)


def messages_stream(c: Completion) -> list[SseEvent]:
    events = [sse({"type": "message_start", "message": _message_object(c, [], None, 1)}, "message_start")]

    def block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]], kind: EventKind) -> None:
        events.append(
            sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start")
        )
        if index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        for delta in deltas:
            data = {"type": "content_block_delta", "index": index, "delta": delta}
            events.append(sse(data, "content_block_delta", kind if delta["type"] != "signature_delta" else "other"))
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))

    index = 0
    if c.reasoning:
        thinking = [{"type": "thinking_delta", "thinking": piece} for piece in c.reasoning]
        thinking.append({"type": "signature_delta", "signature": _SIGNATURE})
        block(index, {"type": "thinking", "thinking": "", "signature": ""}, thinking, "reasoning")
        index += 1
    texts = [{"type": "text_delta", "text": piece} for piece in c.chunks]
    block(index, {"type": "text", "text": ""}, texts, "text")
    delta = {"stop_reason": _stop_reason(c), "stop_sequence": None}
    usage: dict[str, Any] = {"output_tokens": c.output_tokens}
    if c.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": len(c.reasoning)}
    events.append(sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta"))
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def messages_error_event(error_type: str, message: str, request_id: str) -> SseEvent:
    data = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    return sse(data, event="error")


# --- errors and model lists -------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 429: "rate_limit_exceeded", 529: "overloaded"}
_MESSAGES = {
    400: "Invalid request.",
    401: "Incorrect API key provided: sk-***. You can find your API key in your account settings.",
    403: "Permission denied.",
    404: "Not found.",
    408: "Request timed out.",
    409: "Conflict.",
    429: "Rate limit reached. Please try again later.",
    529: "Overloaded",
}


def default_error_type(provider: Provider, status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    if status >= 500:
        return "api_error" if provider == "anthropic" else "server_error"
    return "invalid_request_error"


def default_error_message(status: int) -> str:
    return _MESSAGES.get(status, "The server had an error while processing your request.")


def error_body(provider: Provider, status: int, error_type: str, message: str, request_id: str) -> dict[str, Any]:
    if provider == "anthropic":
        return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    code = _OPENAI_CODES.get(status, error_type if status >= 500 else None)
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def openai_models(ids: list[str]) -> dict[str, Any]:
    data = [{"id": i, "object": "model", "created": 1700000000, "owned_by": "standin"} for i in ids]
    return {"object": "list", "data": data}


def anthropic_models(ids: list[str]) -> dict[str, Any]:
    data = [
        {
            "type": "model",
            "id": i,
            "display_name": i.replace("-", " ").title(),
            "created_at": "2026-01-01T00:00:00Z",
            "lifecycle": "active",
        }
        for i in ids
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": ids[0] if ids else None,
        "last_id": ids[-1] if ids else None,
    }
