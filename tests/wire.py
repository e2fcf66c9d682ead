"""Raw JSON-RPC over a child process's pipes, with threads on both ends so no write or read can block a test.

A host writes to the server's stdin and reads its stdout; here a writer thread owns stdin (a 40 MB line blocks
until the server has read it) and a reader thread owns stdout, keeping every line and whether it parsed as
JSON-RPC. The async methods poll those records with bounds, so a test never sleeps a fixed time.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio

__all__ = ["WireServer", "wire_server"]

_POLL_S = 0.005
WIRE_ARGS = ["-m", "mcp_llm_server"]
# Starting the interpreter and importing the MCP SDK takes seconds on a busy machine.
STARTUP_S = 30.0


class WireServer:
    """`python -m mcp_llm_server` with its stdin fed by a thread and its stdout read by another."""

    def __init__(self, env: dict[str, str], cwd: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *WIRE_ARGS],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
        )
        self.lines: list[bytes] = []  # every stdout line, as written
        self.messages: list[dict[str, Any]] = []  # the lines that parsed as JSON-RPC 2.0 objects
        self.bad_lines: list[bytes] = []  # the lines that did not
        self.stdout_closed = False
        self.write_error: BaseException | None = None
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._queued = 0
        self._written = 0
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="wire-stdout", daemon=True)
        self._writer = threading.Thread(target=self._write, name="wire-stdin", daemon=True)
        self._reader.start()
        self._writer.start()

    # --- threads -----------------------------------------------------------------------------------------

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        for line in iter(stdout.readline, b""):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            with self._lock:
                self.lines.append(line)
                if isinstance(message, dict) and message.get("jsonrpc") == "2.0" and line.endswith(b"\n"):
                    self.messages.append(message)
                else:
                    self.bad_lines.append(line)
        self.stdout_closed = True

    def _write(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            while (data := self._outbox.get()) is not None:
                stdin.write(data)
                stdin.flush()
                with self._lock:
                    self._written += 1
        except (BrokenPipeError, OSError, ValueError) as exc:
            self.write_error = exc
        finally:
            with suppress(BrokenPipeError, OSError):
                stdin.close()

    # --- writing -----------------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Queue bytes for stdin (a line should end with a newline)."""
        with self._lock:
            self._queued += 1
        self._outbox.put(data)

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def request(self, request_id: str | int, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def call(self, request_id: str | int, tool: str, arguments: dict[str, Any], token: str | None = None) -> None:
        params: dict[str, Any] = {"name": tool, "arguments": arguments}
        if token is not None:
            params["_meta"] = {"progressToken": token}
        self.request(request_id, "tools/call", params)

    def close_stdin(self) -> None:
        """Close stdin once everything queued before has been written."""
        self._outbox.put(None)

    async def written(self, within: float) -> None:
        """Wait until every queued write has reached the pipe."""
        await self.until(lambda: self._written >= self._queued or self.write_error is not None, within, "writes")
        assert self.write_error is None, self.write_error

    # --- reading -----------------------------------------------------------------------------------------

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {within} s for {what}; server alive: {self.process.poll() is None}")
            await anyio.sleep(_POLL_S)

    def find_response(self, request_id: str | int) -> dict[str, Any] | None:
        with self._lock:
            for message in self.messages:
                if message.get("id") == request_id and "method" not in message:
                    return message
        return None

    async def response(self, request_id: str | int, within: float = STARTUP_S) -> dict[str, Any]:
        await self.until(lambda: self.find_response(request_id) is not None, within, f"response {request_id!r}")
        found = self.find_response(request_id)
        assert found is not None
        return found

    def progress(self, token: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m["params"]
                for m in self.messages
                if m.get("method") == "notifications/progress" and m.get("params", {}).get("progressToken") == token
            ]

    async def exit_code(self, within: float) -> int:
        """Wait (bounded) for the process to exit; its code."""
        await self.until(lambda: self.process.poll() is not None, within, "exit")
        code = self.process.returncode
        assert code is not None
        return code

    def stdout_text(self) -> str:
        with self._lock:
            return b"".join(self.lines).decode("utf-8", errors="replace")

    def stderr_text(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    # --- teardown ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the child if it still runs, then join both threads and close every pipe and file."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._outbox.put(None)
        self._writer.join(10)
        self._reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()


@asynccontextmanager
async def wire_server(env: dict[str, str], cwd: Path, stderr_path: Path) -> AsyncIterator[WireServer]:
    """Start the server and run the legacy (2025-11-25) initialize handshake on raw pipes."""
    server = WireServer(env, cwd, stderr_path)
    try:
        server.request(
            0,
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "wire-test", "version": "0"}},
        )
        init = await server.response(0, STARTUP_S)
        assert init["result"]["serverInfo"]["name"] == "mcp-llm-server", init
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(server.close)
