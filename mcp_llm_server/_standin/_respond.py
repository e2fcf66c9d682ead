"""Serve one scripted ``Reply`` on a connection: JSON or SSE, with the scripted delays and faults."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ._http import HttpConnection
from ._script import Outcome, RecordedRequest, Reply
from ._wire import (
    Completion,
    Provider,
    SseEvent,
    chat_error_event,
    chat_json,
    chat_stream,
    count_input_tokens,
    default_error_message,
    default_error_type,
    error_body,
    messages_error_event,
    messages_json,
    messages_stream,
    responses_error_event,
    responses_json,
    responses_stream,
)

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str]]


async def send_json(conn: HttpConnection, status: int, headers: Headers, obj: Any) -> None:
    body = json.dumps(obj, separators=(",", ":")).encode()
    head = [("content-type", "application/json"), ("content-length", str(len(body))), *headers]
    await conn.send_head(status, head)
    await conn.send_raw(body)


async def send_error(
    conn: HttpConnection,
    provider: Provider,
    rec: RecordedRequest,
    status: int,
    headers: Headers,
    *,
    error_type: str | None = None,
    message: str | None = None,
) -> None:
    kind = error_type or default_error_type(provider, status)
    body = error_body(provider, status, kind, message or default_error_message(status), rec.request_id)
    await send_json(conn, status, headers, body)


def _completion(rec: RecordedRequest, reply: Reply, serial: int) -> Completion:
    chunks = reply.text_chunks()
    reasoning = list(reply.reasoning or [])
    return Completion(
        serial=serial,
        model=rec.model or "standin-model",
        chunks=chunks,
        reasoning=reasoning,
        max_tokens_hit=reply.stop_reason == "max_tokens",
        input_tokens=reply.input_tokens if reply.input_tokens is not None else count_input_tokens(rec.body),
        output_tokens=reply.output_tokens if reply.output_tokens is not None else len(chunks) + len(reasoning),
        cached_input_tokens=reply.cached_input_tokens,
    )


def _include_usage(body: Any) -> bool:
    options = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _events(rec: RecordedRequest, c: Completion) -> list[SseEvent]:
    if rec.api == "responses":
        return responses_stream(c)
    if rec.api == "chat":
        return chat_stream(c, include_usage=_include_usage(rec.body))
    return messages_stream(c)


def _body(rec: RecordedRequest, c: Completion) -> dict[str, Any]:
    if rec.api == "responses":
        return responses_json(c)
    if rec.api == "chat":
        return chat_json(c)
    return messages_json(c)


def _error_event(rec: RecordedRequest, reply: Reply, sequence_number: int) -> SseEvent:
    kind = reply.error_type or "overloaded_error"
    message = reply.error_message or "Overloaded"
    if rec.api == "responses":
        return responses_error_event(kind, message, sequence_number)
    if rec.api == "chat":
        return chat_error_event(kind, message)
    return messages_error_event(kind, message, rec.request_id)


def _fault_index(events: list[SseEvent], after: int) -> int:
    """Index of the event before which a mid-stream fault fires: just after the ``after``-th text delta."""
    text_positions = [i for i, ev in enumerate(events) if ev.kind == "text"]
    if not text_positions:
        return len(events) - 1
    if after <= 0:
        return text_positions[0]
    return text_positions[min(after, len(text_positions)) - 1] + 1


async def respond(
    conn: HttpConnection,
    rec: RecordedRequest,
    reply: Reply,
    provider: Provider,
    headers: Headers,
    serial: int,
) -> Outcome:
    """Serve ``reply``; returns the outcome. Connection errors while writing propagate to the caller."""
    headers = [*headers, *reply.headers.items()]
    if reply.delay_s > 0 and await conn.wait_disconnect(reply.delay_s):
        return "client_disconnected"
    if reply.fault == "reset":
        conn.reset()
        return "reset"
    if reply.status != 200:
        await send_error(
            conn,
            provider,
            rec,
            reply.status,
            headers,
            error_type=reply.error_type,
            message=reply.error_message,
        )
        return "error_status"
    completion = _completion(rec, reply, serial)
    if rec.stream:
        return await _stream(conn, rec, reply, completion, headers)
    return await _single(conn, rec, reply, completion, provider, headers)


async def _single(
    conn: HttpConnection,
    rec: RecordedRequest,
    reply: Reply,
    c: Completion,
    provider: Provider,
    headers: Headers,
) -> Outcome:
    if reply.fault == "midstream_error":  # no stream to carry it: an error status says the same
        status = 529 if (reply.error_type or "overloaded_error") == "overloaded_error" else 500
        await send_error(conn, provider, rec, status, headers, error_type=reply.error_type, message=reply.error_message)
        return "error_status"
    body = json.dumps(_body(rec, c), separators=(",", ":")).encode()
    await conn.send_head(200, [("content-type", "application/json"), ("content-length", str(len(body))), *headers])
    if reply.fault == "stall":
        await conn.wait_disconnect(None)
        return "stalled_then_disconnected"
    if reply.fault == "drop":
        await conn.send_raw(body[: len(body) // 2])
        await conn.close()
        return "dropped"
    await conn.send_raw(body)
    rec.deltas_sent = len(c.chunks)
    return "completed"


async def _stream(conn: HttpConnection, rec: RecordedRequest, reply: Reply, c: Completion, headers: Headers) -> Outcome:
    events = _events(rec, c)
    fault_at = _fault_index(events, reply.fault_after) if reply.fault else -1
    sse_head = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
        ("transfer-encoding", "chunked"),
    ]
    await conn.send_head(200, [*sse_head, *headers])
    delta_seen = False
    for index, event in enumerate(events):
        if reply.fault == "endless" and event.kind == "text":
            return await _endless(conn, rec, reply, event.frame)
        if index == fault_at:
            return await _fault(conn, rec, reply, index)
        if event.kind != "other":
            if delta_seen and reply.chunk_delay_s > 0 and await conn.wait_disconnect(reply.chunk_delay_s):
                return "client_disconnected"
            delta_seen = True
        await conn.send_chunk(event.frame)
        if event.kind == "text":
            rec.deltas_sent += 1
            rec.delta_sent_at.append(time.monotonic())
    await conn.end_chunks()
    return "completed"


async def _endless(conn: HttpConnection, rec: RecordedRequest, reply: Reply, frame: bytes) -> Outcome:
    """The same text delta again and again until the client goes away or `reply.endless_max_s` passes."""
    stop_at = time.monotonic() + reply.endless_max_s
    try:
        while time.monotonic() < stop_at:
            await conn.send_chunk(frame)
            rec.deltas_sent += 1
            await asyncio.sleep(0)  # let the disconnect watcher run
    except ConnectionError:
        return "client_disconnected"
    await conn.close()
    return "endless_stopped"


async def _fault(conn: HttpConnection, rec: RecordedRequest, reply: Reply, index: int) -> Outcome:
    logger.debug("stand-in %s: fault %s after %d deltas", rec.request_id, reply.fault, rec.deltas_sent)
    if reply.fault == "stall":
        await conn.wait_disconnect(None)
        return "stalled_then_disconnected"
    if reply.fault == "drop":
        await conn.close()
        return "dropped"
    await conn.send_chunk(_error_event(rec, reply, index).frame)
    await conn.end_chunks()
    return "midstream_error"
