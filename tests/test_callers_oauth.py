"""OAuth over real HTTP: the server as a resource server of a local issuer (keys served over loopback by the test's
own event loop, tokens minted in the test). Two subjects are two callers; bad tokens are refused with the answers
the MCP authorization spec asks for (401 naming the resource metadata; 403 `insufficient_scope`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
from conftest import server_env
from helpers import words
from http_server import INITIALIZE, MCP_HEADERS, HttpServer, bearer_client, call, finished, running_http_server
from oauth_issuer import LocalIssuer, new_key

from mcp_llm_server._standin import Reply, StandIn

pytestmark = pytest.mark.anyio

RESOURCE = "https://llm.example.test/mcp"  # the public URL a proxy would serve; tokens name it as their audience
SCOPE = "mcp:tools"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the issuer serves from an asyncio server


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with LocalIssuer(audience=RESOURCE) as running:
        yield running


@pytest.fixture
def server(issuer: LocalIssuer, upstream: StandIn, tmp_path: Path) -> Iterator[HttpServer]:
    env = server_env(
        upstream,
        MCP_LLM_OAUTH_ISSUER=issuer.issuer,
        MCP_LLM_OAUTH_RESOURCE_URL=RESOURCE,
        MCP_LLM_OAUTH_REQUIRED_SCOPES=SCOPE,
        MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'oauth.db'}",
        MCP_LLM_LOG_LEVEL="INFO",
        MCP_LLM_DETACH_AFTER_S="3",
    )
    with running_http_server(env, tmp_path) as running:
        yield running


async def post(server: HttpServer, token: str | None, **headers: str) -> httpx2.Response:
    sent = {**MCP_HEADERS, **headers}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient() as http:
        return await http.post(server.mcp_url, json=INITIALIZE, headers=sent)


async def test_the_protected_resource_metadata_and_the_401_that_points_to_it(
    server: HttpServer, issuer: LocalIssuer
) -> None:
    async with httpx2.AsyncClient() as http:
        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            metadata = (await http.get(server.base_url + path)).json()
            assert metadata["resource"] == RESOURCE and metadata["authorization_servers"] == [issuer.issuer]
            assert metadata["scopes_supported"] == [SCOPE]
    refused = await post(server, None)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'resource_metadata="https://llm.example.test/.well-known/oauth-protected-resource/mcp"' in challenge


@pytest.mark.parametrize(
    "bad",
    ["expired", "wrong audience", "wrong issuer", "bad signature", "no subject", "alg none", "garbage"],
)
async def test_a_bad_access_token_gets_401(server: HttpServer, issuer: LocalIssuer, bad: str) -> None:
    token = {
        "expired": lambda: issuer.mint(scope=SCOPE, exp_in=-120),
        "wrong audience": lambda: issuer.mint(scope=SCOPE, aud="https://other.example.test/mcp"),
        "wrong issuer": lambda: issuer.mint(scope=SCOPE, iss="https://evil.example.test"),
        "bad signature": lambda: issuer.mint(scope=SCOPE, key=new_key("RSA")),
        "no subject": lambda: issuer.mint(scope=SCOPE, sub=None),
        "alg none": lambda: issuer.mint(scope=SCOPE, alg="none"),
        "garbage": lambda: "not-a-jwt-at-all-0123456789",
    }[bad]()
    refused = await post(server, token)
    assert refused.status_code == 401, refused.text
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert token not in server.stderr()


async def test_a_token_without_the_required_scope_gets_403(server: HttpServer, issuer: LocalIssuer) -> None:
    refused = await post(server, issuer.mint(scope="profile"))
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and f'scope="{SCOPE}"' in challenge
    assert (await post(server, issuer.mint(scope=f"profile {SCOPE}"))).status_code == 200


async def test_two_subjects_are_two_callers(server: HttpServer, issuer: LocalIssuer, upstream: StandIn) -> None:
    upstream.clear()
    alice, bob = issuer.mint(sub="alice-1", scope=SCOPE), issuer.mint(sub="bob-2", scope=SCOPE)
    async with bearer_client(server.mcp_url, alice) as client:
        failed, asked, said = await finished(client, "ask_openai", prompt="alice's plan")
        assert not failed and asked["conversation_id"], said
        mine = asked["conversation_id"]
        _, usage, _ = await call(client, "usage_report")
        assert usage["caller"] == "oauth:alice-1" and usage["today"]["calls"] == 1
    async with bearer_client(server.mcp_url, bob) as client:
        _, listed, _ = await call(client, "list_conversations")
        failed, _, _ = await call(client, "get_conversation", conversation_id=mine)
        _, usage, _ = await call(client, "usage_report")
    assert mine not in json.dumps(listed) and failed
    assert usage["caller"] == "oauth:bob-2" and usage["today"]["calls"] == 0
    opened = await post(server, alice)
    session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
    async with httpx2.AsyncClient() as http:
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        stolen = await http.post(
            server.mcp_url, json=listing, headers={**MCP_HEADERS, **session, "authorization": f"Bearer {bob}"}
        )
    assert stolen.status_code == 404
    assert issuer.jwks_requests == 1  # the keys were fetched once, and cached


async def test_a_subjects_detached_answer_is_not_anothers(
    server: HttpServer, issuer: LocalIssuer, upstream: StandIn
) -> None:
    upstream.clear()
    upstream.script(Reply(chunks=words(60), chunk_delay_s=0.15))  # about 9 s: detaches at 3 s
    alice, bob = issuer.mint(sub="alice-1", scope=SCOPE), issuer.mint(sub="bob-2", scope=SCOPE)
    async with bearer_client(server.mcp_url, alice) as client:
        _, running, _ = await call(client, "ask_claude", prompt="a long one")
        assert running["status"] == "running"
        async with bearer_client(server.mcp_url, bob) as other:
            failed, _, said = await call(other, "get_answer", answer_id=running["answer_id"], wait_s=0)
            assert failed and "No answer has the id" in said
            failed, _, said = await call(other, "cancel_answer", answer_id=running["answer_id"])
            assert failed and "No answer has the id" in said
        _, done, _ = await finished(client, "get_answer", answer_id=running["answer_id"])
        assert done["status"] == "complete"
