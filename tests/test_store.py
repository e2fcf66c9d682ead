"""The store on its own: lazy opening, WAL, the schema version check, expiry, and writers that share one file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mcp_llm_server.store import (
    BudgetCap,
    BudgetExceeded,
    ConversationStore,
    Database,
    LedgerEntry,
    NewTurn,
    SpendStore,
    StoreError,
)
from mcp_llm_server.store.db import SCHEMA_VERSION

pytestmark = pytest.mark.anyio

LONG = 172_800.0  # a lease outlasting the test's jumps of the clock


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def turn(prompt: str, answer: str = "answer") -> NewTurn:
    usage = {"input_tokens": 3, "output_tokens": 1, "cached_input_tokens": 0}
    return NewTurn(provider="openai", model="gpt-x", system=None, prompt=prompt, answer=answer, usage=usage)


def test_building_the_server_imports_no_sqlalchemy() -> None:
    """Start-up does not pay for the database: building the server imports neither SQLAlchemy nor aiosqlite."""
    code = (
        "import sys\n"
        "from mcp_llm_server.server import build_server\n"
        "from mcp_llm_server.settings import load_settings\n"
        "build_server(load_settings(_env_file=None))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'aiosqlite')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_running_server_opens_the_database_in_the_background(tmp_path: Path) -> None:
    """...but once it runs, the database's modules are imported and the database opened in the background, before
    any call: a detaching request waits for its answer's row, and a cold open then came on top of the detach limit."""
    code = (
        "import os, sys, anyio\n"
        "from mcp_llm_server.settings import load_settings\n"
        "from mcp_llm_server.state import app_lifespan\n"
        "async def main():\n"
        "    key = 'sk-test-0123456789abcdef'\n"
        "    settings = load_settings(_env_file=None, openai_api_key=key, database_url=sys.argv[1])\n"
        "    async with app_lifespan(settings):\n"
        "        with anyio.move_on_after(30):\n"
        "            while 'mcp_llm_server.store._tables' not in sys.modules or not os.path.exists(sys.argv[2]):\n"
        "                await anyio.sleep(0.01)\n"
        "    print(sorted(m for m in sys.modules if m in ('sqlalchemy.ext.asyncio', 'mcp_llm_server.store._tables')))\n"
        "anyio.run(main)\n"
    )
    args = [sys.executable, "-c", code, url(tmp_path / "c.db"), str(tmp_path / "c.db")]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "['mcp_llm_server.store._tables', 'sqlalchemy.ext.asyncio']"
    assert (tmp_path / "c.db").exists()  # opened, its schema made
    # ...and the exit right after did not hang: cancelled halfway, an open left SQLAlchemy's graceful-close task
    # waiting for a driver thread that was gone (asyncio's exit waited for it: 60 s timeouts, 3 runs in 6).


async def test_opened_lazily_in_wal_mode(tmp_path: Path) -> None:
    """Nothing is created until first use; then the file (and its directory) exist, in WAL mode, at this version."""
    path = tmp_path / "deep" / "dir" / "c.db"
    store = ConversationStore(Database(url(path)), max_age_s=None, max_chars=None)
    assert not path.exists()
    assert await store.list_recent() == []
    await store.db.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_newer_schema_refused(tmp_path: Path) -> None:
    """A database written by a newer release is refused with a message that says so, and is left untouched."""
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION + 1,))
    store = ConversationStore(Database(url(path)), max_age_s=None, max_chars=None)
    with pytest.raises(StoreError, match="newer than this mcp-llm-server knows"):
        await store.list_recent()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"schema_version"}


async def test_not_a_database_url(tmp_path: Path) -> None:
    """A malformed MCP_LLM_DATABASE_URL gives a StoreError naming the variable."""
    store = ConversationStore(Database("not a url"), max_age_s=None, max_chars=None)
    with pytest.raises(StoreError, match="MCP_LLM_DATABASE_URL"):
        await store.list_recent()


async def test_expiry_by_age(database_url: str) -> None:
    """Conversations not updated within the age limit are hidden at once and deleted at the next write."""
    now = [1_000_000.0]
    store = ConversationStore(Database(database_url), max_age_s=3600, max_chars=None, clock=lambda: now[0])
    await store.append("old", turn("old question"))
    now[0] += 1800
    await store.append("recent", turn("recent question"))
    now[0] += 2000  # "old" is now 3800 s old, "recent" 2000 s
    assert [s.id for s in await store.list_recent()] == ["recent"]
    assert await store.get("old") is None
    await store.append("new", turn("new question"))
    now[0] -= 10_000  # back in time: an expired row would show again unless it was deleted
    assert sorted(s.id for s in await store.list_recent()) == ["new", "recent"]
    await store.db.aclose()


async def test_turn_totals_and_order(database_url: str) -> None:
    """Turns come back in order, with the conversation's title, token totals and models used."""
    store = ConversationStore(Database(database_url), max_age_s=None, max_chars=None)
    for n in range(3):
        assert await store.append("c1", turn(f"question {n}")) == n
    conversation = await store.get("c1")
    assert conversation is not None
    assert [t.turn.prompt for t in conversation.turns] == ["question 0", "question 1", "question 2"]
    summary = conversation.summary
    assert (summary.title, summary.turn_count, summary.input_tokens, summary.output_tokens) == ("question 0", 3, 9, 3)
    assert summary.models == ("gpt-x",)
    assert await store.delete("c1") and not await store.delete("c1")
    await store.db.aclose()


async def test_two_stores_on_one_file_lose_no_turn(database_url: str) -> None:
    """Two engines (as two server processes have) append to one conversation: every turn kept."""
    stores = [ConversationStore(Database(database_url), max_age_s=None, max_chars=None) for _ in range(2)]
    await stores[0].append("shared", turn("first"))

    async def write(store: ConversationStore, label: str) -> None:
        for n in range(10):
            await store.append("shared", turn(f"{label}{n}"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, stores[0], "a")
        tg.start_soon(write, stores[1], "b")
    conversation = await stores[1].get("shared")
    assert conversation is not None
    assert [t.index for t in conversation.turns] == list(range(21))
    assert conversation.summary.turn_count == 21
    assert sorted(t.turn.prompt for t in conversation.turns[1:]) == sorted(
        [f"a{n}" for n in range(10)] + [f"b{n}" for n in range(10)]
    )
    for store in stores:
        await store.db.aclose()


def test_settings_of_this_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """MCP_LLM_FILE_ROOTS splits like PATH; a password in MCP_LLM_DATABASE_URL is redacted like the keys."""
    from mcp_llm_server.settings import load_settings

    monkeypatch.setenv("MCP_LLM_FILE_ROOTS", f"/srv/a{os.pathsep} /srv/b ")
    monkeypatch.setenv("MCP_LLM_DATABASE_URL", "postgresql+asyncpg://app:hunter2-db-pass@db:5432/llm")
    settings = load_settings(_env_file=None)
    assert settings.file_roots == ["/srv/a", "/srv/b"]
    assert "hunter2-db-pass" in settings.secrets()
    assert (settings.history_max_chars, settings.conversation_max_age_days) == (200_000, 30)
    assert (settings.max_file_bytes, settings.max_files_total_bytes, settings.allow_secret_files) == (
        524_288,
        1_048_576,
        False,
    )


async def test_version_1_database_migrated(tmp_path: Path) -> None:
    """A database of schema version 1 (conversations only) gains the ledger tables and version 2, turns kept."""
    path = tmp_path / "c.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
    store = ConversationStore(Database(url(path)), max_age_s=None, max_chars=None)
    await store.append("c1", turn("kept"))
    spend = SpendStore(store.db)
    await spend.settle(await spend.reserve([], 0, lease_s=60), 0, None)
    assert (await spend.report())["today"]["calls"] == 0
    await store.db.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"ledger", "budget_spend", "conversations", "turns"} <= tables


async def test_reserve_settle_and_the_next_window(database_url: str) -> None:
    """Reservations fill a cap exactly, a refusal says which cap and when it resets, settlement frees the rest."""
    now = [1_795_000_000.0]
    spend = SpendStore(Database(database_url), clock=lambda: now[0])
    caps = [BudgetCap("global", "day", 100, "MCP_LLM_BUDGET_DAILY_USD"), BudgetCap("openai", "month", 1000, "X")]
    held = [await spend.reserve(caps, 40, lease_s=LONG), await spend.reserve(caps, 60, lease_s=LONG)]
    with pytest.raises(BudgetExceeded) as refused:
        await spend.reserve(caps, 1, lease_s=LONG)
    assert refused.value.cap.period == "day" and refused.value.spent_nanos == 100
    assert refused.value.resets_at.timestamp() > now[0]
    assert await spend.spent("openai", "month") == 100  # the refused reservation left nothing behind
    entry = LedgerEntry("openai", "m", 10, 0, 5, None, 25, None, "ask_openai", "stdio")
    await spend.settle(held[0], 25, entry)
    assert await spend.spent("global", "day") == 85
    await spend.reserve(caps, 15, lease_s=LONG)
    now[0] += 86_400.0
    assert await spend.spent("global", "day") == 0
    await spend.reserve(caps, 100, lease_s=LONG)
    assert await spend.spent("openai", "month") == 200
    await spend.db.aclose()


async def test_replicas_opening_an_empty_database_together(database_url: str) -> None:
    """Eight engines (as replicas starting together) opening one empty database: each gets the schema, none fails."""
    stores = [ConversationStore(Database(database_url), max_age_s=None, max_chars=None) for _ in range(8)]
    async with anyio.create_task_group() as tg:
        for n, store in enumerate(stores):
            tg.start_soon(store.append, f"c{n}", turn(f"question {n}"))
    assert len(await stores[0].list_recent()) == 8
    for store in stores:
        await store.db.aclose()
