"""A loopback reverse proxy that adds `Authorization: Bearer <token>` to every request, for clients that cannot send
one (the conformance suite's own client). Everything else, `Host` and `Origin` included, passes through as sent,
and responses stream back chunk by chunk (SSE)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import uvicorn
from starlette.types import Message, Receive, Scope, Send

__all__ = ["bearer_proxy"]

_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"authorization"}


def _proxy_app(upstream: str, token: str) -> object:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message: Message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP]
        headers.append((b"authorization", f"Bearer {token}".encode()))
        url = upstream + scope["path"] + (("?" + scope["query_string"].decode()) if scope["query_string"] else "")
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as client,
            client.stream(scope["method"], url, headers=headers, content=body) as response,
        ):
            out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


@contextmanager
def bearer_proxy(upstream_base_url: str, token: str, port: int) -> Iterator[str]:
    """Serve the proxy on 127.0.0.1:`port` (in a thread) while in the block; yields its base URL."""
    config = uvicorn.Config(_proxy_app(upstream_base_url, token), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the bearer proxy did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
