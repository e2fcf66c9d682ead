"""Named-token callers over real HTTP: each one's conversations, answers and sessions are its own.

The server runs as a subprocess with `MCP_LLM_HTTP_TOKENS` (alice, bob, and ops, the admin); clients are the real
`mcp.Client` over Streamable HTTP. Another caller's id behaves exactly as an id that does not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx2
import pytest
from conftest import server_env
from helpers import words
from http_server import INITIALIZE, MCP_HEADERS, HttpServer, bearer_client, call, finished, running_http_server
from mcp import Client

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.store import Database
from mcp_llm_server.store.conversations import ConversationStore

pytestmark = pytest.mark.anyio

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef", "ops": "ops-token-0123456789ab"}
DETACH_S = "3"


@pytest.fixture(scope="module")
def database_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("callers") / "shared.db"


@pytest.fixture(scope="module")
def server(upstream: StandIn, database_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    env = server_env(
        upstream,
        MCP_LLM_HTTP_TOKENS=json.dumps(TOKENS),
        MCP_LLM_ADMIN_CALLER="token:ops",
        MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{database_file}",
        MCP_LLM_DETACH_AFTER_S=DETACH_S,
    )
    with running_http_server(env, tmp_path_factory.mktemp("callers-run")) as running:
        yield running


def client_as(server: HttpServer, name: str) -> AbstractAsyncContextManager[Client]:
    return bearer_client(server.mcp_url, TOKENS[name])


async def test_each_caller_sees_only_its_own_conversations(server: HttpServer, upstream: StandIn) -> None:
    upstream.clear()
    async with client_as(server, "alice") as alice:
        failed, asked, said = await finished(alice, "ask_openai", prompt="alice's secret plan")
        assert not failed and asked["conversation_id"], said
        mine = asked["conversation_id"]
    async with client_as(server, "bob") as bob:
        _, listed, _ = await call(bob, "list_conversations")
        assert mine not in json.dumps(listed)
        failed_get, _, got = await call(bob, "get_conversation", conversation_id=mine)
        failed_none, _, nothing = await call(bob, "get_conversation", conversation_id="c_" + "0" * 24)
        assert failed_get and failed_none
        assert got.replace(mine, "ID") == nothing.replace("c_" + "0" * 24, "ID")  # as if it did not exist
        assert "secret plan" not in got
        failed, _, continued = await call(bob, "ask_openai", prompt="and then?", conversation_id=mine)
        assert failed and "No conversation" in continued
        _, deleted, _ = await call(bob, "delete_conversation", conversation_id=mine)
        assert deleted["deleted"] is False
        with pytest.raises(Exception, match=r"(?i)no conversation"):
            await bob.read_resource(f"conversation://{mine}")
    async with client_as(server, "alice") as alice:
        failed, detail, _ = await call(alice, "get_conversation", conversation_id=mine)
        assert not failed and detail["turns"][0]["prompt"] == "alice's secret plan"
        _, listed, _ = await call(alice, "list_conversations")
        assert mine in json.dumps(listed)
    async with client_as(server, "ops") as admin:
        _, listed, _ = await call(admin, "list_conversations")
        assert mine in json.dumps(listed)


async def test_a_detached_answer_is_its_callers_alone(server: HttpServer, upstream: StandIn) -> None:
    upstream.clear()
    upstream.script(Reply(chunks=words(60), chunk_delay_s=0.15))  # about 9 s: detaches at 3 s
    async with client_as(server, "alice") as alice:
        _, running, _ = await call(alice, "ask_claude", prompt="a long one")
        assert running["status"] == "running"
        answer_id = running["answer_id"]
        async with client_as(server, "bob") as bob:
            for tool in ("get_answer", "cancel_answer"):
                failed, _, said = await call(
                    bob, tool, answer_id=answer_id, **({"wait_s": 0} if tool == "get_answer" else {})
                )
                assert failed and "No answer has the id" in said
        _, done, _ = await finished(alice, "get_answer", answer_id=answer_id)
        assert done["status"] == "complete"


def test_a_session_is_bound_to_the_caller_that_opened_it(server: HttpServer) -> None:
    opened = httpx2.post(
        server.mcp_url, json=INITIALIZE, headers={**MCP_HEADERS, "authorization": f"Bearer {TOKENS['alice']}"}
    )
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    headers = {**MCP_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"}
    stolen = httpx2.post(server.mcp_url, json=listing, headers={**headers, "authorization": f"Bearer {TOKENS['bob']}"})
    assert stolen.status_code == 404
    own = httpx2.post(server.mcp_url, json=listing, headers={**headers, "authorization": f"Bearer {TOKENS['alice']}"})
    assert own.status_code == 200


@pytest.mark.parametrize(
    "authorization", [None, "Bearer alice", f"Bearer {TOKENS['alice']}x", f"Basic {TOKENS['bob']}"]
)
def test_an_unknown_token_gets_401(server: HttpServer, authorization: str | None) -> None:
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["authorization"] = authorization
    response = httpx2.post(server.mcp_url, json=INITIALIZE, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert not any(token in response.text for token in TOKENS.values())


async def test_stdio_sees_every_conversation_and_the_tokens_stay_out_of_the_log(
    server: HttpServer, database_file: Path
) -> None:
    """The local user (stdio) owns everything on the database; the named tokens never reach stderr."""
    store = ConversationStore(Database(f"sqlite+aiosqlite:///{database_file}"), max_age_s=None, max_chars=None)
    try:
        everyone = await store.list_recent()
        alices = await store.list_recent(owner="token:alice")
    finally:
        await store.db.aclose()
    assert alices and len(everyone) >= len(alices)
    assert not any(token in server.stderr() for token in TOKENS.values())


@pytest.fixture(scope="module")
def budgeted(upstream: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """Alice and ops may spend up to $1 a day each (the default), bob $0; all together $0.50 a day."""
    folder = tmp_path_factory.mktemp("budgeted")
    env = server_env(
        upstream,
        MCP_LLM_HTTP_TOKENS=json.dumps(TOKENS),
        MCP_LLM_ADMIN_CALLER="token:ops",
        MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{folder / 'budgets.db'}",
        MCP_LLM_MODEL_PRICES=json.dumps({"priced": {"input_per_mtok": 1000, "output_per_mtok": 1000}}),
        MCP_LLM_BUDGET_DAILY_USD="0.5",
        MCP_LLM_CALLER_BUDGET_DAILY_USD="1",
        MCP_LLM_CALLER_BUDGETS=json.dumps({"token:bob": {"daily_usd": 0}}),
    )
    with running_http_server(env, folder) as running:
        yield running


async def test_budgets_are_each_callers_own_and_a_shared_cap_hides_others_spend(
    budgeted: HttpServer, upstream: StandIn
) -> None:
    upstream.clear()
    small = {"prompt": "hi", "model": "priced", "max_tokens": 20}  # at most about $0.04
    async with client_as(budgeted, "alice") as alice:
        failed, _, said = await finished(alice, "ask_openai", **small)
        assert not failed, said
    async with client_as(budgeted, "bob") as bob:
        failed, _, refused = await call(bob, "ask_openai", **small)
        assert failed and "your daily budget as caller token:bob" in refused
        _, own, _ = await call(bob, "usage_report")
        assert own["caller"] == "token:bob" and own["today"]["calls"] == 0 and "by_caller" not in own["today"]
        assert all("spent_usd" not in cap for cap in own["budgets"] if not cap["scope"].startswith("caller:"))
    async with client_as(budgeted, "alice") as alice:
        failed, _, shared = await call(alice, "ask_openai", **{**small, "max_tokens": 600})  # over the $0.50 shared
        assert failed and "shared by every caller" in shared and "already spent" not in shared
    async with client_as(budgeted, "ops") as admin:
        _, everyone, _ = await call(admin, "usage_report")
        assert [row["caller"] for row in everyone["today"]["by_caller"]] == ["token:alice"]
    assert len([r for r in upstream.requests if r.method == "POST"]) == 1  # the refusals sent nothing
