"""Serving over stdio so that shutdown is always prompt and clean.

The SDK reads stdin in a worker thread, which nothing can interrupt: a SIGTERM would wait for the host to
write another line. Here stdin is read with non-blocking I/O when it is a pipe or socket (as hosts launch
servers), SIGTERM and SIGINT cancel everything, and the lifespan then closes the upstream clients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import sys
from typing import Any

import anyio
from mcp.server import MCPServer
from mcp.server.stdio import stdio_server

from .sdk_adapter import lowlevel_server

__all__ = ["serve_stdio"]

logger = logging.getLogger(__name__)

_READ_CHUNK = 1 << 16


class _PipeLines:
    """Lines of a non-blocking pipe, as `str`; a line longer than `limit` bytes is dropped whole."""

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0
        self._dropping = False

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                self._scanned = 0
                if self._dropping:
                    self._dropping = False
                    continue
                return line.decode("utf-8", errors="replace")
            self._scanned = len(self._buffer)
            if len(self._buffer) > self._limit:
                if not self._dropping:
                    logger.warning("dropped a message larger than %d bytes from stdin", self._limit)
                self._dropping = True
                self._buffer.clear()
                self._scanned = 0
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                if self._buffer and not self._dropping:
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return line.decode("utf-8", errors="replace")
                raise StopAsyncIteration
            self._buffer += chunk


async def _pipe_stdin(limit: int) -> _PipeLines | None:
    """Non-blocking lines from fd 0 if it is a pipe or socket; None (the SDK's own reader) otherwise."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_READ_CHUNK * 2)
    pipe = os.fdopen(os.dup(0), "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return _PipeLines(reader, limit)


async def _cancel_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            scope.cancel()
            return


async def serve_stdio(server: MCPServer, *, max_message_bytes: int) -> None:
    """Serve until stdin closes or a signal arrives."""
    lowlevel = lowlevel_server(server)
    async with anyio.create_task_group() as tg:
        if sys.platform != "win32":
            tg.start_soon(_cancel_on_signal, tg.cancel_scope)
        stdin: Any = await _pipe_stdin(max_message_bytes)
        async with stdio_server(stdin=stdin) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
        tg.cancel_scope.cancel()
