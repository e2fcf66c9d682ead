"""`--transport http` under abuse: half-open connections, slow headers and bodies, session floods, dropped clients.

Each scenario runs the real server as a subprocess with low bounds set through its settings; the attackers are
plain sockets on loopback, bounded in count, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio
import httpx2
import pytest
from conftest import server_env
from http_server import INITIALIZE, HttpServer, running_http_server
from http_server import MCP_HEADERS as PLAIN_HEADERS
from test_stdio import finished

from mcp_llm_server._standin import Reply, StandIn

TOKEN = "abuse-token-0123456789abcdef"
MCP_HEADERS = {**PLAIN_HEADERS, "authorization": f"Bearer {TOKEN}"}
SERVER_NOFILE = 256  # the server's file-descriptor limit in the slowloris test
MAX_CONNECTIONS = 40
HALF_OPEN = 300  # well above both: without a connection limit the server runs out of descriptors
SHORT_S = 2.0  # header and body deadline, session idle expiry of the `strict` server
MAX_SESSIONS = 4
CUT_WITHIN_S = 20.0  # generous: the machine is shared


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVER_NOFILE, SERVER_NOFILE))


@pytest.fixture(scope="module")
def crowded(upstream: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """At most MAX_CONNECTIONS connections, a header deadline longer than the test: only the limit helps."""
    env = server_env(upstream, MCP_LLM_HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS), MCP_LLM_HTTP_HEADER_TIMEOUT_S="600")
    with running_http_server(env, tmp_path_factory.mktemp("crowded"), preexec_fn=_low_nofile) as server:
        yield server


@pytest.fixture(scope="module")
def strict(upstream: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    env = server_env(
        upstream,
        MCP_LLM_HTTP_TOKEN=TOKEN,
        MCP_LLM_HTTP_HEADER_TIMEOUT_S=str(SHORT_S),
        MCP_LLM_HTTP_BODY_TIMEOUT_S=str(SHORT_S),
        MCP_LLM_HTTP_MAX_SESSIONS=str(MAX_SESSIONS),
        MCP_LLM_HTTP_SESSION_IDLE_S=str(SHORT_S),
    )
    with running_http_server(env, tmp_path_factory.mktemp("strict")) as server:
        yield server


@pytest.fixture(scope="module")
def stateful(upstream: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    with running_http_server(server_env(upstream), tmp_path_factory.mktemp("stateful")) as server:
        yield server


# --- connections and headers ------------------------------------------------------------------------------


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True once the server closed the connection (after any response it wrote), False on `seconds` of silence."""
    try:
        with anyio.fail_after(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


@pytest.mark.anyio
async def test_half_open_connections_do_not_lock_clients_out(crowded: HttpServer) -> None:
    """HALF_OPEN connections that never finish their headers, more than the server's file descriptors: new
    connections push out the oldest half-open ones, so a new client still gets /healthz and MCP answers."""
    attackers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(HALF_OPEN):
            reader, writer = await asyncio.open_connection("127.0.0.1", crowded.port)
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            attackers.append((reader, writer))
        async with httpx2.AsyncClient(timeout=10) as client:
            health = await client.get(f"{crowded.base_url}/healthz")
            headers = {k: v for k, v in MCP_HEADERS.items() if k != "authorization"}
            init = await client.post(crowded.mcp_url, json=INITIALIZE, headers=headers)
        assert health.status_code == 200 and init.status_code == 200, crowded.stderr()[-3000:]
        closed = [await _closed_within(reader, 0.5) for reader, _ in attackers[: HALF_OPEN - MAX_CONNECTIONS]]
        assert all(closed), f"{closed.count(False)} of the oldest half-open connections are still open"
    finally:
        for _, writer in attackers:
            writer.close()


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, filler: bytes) -> tuple[float, bytes]:
    """Send `filler` a byte every 0.3 s until the server closes (or CUT_WITHIN_S): the time it took and what came."""
    start = time.monotonic()
    response = b""
    try:
        while time.monotonic() - start < CUT_WITHIN_S:
            with anyio.move_on_after(0.3):
                data = await reader.read(4096)
                if not data:
                    break
                response += data
            writer.write(filler)
    except OSError:
        pass
    finally:
        writer.close()
    return time.monotonic() - start, response


@pytest.mark.anyio
async def test_headers_must_complete_in_time(strict: HttpServer) -> None:
    """A connection that trickles its headers a byte at a time is closed (408) once the header deadline passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    elapsed, response = await trickle(reader, writer, b"X")
    assert SHORT_S * 0.9 <= elapsed < CUT_WITHIN_S, f"not cut in {elapsed:.1f} s"
    assert response.startswith(b"HTTP/1.1 408"), response


# --- request body -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_slow_body_with_a_valid_token_is_cut(strict: HttpServer) -> None:
    """A POST with the right token whose body arrives a byte at a time gets 408 and a close at the body deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    head = "".join(f"{name}: {value}\r\n" for name, value in MCP_HEADERS.items())
    writer.write(f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}Content-Length: 10000\r\n\r\n{{".encode())
    elapsed, response = await trickle(reader, writer, b" ")
    assert SHORT_S * 0.9 <= elapsed < CUT_WITHIN_S, f"not cut in {elapsed:.1f} s"
    assert response.startswith(b"HTTP/1.1 408"), response
    assert b"request body not received" in response


# --- sessions ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_initialize_flood_is_bounded_and_idle_sessions_expire(strict: HttpServer) -> None:
    """Many `initialize` requests open at most MAX_SESSIONS sessions; the rest get 503 with Retry-After; once the
    idle sessions expire a new client gets in."""
    async with httpx2.AsyncClient(timeout=10) as client:
        statuses = []
        for _ in range(MAX_SESSIONS * 5):
            response = await client.post(strict.mcp_url, json=INITIALIZE, headers=MCP_HEADERS)
            statuses.append(response.status_code)
            if response.status_code == 503:
                refused = response
        assert statuses.count(200) == MAX_SESSIONS and statuses.count(503) == MAX_SESSIONS * 4, statuses
        assert refused.headers["retry-after"] == str(int(SHORT_S))
        assert "Too many open sessions" in refused.text
        deadline = time.monotonic() + CUT_WITHIN_S
        status = 503
        while status == 503 and time.monotonic() < deadline:
            await anyio.sleep(0.2)
            status = (await client.post(strict.mcp_url, json=INITIALIZE, headers=MCP_HEADERS)).status_code
        assert status == 200, f"no new session {CUT_WITHIN_S} s after the flood"


# --- a dropped client -------------------------------------------------------------------------------------


async def _open_session(client: httpx2.AsyncClient, url: str) -> dict[str, str]:
    response = await client.post(url, json=INITIALIZE, headers=MCP_HEADERS)
    assert response.status_code == 200, response.text
    headers = {
        **MCP_HEADERS,
        "mcp-session-id": response.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await client.post(url, json=initialized, headers=headers)).status_code == 202
    return headers


def _call(request_id: int, prompt: str) -> dict[str, object]:
    params = {"name": "ask_openai", "arguments": {"prompt": prompt}, "_meta": {"progressToken": f"p{request_id}"}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


@pytest.mark.anyio
async def test_dropped_stateful_client_stops_its_upstream_call(stateful: HttpServer, upstream: StandIn) -> None:
    """In stateful mode a client that drops its POST mid-answer has the call cancelled: the upstream stream is
    closed long before its end, and the session goes on."""
    upstream.clear()
    upstream.script(Reply(chunks=[f"w{i} " for i in range(100)], chunk_delay_s=0.1), Reply(text="still here"))
    async with httpx2.AsyncClient(timeout=30) as client:
        headers = await _open_session(client, stateful.mcp_url)
        async with (
            httpx2.AsyncClient(timeout=30) as dropping,
            dropping.stream("POST", stateful.mcp_url, json=_call(2, "long"), headers=headers) as stream,
        ):
            async for line in stream.aiter_lines():
                if "notifications/progress" in line:
                    break  # the answer is streaming: drop the connection now
        dropped_at = time.monotonic()
        rec = await finished(upstream, 0, within=CUT_WITHIN_S)
        assert rec.outcome == "client_disconnected" and rec.deltas_sent < 100, rec
        assert rec.finished_at is not None and rec.finished_at - dropped_at < CUT_WITHIN_S
        response = await client.post(stateful.mcp_url, json=_call(3, "again"), headers=headers)
    assert response.status_code == 200
    data = next(line for line in response.text.splitlines() if line.startswith("data:") and '"id":3' in line)
    assert json.loads(data[5:])["result"]["structuredContent"]["text"] == "still here"


def test_connection_limit_fits_the_descriptor_limit() -> None:
    """The soft descriptor limit is raised to hold the connections; if the hard limit is too low, the connection
    limit is lowered instead (accept() would otherwise fail with EMFILE before the limit is reached)."""
    script = (
        "import resource; from mcp_llm_server.http import connection_limit;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 300));"
        "print(connection_limit(50), resource.getrlimit(resource.RLIMIT_NOFILE)[0], connection_limit(1000))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["50", "178", str(300 - 128)], done.stderr
