"""The server as a host runs it: `python -m mcp_llm_server` over stdio, driven by the real MCP client and raw pipes."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from conftest import ANTHROPIC_KEY, OPENAI_KEY, stdio_params, text_of
from helpers import EXIT_S, ProgressLog, assert_clean_stderr, child_env, finished, words
from mcp import Client
from mcp.client.stdio import stdio_client

from mcp_llm_server._standin import Reply, StandIn

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")

TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
# Starting the interpreter, importing the MCP SDK and then a provider SDK takes seconds on a busy machine.
STARTUP_S = 30.0
# The server's own shutdown (upstream stream closed, clients closed) takes milliseconds. The streams cut would run
# 10 s: half that proves they were cut, and leaves a busy machine room.
UPSTREAM_CLOSED_S = 5.0


# --- through the real MCP client -------------------------------------------------------------------------


async def answer_with_progress(client: Client, standin: StandIn, provider: str, index: int) -> None:
    """One streamed call: the answer and its request id come back, progress notifications arrive first."""
    chunks = words(8)
    standin.script(Reply(chunks=chunks, chunk_delay_s=0.1))
    order: list[str] = []
    log = ProgressLog(order)
    with anyio.fail_after(STARTUP_S):
        result = await client.call_tool(TOOLS[provider], {"prompt": "count"}, progress_callback=log)
    order.append("result")
    rec = standin.requests[index]
    assert not result.is_error, text_of(result)
    assert text_of(result) == "".join(chunks)
    assert result.structured_content is not None
    assert result.structured_content["request_id"] == rec.request_id
    assert result.structured_content["provider"] == provider
    # Progress came first. (That it streams while the answer is written is proven in memory: a child starved of
    # CPU by a busy machine may read the whole stream in one go, and then sends a single notification.)
    assert order[-1] == "result" and order.count("progress") >= 1
    assert all(b > a for a, b in itertools.pairwise(log.values))
    assert log.messages[-1] == "".join(chunks)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_session(standin: StandIn, tmp_path: Path, mode: str) -> None:
    """Over stdio, in both eras: tools listed, both providers answer with progress first, a cancel closes upstream."""
    params = stdio_params(child_env(standin)).model_copy(update={"cwd": tmp_path})
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:  # type: ignore[arg-type]
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"ask_openai", "ask_claude"} <= names
            for index, provider in enumerate(("openai", "anthropic")):
                await answer_with_progress(client, standin, provider, index)

            # Cancel a long answer after its first token: the SDK client sends notifications/cancelled.
            standin.script(Reply(chunks=words(100), chunk_delay_s=0.1), Reply(text="still here"))
            log = ProgressLog()

            with anyio.move_on_after(STARTUP_S) as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_after_first_token() -> None:
                        await log.first.wait()
                        scope.cancel()

                    tg.start_soon(cancel_after_first_token)
                    await client.call_tool("ask_openai", {"prompt": "long"}, progress_callback=log)
                    tg.cancel_scope.cancel()
            cancelled_at = time.monotonic()
            assert scope.cancelled_caught and log.first.is_set()
            rec = await finished(standin, 2, within=UPSTREAM_CLOSED_S)
            assert rec.outcome == "client_disconnected" and rec.deltas_sent < 100
            assert rec.finished_at is not None and rec.finished_at - cancelled_at < UPSTREAM_CLOSED_S
            with anyio.fail_after(10):
                after = await client.call_tool("ask_openai", {"prompt": "again"})
            assert text_of(after) == "still here"
    assert_clean_stderr(stderr_path.read_text())


# --- raw pipes -------------------------------------------------------------------------------------------


class RawServer:
    """The server as a child process spoken to in raw JSON-RPC lines; every stdout line is kept."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.lines: list[bytes] = []
        self.messages: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def receive(self, within: float = STARTUP_S) -> dict[str, Any]:
        with anyio.fail_after(within):
            line = await self._stdout.receive_until(b"\n", 16 * 1024 * 1024)
        self.lines.append(line)
        message: dict[str, Any] = json.loads(line)
        assert message.get("jsonrpc") == "2.0", line
        self.messages.append(message)
        return message

    async def response(self, request_id: int, within: float = STARTUP_S) -> dict[str, Any]:
        """Read until the response to `request_id`, keeping the notifications seen on the way."""
        while True:
            message = await self.receive(within)
            if message.get("id") == request_id and "method" not in message:
                return message

    async def request(self, request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return await self.response(request_id)

    async def call(self, request_id: int, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        params = {"name": tool, "arguments": arguments, "_meta": {"progressToken": f"tok-{request_id}"}}
        response = await self.request(request_id, "tools/call", params)
        result: dict[str, Any] = response["result"]
        return result

    def progress(self, token: str) -> list[dict[str, Any]]:
        return [
            m["params"]
            for m in self.messages
            if m.get("method") == "notifications/progress" and m["params"]["progressToken"] == token
        ]

    async def drain(self) -> None:
        """Read stdout to its end, checking each remaining line."""
        with anyio.fail_after(5):
            while True:
                try:
                    await self.receive()
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    return


@asynccontextmanager
async def raw_server(env: dict[str, str], cwd: Path, stderr: IO[str]) -> AsyncIterator[RawServer]:
    """Start the server with raw pipes and run the legacy initialize handshake."""
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_llm_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env,
        cwd=cwd,
    )
    async with process:
        try:
            server = RawServer(process)
            init = await server.request(
                1,
                "initialize",
                {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "0"},
                },
            )
            assert init["result"]["serverInfo"]["name"] == "mcp-llm-server"
            await server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            yield server
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()


@pytest.mark.anyio
async def test_stdio_wire_is_clean(standin: StandIn, tmp_path: Path) -> None:
    """A whole DEBUG-level session writes only JSON-RPC to stdout, no key anywhere; stdin closing mid-call exits 0."""
    stderr_path = tmp_path / "stderr.txt"
    env = child_env(standin, MCP_LLM_LOG_LEVEL="DEBUG")
    with stderr_path.open("w") as stderr:
        async with raw_server(env, tmp_path, stderr) as server:
            tools = await server.request(2, "tools/list", {})
            assert {"ask_openai", "ask_claude"} <= {tool["name"] for tool in tools["result"]["tools"]}

            standin.script(Reply(chunks=words(6), chunk_delay_s=0.05), Reply(chunks=words(4), chunk_delay_s=0.05))
            answer = await server.call(3, "ask_openai", {"prompt": "count", "system": "terse"})
            assert answer["structuredContent"]["text"] == "".join(words(6)) and not answer.get("isError")
            assert server.progress("tok-3")[-1]["message"] == "".join(words(6))
            answer = await server.call(4, "ask_claude", {"prompt": "count"})
            assert answer["structuredContent"]["text"] == "".join(words(4)) and not answer.get("isError")
            assert server.progress("tok-4")

            # An upstream error that echoes both keys back.
            standin.script(Reply.error(401, message=f"Incorrect API key provided: {OPENAI_KEY} ({ANTHROPIC_KEY})"))
            failed = await server.call(5, "ask_openai", {"prompt": "hi"})
            assert failed["isError"] is True
            assert "authentication failed" in failed["content"][0]["text"]

            # A cancelled call is never answered, its upstream stream is closed, and the session goes on.
            standin.script(Reply(chunks=words(100), chunk_delay_s=0.1), Reply(text="fine"))
            params = {"name": "ask_claude", "arguments": {"prompt": "long"}, "_meta": {"progressToken": "tok-6"}}
            await server.send({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": params})
            while not server.progress("tok-6"):
                await server.receive()
            await server.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 6}})
            rec = await finished(standin, 3, within=UPSTREAM_CLOSED_S)
            assert rec.outcome == "client_disconnected" and rec.deltas_sent < 100
            answer = await server.call(7, "ask_openai", {"prompt": "next"})
            assert answer["content"][0]["text"] == "fine"

            # The host goes away (stdin closes) in the middle of a streaming call.
            standin.script(Reply(chunks=words(100), chunk_delay_s=0.1))
            params = {"name": "ask_openai", "arguments": {"prompt": "long"}, "_meta": {"progressToken": "tok-8"}}
            await server.send({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": params})
            while not server.progress("tok-8"):
                await server.receive()
            assert server.process.stdin is not None
            await server.process.stdin.aclose()
            closed_at = time.monotonic()
            with anyio.fail_after(EXIT_S):
                returncode = await server.process.wait()
            await server.drain()
    assert returncode == 0
    rec = await finished(standin, 5, within=UPSTREAM_CLOSED_S)
    assert rec.outcome == "client_disconnected" and rec.deltas_sent < 100
    assert rec.finished_at is not None and rec.finished_at - closed_at < UPSTREAM_CLOSED_S
    assert not [m for m in server.messages if m.get("id") == 6]
    stdout = b"".join(server.lines).decode()
    assert OPENAI_KEY not in stdout and ANTHROPIC_KEY not in stdout
    stderr_text = stderr_path.read_text()
    assert_clean_stderr(stderr_text)
    assert "DEBUG" in stderr_text  # the log level really was DEBUG


@pytest.mark.anyio
async def test_stdio_sigterm_mid_call(standin: StandIn, tmp_path: Path) -> None:
    """SIGTERM during a streaming call: the upstream stream is closed at once and the server exits 0, no traceback."""
    stderr_path = tmp_path / "stderr.txt"
    standin.script(Reply(chunks=words(100), chunk_delay_s=0.1))
    env = child_env(standin)
    del env["ANTHROPIC_API_KEY"]  # one provider is enough here; spares the child the other SDK's import
    with stderr_path.open("w") as stderr:
        async with raw_server(env, tmp_path, stderr) as server:
            params = {"name": "ask_openai", "arguments": {"prompt": "long"}, "_meta": {"progressToken": "tok"}}
            await server.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params})
            while not server.progress("tok"):
                await server.receive()
            server.process.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()
            with anyio.fail_after(EXIT_S):
                returncode = await server.process.wait()
            await server.drain()
    assert returncode == 0
    rec = await finished(standin, 0, within=UPSTREAM_CLOSED_S)
    assert rec.outcome == "client_disconnected" and rec.deltas_sent < 100
    assert rec.finished_at is not None and rec.finished_at - signalled_at < UPSTREAM_CLOSED_S
    assert_clean_stderr(stderr_path.read_text())
