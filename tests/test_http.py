"""`--transport http`: the real server as a subprocess, reached through `mcp.Client` and plain HTTP requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from conftest import server_env, text_of
from helpers import ProgressLog, run_server, words
from http_server import INITIALIZE, MCP_HEADERS, HttpServer, child_env, free_port, running_http_server
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.cli import main
from mcp_llm_server.http import is_loopback, transport_security
from mcp_llm_server.settings import load_settings

TOKEN = "test-token-0123456789abcdef"
ALLOWED_HOST = "mcp.example.test"
BODY_LIMIT = 64 * 1024  # MCP_LLM_MAX_MESSAGE_BYTES of the stateless server


# --- servers (one of each kind for the module; the stand-in upstream is shared by them) -----------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="module")
def stateful(upstream: StandIn, workdir: Path) -> Iterator[HttpServer]:
    with running_http_server(server_env(upstream), workdir) as server:
        yield server


@pytest.fixture(scope="module")
def stateless(upstream: StandIn, workdir: Path) -> Iterator[HttpServer]:
    env = server_env(upstream, MCP_LLM_MAX_MESSAGE_BYTES=str(BODY_LIMIT))
    with running_http_server(env, workdir, "--stateless") as server:
        yield server


@pytest.fixture(scope="module")
def guarded(upstream: StandIn, workdir: Path) -> Iterator[HttpServer]:
    """Listening on every interface: so with a bearer token, and one extra allowed Host name."""
    env = server_env(upstream, MCP_LLM_HTTP_TOKEN=TOKEN, MCP_LLM_HTTP_ALLOWED_HOSTS=ALLOWED_HOST)
    with running_http_server(env, workdir, host="0.0.0.0") as server:
        yield server


# --- progress over HTTP ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["auto", "legacy"])
@pytest.mark.parametrize(("kind", "tool"), [("stateful", "ask_claude"), ("stateless", "ask_openai")])
async def test_progress_streams_before_the_result(
    request: pytest.FixtureRequest, upstream: StandIn, kind: str, tool: str, mode: str
) -> None:
    """Over Streamable HTTP (SSE responses), progress notifications arrive while the answer streams, then the result."""
    server: HttpServer = request.getfixturevalue(kind)
    chunks = words(8)
    order: list[str] = []
    log = ProgressLog(order, upstream)

    async with Client(server.mcp_url, mode=mode) as client:
        # Both SDKs imported first: a fresh server imports them (in a thread, GIL-bound) at its first calls.
        for warm_up in ("ask_openai", "ask_claude"):
            assert not (await client.call_tool(warm_up, {"prompt": "warm up"})).is_error
        upstream.clear()
        upstream.script(Reply(chunks=chunks, chunk_delay_s=0.15))
        result = await client.call_tool(tool, {"prompt": "count"}, progress_callback=log)
        order.append("result")
    assert not result.is_error, text_of(result)
    assert text_of(result) == "".join(chunks)
    assert len(log.events) >= 2 and order == ["progress"] * len(log.events) + ["result"], server.stderr()[-6000:]
    (rec,) = upstream.requests
    # The first notification reached the client while the stand-in was still streaming (its own count, no clocks).
    assert log.deltas_sent[0] < len(chunks), (log.deltas_sent, log.events, rec.delta_sent_at)
    assert log.values == sorted(set(log.values))
    assert log.messages[-1] == "".join(chunks)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["stateful", "stateless"])
async def test_tools_list_over_http(request: pytest.FixtureRequest, kind: str) -> None:
    """Both modes list the ask tools through the real client."""
    server: HttpServer = request.getfixturevalue(kind)
    async with Client(server.mcp_url) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"ask_openai", "ask_claude"} <= names


def test_healthz(stateful: HttpServer, guarded: HttpServer) -> None:
    """/healthz answers 200 without a token (load balancers probe it), whatever the Host header."""
    for server in (stateful, guarded):
        response = httpx2.get(f"{server.base_url}/healthz", headers={"host": "lb.internal"})
        assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert httpx2.post(f"{stateful.base_url}/healthz").status_code == 405


def test_request_body_limit(stateless: HttpServer) -> None:
    """A request body over MCP_LLM_MAX_MESSAGE_BYTES gets 413 before it reaches the MCP layer."""
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "ask_openai", "arguments": {}}}
    call["params"]["arguments"] = {"prompt": "x" * BODY_LIMIT}  # type: ignore[index]
    response = httpx2.post(stateless.mcp_url, json=call, headers=MCP_HEADERS)
    assert response.status_code == 413


# --- bearer token -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789ab", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"],
)
def test_request_without_the_token_gets_401(guarded: HttpServer, authorization: str | None) -> None:
    """A request without the exact bearer token is refused with 401 and a Bearer challenge."""
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["authorization"] = authorization
    response = httpx2.post(guarded.mcp_url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert TOKEN not in response.text


@pytest.mark.anyio
async def test_client_with_the_token_works(guarded: HttpServer, upstream: StandIn) -> None:
    """With the token, the real client lists and calls tools on a server bound to every interface."""
    upstream.clear()
    async with (
        create_mcp_http_client(headers={"Authorization": f"bearer {TOKEN}"}) as http,
        Client(streamable_http_client(guarded.mcp_url, http_client=http)) as client,
    ):
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert {"ask_openai", "ask_claude"} <= names
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["provider"] == "openai"
    assert TOKEN not in guarded.stderr()


# --- DNS-rebinding protection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"host": "evil.example"}, 421),
        ({"host": "evil.example:8000"}, 421),
        ({"origin": "http://evil.example"}, 403),
        ({}, 200),
        ({"origin": "http://localhost:5173"}, 200),
    ],
)
def test_foreign_host_or_origin_rejected(stateful: HttpServer, headers: dict[str, str], status: int) -> None:
    """The SDK's Host/Origin checks are on: a foreign Host gets 421, a foreign Origin 403, loopback passes."""
    response = httpx2.post(stateful.mcp_url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("host", "status"),
    [(ALLOWED_HOST, 200), (f"{ALLOWED_HOST}:443", 200), ("evil.example", 421), ("127.0.0.1", 200)],
)
def test_configured_allowed_hosts(guarded: HttpServer, host: str, status: int) -> None:
    """MCP_LLM_HTTP_ALLOWED_HOSTS adds names (with any port) to the loopback ones; others still get 421."""
    headers = {**MCP_HEADERS, "authorization": f"Bearer {TOKEN}", "host": host}
    response = httpx2.post(guarded.mcp_url, json=INITIALIZE, headers=headers)
    assert response.status_code == status, response.text


def test_transport_security_patterns() -> None:
    """Allowed hosts: loopback names, a concrete bind address, configured names with or without a port."""
    settings = load_settings(
        _env_file=None,
        http_allowed_hosts="a.example, b.example:8443, [2001:db8::1]",
        http_allowed_origins="https://app.example/",
    )
    hosts = transport_security(settings, "10.1.2.3").allowed_hosts
    for expected in ("127.0.0.1:*", "localhost", "[::1]:*", "10.1.2.3", "10.1.2.3:*", "a.example", "a.example:*"):
        assert expected in hosts
    assert "b.example:8443" in hosts and "b.example:8443:*" not in hosts
    assert "[2001:db8::1]" in hosts and "[2001:db8::1]:*" in hosts
    assert "0.0.0.0:*" not in transport_security(settings, "0.0.0.0").allowed_hosts
    assert "https://app.example" in transport_security(settings, "127.0.0.1").allowed_origins
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.com")


# --- start-up and shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "extra"),
    [("0.0.0.0", {}), ("192.0.2.1", {}), ("::", {"MCP_LLM_HTTP_TOKEN": "short"})],
)
def test_refuses_to_expose_without_a_token(tmp_path: Path, host: str, extra: dict[str, str]) -> None:
    """Beyond loopback, no (or a too short) MCP_LLM_HTTP_TOKEN stops the server at start: exit 2, one line."""
    env = child_env({"OPENAI_API_KEY": "sk-test-openai-0123456789abcdef", **extra})
    done = run_server("--transport", "http", "--host", host, "--port", str(free_port()), env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MCP_LLM_HTTP_TOKEN" in lines[0], done.stderr


def test_sigterm_shuts_down_cleanly(upstream: StandIn, tmp_path: Path) -> None:
    """SIGTERM stops the server with exit code 0 after the lifespan closed the shared upstream clients."""
    env = server_env(upstream, MCP_LLM_LOG_LEVEL="DEBUG")
    with running_http_server(env, tmp_path) as server:
        assert httpx2.post(server.mcp_url, json=INITIALIZE, headers=MCP_HEADERS).status_code == 200
    stderr = server.stderr()
    assert "shared clients closed" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv", [["--port", "8000"], ["--host", "0.0.0.0"], ["--stateless"], ["--port", "0"]])
def test_http_options_need_http_transport(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """HTTP options without `--transport http` (or a port out of range) are a usage error, exit 2."""
    args = argv if argv != ["--port", "0"] else ["--transport", "http", *argv]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err
