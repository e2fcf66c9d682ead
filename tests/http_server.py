"""`mcp-llm-server --transport http` as a real subprocess on a free port, for the HTTP and conformance tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from conftest import text_of
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

__all__ = [
    "INITIALIZE",
    "MCP_HEADERS",
    "HttpServer",
    "bearer_client",
    "call",
    "finished",
    "free_port",
    "running_http_server",
    "start_http_server",
]

# A client's first request and the headers Streamable HTTP wants, for raw HTTP requests in the tests.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
STARTUP_S = 30.0
SHUTDOWN_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcp_llm_server", "--transport", "http", *args]


def child_env(env: dict[str, str]) -> dict[str, str]:
    """`env` plus only what a process needs to run (no provider or MCP_LLM_ variables of the developer's)."""
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {**base, **env}


@dataclass
class HttpServer:
    process: subprocess.Popen[bytes]
    port: int
    stderr_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after `SHUTDOWN_S`: a hang fails the test, never the run)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"no exit {SHUTDOWN_S} s after SIGTERM; stderr:\n{self.stderr()}") from None


def start_http_server(
    env: dict[str, str],
    workdir: Path,
    *args: str,
    host: str = "127.0.0.1",
    preexec_fn: Callable[[], object] | None = None,
) -> HttpServer:
    """Start the server (cwd `workdir`, so no developer's `.env` is read) and poll `/healthz` until it answers;
    on a port taken between choosing and binding it (other test runs on the machine), try another."""
    for _ in range(3):
        try:
            return _start(env, workdir, args, host, preexec_fn)
        except _PortTaken:
            continue
    raise AssertionError("three free ports were taken before the server could bind them")


class _PortTaken(Exception):
    pass


def _start(
    env: dict[str, str], workdir: Path, args: tuple[str, ...], host: str, preexec_fn: Callable[[], object] | None
) -> HttpServer:
    port = free_port()
    stderr_path = workdir / f"server-{port}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            server_command("--host", host, "--port", str(port), *args),
            env=child_env(env),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=preexec_fn,  # e.g. a lower RLIMIT_NOFILE for the server only
        )
    server = HttpServer(process, port, stderr_path)
    deadline = time.monotonic() + STARTUP_S
    while True:
        if process.poll() is not None:
            if "address already in use" in server.stderr().lower():
                raise _PortTaken
            raise AssertionError(f"server exited with {process.returncode} at start; stderr:\n{server.stderr()}")
        try:
            if httpx2.get(f"{server.base_url}/healthz", timeout=1.0).status_code == 200:
                return server
        except httpx2.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"/healthz did not answer within {STARTUP_S} s; stderr:\n{server.stderr()}")
        time.sleep(0.05)  # a bounded poll for start-up, not synchronisation


@contextmanager
def running_http_server(
    env: dict[str, str],
    workdir: Path,
    *args: str,
    host: str = "127.0.0.1",
    preexec_fn: Callable[[], object] | None = None,
) -> Iterator[HttpServer]:
    """The server for the block; afterwards it must stop on SIGTERM with exit code 0."""
    server = start_http_server(env, workdir, *args, host=host, preexec_fn=preexec_fn)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"exit code {code} after SIGTERM; stderr:\n{server.stderr()}"


@asynccontextmanager
async def bearer_client(mcp_url: str, token: str) -> AsyncIterator[Client]:
    """The real MCP client over Streamable HTTP, sending `Authorization: Bearer <token>`."""
    async with (
        create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as http,
        Client(streamable_http_client(mcp_url, http_client=http)) as client,
    ):
        yield client


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, dict[str, Any], str]:
    """A tool call's (is_error, structured content or {}, text)."""
    result = await client.call_tool(tool, arguments)
    return result.is_error, result.structured_content or {}, text_of(result)


async def finished(client: Client, tool: str, **arguments: Any) -> tuple[bool, dict[str, Any], str]:
    """The tool's final result, fetched with get_answer if it detached (a cold server's first call may)."""
    failed, result, said = await call(client, tool, **arguments)
    for _ in range(100):  # each get_answer waits up to the detach limit
        if result.get("status") != "running":
            break
        failed, result, said = await call(client, "get_answer", answer_id=result["answer_id"])
    return failed, result, said
