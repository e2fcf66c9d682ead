"""Bounds for the HTTP transport under abuse: connections, header and body read times, dropped clients.

uvicorn bounds none of these itself: its keep-alive timer runs only between requests (never before the first
one, and it stops at the first byte of the next), `limit_concurrency` counts a connection only once its headers
are in (and then answers 503 to everything, `/healthz` included), and a POST's SSE stream in stateful mode ends
on a client disconnect while the request it carried runs on in the session. So:

- `guarded_protocol`: uvicorn's h11 protocol with a header deadline (from the connection's start or the end of
  its last response until a request's headers are complete) and a connection limit: a connection beyond it
  closes the oldest one still waiting for headers, or, when every connection is busy, gets 503 at once.
- `BodyDeadline`: the whole request body must arrive within a bound; otherwise 408 and the connection closes.
- `CancelOnDrop`: a stateful client that drops a POST before its response is complete has that request
  cancelled, with the `notifications/cancelled` a client would send (an internal request into the same session).
- `SessionRetryAfter`: the SDK's 503 at its session limit gets a `Retry-After`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any, ClassVar

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

__all__ = ["BodyDeadline", "CancelOnDrop", "SessionRetryAfter", "guarded_protocol"]

logger = logging.getLogger(__name__)

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 28\r\n"
    b"retry-after: 1\r\nconnection: close\r\n\r\ntoo many open connections\r\n\r\n"
)
_HEADER_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_CANCEL_TIMEOUT_S = 5.0


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """An h11 protocol class (uvicorn's `http=`) enforcing the connection limit and the header deadline."""

    class GuardedH11Protocol(_GuardedH11Protocol):
        limit = max_connections
        header_timeout = header_timeout_s
        waiting: ClassVar[dict[_GuardedH11Protocol, None]] = {}  # oldest first

    return GuardedH11Protocol


class _GuardedH11Protocol(H11Protocol):
    limit: ClassVar[int]
    header_timeout: ClassVar[float]
    waiting: ClassVar[dict[_GuardedH11Protocol, None]]  # connections waiting for a request's headers

    _header_timer: asyncio.TimerHandle | None = None
    _cycle_before: RequestResponseCycle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limit and not self._make_room():
            logger.warning("refused a connection: %d are open, all busy (MCP_LLM_HTTP_MAX_CONNECTIONS)", self.limit)
            self.transport.write(_REFUSED)
            self.transport.close()
            return
        self._await_headers()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its headers; False if none is waiting."""
        victim = next(iter(self.waiting), None)
        if victim is None:
            return False
        logger.info("closed the oldest connection waiting for headers: %d connections are open", len(self.connections))
        victim._close_waiting(b"")
        return True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._note_headers()

    def on_response_complete(self) -> None:
        self._await_headers()
        super().on_response_complete()  # may start a pipelined request at once
        self._note_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_waiting()
        if self.transport.is_closing():
            return
        self._cycle_before = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._close_waiting, _HEADER_TIMEOUT)
        self.waiting[self] = None

    def _note_headers(self) -> None:
        if self._header_timer is not None and self.cycle is not self._cycle_before:
            self._stop_waiting()  # a new request's headers are in: the app has it now

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.waiting.pop(self, None)

    def _close_waiting(self, farewell: bytes) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            if farewell:
                self.transport.write(farewell)
            self.transport.close()


async def send_json(send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyDeadline:
    """The request body must be complete within `timeout_s` of the request's start; otherwise the app is
    cancelled (it was still waiting for the body) and the client gets 408 with the connection closed."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self._app = app
        self._timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        deadline = anyio.current_time() + self._timeout_s
        body_done = False
        started = False
        with anyio.CancelScope() as app_scope:

            async def timed_receive() -> Message:
                nonlocal body_done
                if body_done:  # afterwards the app waits for a disconnect: no deadline
                    return await receive()
                with anyio.move_on_after(deadline - anyio.current_time()):
                    message = await receive()
                    body_done = message["type"] != "http.request" or not message.get("more_body", False)
                    return message
                app_scope.cancel()
                await anyio.lowlevel.checkpoint()  # raises the cancellation: the app stops here
                raise AssertionError("unreachable")

            async def watched_send(message: Message) -> None:
                nonlocal started
                started = True
                await send(message)

            await self._app(scope, timed_receive, watched_send)
        if app_scope.cancelled_caught:
            logger.warning("cut a request whose body took over %g s (MCP_LLM_HTTP_BODY_TIMEOUT_S)", self._timeout_s)
            if not started:
                body = {"error": f"request body not received within {self._timeout_s:g} s"}
                await send_json(send, 408, body, [(b"connection", b"close")])


class SessionRetryAfter:
    """Adds `Retry-After` to a 503 from the MCP endpoint (the SDK's answer at its session limit)."""

    def __init__(self, app: ASGIApp, retry_after_s: float) -> None:
        self._app = app
        self._retry_after = str(math.ceil(retry_after_s)).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_retry_after(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"retry-after" for name, _ in headers):
                    headers.append((b"retry-after", self._retry_after))
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, with_retry_after if scope["type"] == "http" else send)


class CancelOnDrop:
    """In stateful mode, a POST whose client disconnects before the response is complete has its request
    cancelled in the session (no event store: nothing could resume the stream), as stateless mode does."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        body = bytearray()
        body_done = dropped = complete = False

        async def watched_receive() -> Message:
            nonlocal body_done, dropped
            message = await receive()
            if message["type"] == "http.request" and not body_done:
                body.extend(message.get("body", b""))
                body_done = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                dropped = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self._app(scope, watched_receive, watched_send)
        finally:
            if dropped and body_done and not complete:
                await self._cancel(scope, bytes(body))

    async def _cancel(self, scope: Scope, body: bytes) -> None:
        headers = dict(scope["headers"])
        request_id = _request_id(body)
        if request_id is None or b"mcp-session-id" not in headers:
            return
        logger.info("client dropped request %r before its response: cancelling it", request_id)
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": "client disconnected"},
        }
        await _post_internally(self._app, scope, json.dumps(note).encode())


def _request_id(body: bytes) -> str | int | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    if not isinstance(message, dict) or "method" not in message:
        return None
    request_id = message.get("id")
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


async def _post_internally(app: ASGIApp, scope: Scope, body: bytes) -> None:
    """POST `body` to `app` as the request in `scope` did (same session, Host and protocol version headers);
    the answer (202) is dropped. Shielded and bounded: it runs while the dropped request's task unwinds."""
    replaced = {b"content-length", b"content-type", b"accept"}
    headers = [(name, value) for name, value in scope["headers"] if name not in replaced]
    headers += [
        (b"content-type", b"application/json"),
        (b"accept", b"application/json, text/event-stream"),
        (b"content-length", str(len(body)).encode()),
    ]
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        pass

    inner: dict[str, Any] = {**scope, "headers": headers}
    with anyio.CancelScope(shield=True), anyio.move_on_after(_CANCEL_TIMEOUT_S):
        await app(inner, receive, send)
