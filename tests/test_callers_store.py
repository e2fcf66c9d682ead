"""The store's side of callers: rows kept per owner, and a version-4 database upgraded (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_llm_server.store import BudgetCap, Database, SpendStore
from mcp_llm_server.store.conversations import ConversationStore, NewTurn
from mcp_llm_server.store.db import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

LONG_CALLER = "oauth:" + "s" * 120  # the longest subject a caller id holds


def turn(prompt: str) -> NewTurn:
    usage = {"input_tokens": 3, "output_tokens": 1, "cached_input_tokens": 0}
    return NewTurn(provider="openai", model="gpt-x", system=None, prompt=prompt, answer="answer", usage=usage)


async def _version_4_database(url: str) -> None:
    """The schema as version 4 made it: no `conversations.owner`, 32-character budget scopes; one conversation."""
    from sqlalchemy import insert, text
    from sqlalchemy.ext.asyncio import create_async_engine

    from mcp_llm_server.store import _tables

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_tables.metadata.create_all)
        await conn.execute(text("DROP INDEX ix_conversations_owner"))
        await conn.execute(text("ALTER TABLE conversations DROP COLUMN owner"))
        if conn.dialect.name == "postgresql":
            for table in ("budget_spend", "budget_holds"):
                await conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN scope TYPE VARCHAR(32)"))
        await conn.execute(insert(_tables.schema_version).values(version=4))
        await conn.execute(
            text(
                "INSERT INTO conversations (id, title, created_at, updated_at, turn_count, input_tokens, "
                "output_tokens, cached_input_tokens, size_chars) VALUES ('c_old', 'old', 1, 1, 0, 0, 0, 0, 0)"
            )
        )
    await engine.dispose()


async def _version(url: str) -> Any:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar_one()
    await engine.dispose()
    return version


async def test_a_version_4_database_gains_owners_and_its_rows_stay_the_local_users(database_url: str) -> None:
    await _version_4_database(database_url)
    store = ConversationStore(Database(database_url), max_age_s=None, max_chars=None)
    try:
        assert (await store.get("c_old")) is not None  # stdio and the admin: no owner filter
        assert (await store.get("c_old", "token:bob")) is None
        assert await store.list_recent(owner="token:bob") == []
        await store.append("c_bob", turn("bob's"), "token:bob")
        assert [c.id for c in await store.list_recent(owner="token:bob")] == ["c_bob"]
        assert {c.id for c in await store.list_recent()} == {"c_old", "c_bob"}
        spend = SpendStore(store.db)
        cap = BudgetCap(f"caller:{LONG_CALLER}", "day", 10**9, "MCP_LLM_CALLER_BUDGET_DAILY_USD")
        await spend.settle(await spend.reserve([cap], 5, lease_s=60), 5, None)  # PostgreSQL: 32 characters before
        assert await spend.spent(cap.scope, "day") == 5
    finally:
        await store.db.aclose()
    assert await _version(database_url) == SCHEMA_VERSION == 5


async def test_another_owners_conversation_cannot_be_deleted_or_continued(database_url: str) -> None:
    store = ConversationStore(Database(database_url), max_age_s=None, max_chars=None)
    try:
        await store.append("c_a", turn("alice's"), "token:alice")
        assert await store.delete("c_a", "token:bob") is False
        assert (await store.get("c_a", "token:alice")) is not None
        assert await store.delete("c_a", "token:alice") is True
        assert (await store.get("c_a")) is None
    finally:
        await store.db.aclose()
