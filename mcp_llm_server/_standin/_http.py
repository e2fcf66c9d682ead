"""Minimal HTTP/1.1 over asyncio streams: keep-alive, Content-Length requests, chunked or sized responses.

Byte-level control is the point: a connection can be reset (RST), closed mid-body, or left silent, and a
client disconnect is noticed while a response is delayed or stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from http import HTTPStatus

_MAX_HEAD = 64 * 1024
_READ_SIZE = 64 * 1024


class HttpError(Exception):
    """The request could not be parsed; answer with ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


def reason_phrase(status: int) -> str:
    if status == 529:
        return "Site Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class HttpConnection:
    """One client connection. Reads requests in turn; while a response is served, watches for EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._buf = bytearray()
        self._eof = False
        self._disconnected = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    # --- reading ------------------------------------------------------------------------------------------

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            chunk = await self._reader.read(_READ_SIZE)
        except (ConnectionError, OSError):
            chunk = b""
        if not chunk:
            self._eof = True
            self._disconnected.set()
            return False
        self._buf += chunk
        return True

    async def read_request(self) -> HttpRequest | None:
        """The next request, or None when the client closed the connection between requests."""
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > _MAX_HEAD:
                raise HttpError(431, "request head too large")
            if not await self._fill():
                return None
        head = bytes(self._buf[:end]).decode("latin-1")
        del self._buf[: end + 4]
        request_line, *header_lines = head.split("\r\n")
        try:
            method, target, version = request_line.split(" ")
        except ValueError:
            raise HttpError(400, f"bad request line {request_line!r}") from None
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(400, "bad header line")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise HttpError(411, "chunked request bodies are not supported")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "bad content-length") from None
        while len(self._buf) < length:
            if not await self._fill():
                return None
        body = bytes(self._buf[:length])
        del self._buf[:length]
        path, _, query = target.partition("?")
        return HttpRequest(method.upper(), path, query, version, headers, body)

    # --- disconnect detection -----------------------------------------------------------------------------

    def start_watching(self) -> None:
        """Read in the background while a response is served, so that EOF marks a disconnect."""
        if self._watcher is None and not self._eof:
            self._watcher = asyncio.create_task(self._watch())

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self) -> None:
        while await self._fill():
            pass

    @property
    def disconnected(self) -> bool:
        return self._disconnected.is_set() or self._writer.is_closing()

    async def wait_disconnect(self, seconds: float | None) -> bool:
        """Sleep ``seconds`` (None: forever), ending early if the client goes away; True if it did."""
        if self.disconnected:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._disconnected.wait(), seconds)
        return self.disconnected

    # --- writing ------------------------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if self.disconnected:
            raise ConnectionResetError("client disconnected")
        self._writer.write(data)
        await self._writer.drain()

    async def send_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        lines = [f"HTTP/1.1 {status} {reason_phrase(status)}", *(f"{k}: {v}" for k, v in headers)]
        await self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send_raw(self, data: bytes) -> None:
        await self._write(data)

    async def send_chunk(self, data: bytes) -> None:
        await self._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        await self._write(b"0\r\n\r\n")

    # --- closing ------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), discarding anything unsent."""
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close gracefully (FIN), also mid-body."""
        await self.stop_watching()
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
