"""The store when things go wrong: a process killed holding a reservation, a database locked by another process,
text PostgreSQL refuses, a database that cannot be created or reached, a connection dropped; and through the real
MCP client, a locked database still gives the caller the answer that was paid for."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from conftest import SettingsFactory, server_env, text_of
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.store import (
    BudgetCap,
    BudgetExceeded,
    ConversationStore,
    Database,
    LedgerEntry,
    NewTurn,
    SettlementFailed,
    SpendStore,
    StoredFile,
    StoreError,
)
from mcp_llm_server.store.db import SCHEMA_VERSION

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
async def _sqlite_threads_finished() -> AsyncIterator[None]:
    """aiosqlite stops the worker thread of a failed connect asynchronously; a thread still finishing when the test's
    event loop closes reports "Event loop is closed". Wait (bounded) for those threads before the loop goes."""
    yield
    import threading

    with anyio.move_on_after(5):
        while any("_connection_worker_thread" in t.name for t in threading.enumerate()):  # noqa: ASYNC110
            await anyio.sleep(0.01)  # a thread, not a task: there is no event to wait on


NOW = 1_795_000_000.0  # 2026-11-18 03:06 UTC: far from a day's or a month's end
CAP = [BudgetCap("global", "month", 100, "MCP_LLM_BUDGET_MONTHLY_USD")]
WAIT_S = 60.0  # generous bounds for a loaded machine; reached only when something is wrong


def sqlite_url(path: Path, busy_timeout_s: float | None = None) -> str:
    query = "" if busy_timeout_s is None else f"?timeout={busy_timeout_s:g}"
    return f"sqlite+aiosqlite:///{path}{query}"


def entry(model: str = "gpt-x", cost: int = 30) -> LedgerEntry:
    return LedgerEntry("openai", model, 10, 0, 5, None, cost, None, "ask_openai", "stdio")


def turn(prompt: str = "question", answer: str = "answer", **extra: Any) -> NewTurn:
    return NewTurn(provider="openai", model="gpt-x", system=None, prompt=prompt, answer=answer, **extra)


class Child:
    """A Python child process speaking in lines on stdin/stdout."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._lines = BufferedByteReceiveStream(process.stdout)

    @classmethod
    async def start(cls, code: str, *args: str, env: dict[str, str] | None = None) -> Child:
        return cls(await anyio.open_process([sys.executable, "-c", code, *args], env=env, stderr=None))

    async def read_line(self) -> str:
        """The child's next line; fails the test (rather than hanging) when none comes."""
        with anyio.fail_after(WAIT_S):
            return (await self._lines.receive_until(b"\n", 1000)).decode().strip()

    async def say(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(b"\n")

    async def kill_9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(WAIT_S):
            assert await self.process.wait() == -signal.SIGKILL
        await self.process.aclose()

    async def aclose(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.aclose()


# --- item 7: a process killed mid-call frees its reservation by the lease ---------------------------------------

_HOLDER = """
import sys, time, anyio
from mcp_llm_server.store import BudgetCap, Database, SpendStore

async def main() -> None:
    spend = SpendStore(Database(sys.argv[1]), clock=lambda: float(sys.argv[2]))
    await spend.reserve([BudgetCap("global", "month", 100, "X")], 90, lease_s=600)
    print("held", flush=True)
    await anyio.sleep(3600)  # "mid-call": the answer never comes, the process is killed

anyio.run(main)
"""


async def test_reservation_of_a_killed_process_expires(database_url: str) -> None:
    """A process killed (SIGKILL) holding $0.09 of a $0.10 cap: the cap is full until the lease ends, then free."""
    child = await Child.start(_HOLDER, database_url, str(NOW))
    try:
        assert await child.read_line() == "held"
    finally:
        await child.kill_9()
    now = [NOW + 1]
    spend = SpendStore(Database(database_url), clock=lambda: now[0])
    assert await spend.spent("global", "month") == 90
    with pytest.raises(BudgetExceeded):
        await spend.reserve(CAP, 20, lease_s=600)
    now[0] = NOW + 601  # the killed process's lease has ended
    assert await spend.spent("global", "month") == 0
    await spend.reserve(CAP, 90, lease_s=600)
    assert await spend.spent("global", "month") == 90
    await spend.db.aclose()


async def test_lease_boundary_and_settled_spend(database_url: str) -> None:
    """A hold counts until its lease ends; settled spend counts for good; a settled hold is gone at once."""
    now = [NOW]
    spend = SpendStore(Database(database_url), clock=lambda: now[0])
    first = await spend.reserve(CAP, 60, lease_s=30)
    now[0] += 29
    with pytest.raises(BudgetExceeded) as refused:
        await spend.reserve(CAP, 50, lease_s=30)
    assert refused.value.spent_nanos == 60
    second = await spend.reserve(CAP, 40, lease_s=30)
    await spend.settle(second, 25, entry(cost=25))  # 25 spent for good, the hold of 40 released
    assert await spend.spent("global", "month") == 60 + 25
    now[0] += 2  # the first lease has ended (it was never settled)
    assert await spend.spent("global", "month") == 25
    await spend.reserve(CAP, 75, lease_s=30)
    await spend.settle(first, 10, None)  # settled after its lease: its actual cost still counts
    assert await spend.spent("global", "month") == 25 + 75 + 10
    with pytest.raises(ValueError, match="lease_s"):
        await spend.reserve(CAP, 1, lease_s=0)
    await spend.db.aclose()


_PAID_SERVER = """
import anyio
from mcp import Client
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import load_settings

async def main() -> None:
    async with Client(build_server(load_settings(_env_file=None)), raise_exceptions=True) as client:
        await client.call_tool("ask_openai", {"prompt": "x" * 40, "model": "metered", "max_tokens": 100})

anyio.run(main)
"""

METERED = {"metered": {"input_per_mtok": 1000, "output_per_mtok": 1000}}  # a call reserves $0.126


async def test_server_killed_mid_call_frees_the_budget(
    make_settings: SettingsFactory, standin: StandIn, database_url: str
) -> None:
    """The real server in a process killed -9 while its upstream call runs: after the lease a new call fits."""
    standin.default_reply = Reply(delay_s=3600, input_tokens=26, output_tokens=50)
    env = server_env(
        standin,
        MCP_LLM_DATABASE_URL=database_url,
        MCP_LLM_BUDGET_MONTHLY_USD="0.2",
        MCP_LLM_MODEL_PRICES=json.dumps(METERED),
        MCP_LLM_CALL_TIMEOUT_S="60",
        MCP_LLM_MAX_CALL_TIMEOUT_S="60",
        PATH=os.environ.get("PATH", ""),
    )
    child = await Child.start(_PAID_SERVER, env=env)
    try:
        with anyio.fail_after(WAIT_S):
            while not any(r.method == "POST" for r in standin.requests):  # noqa: ASYNC110 (another thread's list)
                await anyio.sleep(0.05)
    finally:
        await child.kill_9()
    standin.default_reply = Reply(input_tokens=26, output_tokens=50)
    settings = make_settings(database_url=database_url, budget_monthly_usd=0.2, model_prices=METERED)
    args = {"prompt": "x" * 40, "model": "metered", "max_tokens": 100}
    for later, refused in ((0.0, True), (2 * 3600.0, False)):  # now; then well after the lease (60 s + margin)
        async with Client(build_server(settings, clock=lambda: time.time() + later)) as client:  # noqa: B023
            result = await client.call_tool("ask_openai", args)
        assert result.is_error is refused, text_of(result)
    assert "MCP_LLM_BUDGET_MONTHLY_USD" not in text_of(result)


async def test_version_2_database_migrated(database_url: str) -> None:
    """A version-2 database (ledger and budgets, no holds) gains budget_holds and version 3; its spend still counts."""
    from sqlalchemy import insert, select

    from mcp_llm_server.store import _tables

    db = Database(database_url)
    engine = await _raw_engine(database_url)
    async with engine.begin() as conn:
        v2 = [t for t in _tables.metadata.sorted_tables if t.name != "budget_holds"]
        await conn.run_sync(_tables.metadata.create_all, tables=v2)
        await conn.execute(insert(_tables.schema_version).values(version=2))
        await conn.execute(insert(_tables.budget_spend).values(scope="global", period="month:2026-11", spent_nanos=70))
        await conn.execute(insert(_tables.ledger).values(created_at=NOW, **asdict(entry(cost=70))))
    spend = SpendStore(db, clock=lambda: NOW)
    with pytest.raises(BudgetExceeded):
        await spend.reserve(CAP, 31, lease_s=60)
    await spend.reserve(CAP, 30, lease_s=60)
    assert (await spend.report())["this_month"]["cost_nanos"] == 70
    await db.aclose()
    async with engine.begin() as conn:
        assert (await conn.execute(select(_tables.schema_version.c.version))).scalars().all() == [SCHEMA_VERSION]
        assert len((await conn.execute(select(_tables.budget_holds))).all()) == 1
    await engine.dispose()


async def _raw_engine(url: str) -> Any:
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(url)


# --- item 8: every failure is a StoreError that says what to do -------------------------------------------------

_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # the write lock, held until told to let go
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
sys.stdin.readline()
"""


@asynccontextmanager
async def locked(path: Path) -> AsyncIterator[Child]:
    """Another process holding SQLite's write lock on `path` until `say()` is called on it."""
    locker = await Child.start(_LOCKER, str(path))
    try:
        assert await locker.read_line() == "locked"
        yield locker
    finally:
        await locker.aclose()


async def release(locker: Child) -> None:
    await locker.say()
    assert await locker.read_line() == "released"


async def created(url: str) -> None:
    """The database with its schema, so that opening it later needs no write."""
    db = Database(url)
    await ConversationStore(db, max_age_s=None, max_chars=None).append("c0", turn())
    await db.aclose()


async def test_locked_sqlite_gives_store_errors(tmp_path: Path) -> None:
    """Locked beyond the busy timeout by another process: writes fail as StoreError (kind `locked`), saying what to
    do; a settlement says the cost was not recorded; reads still work; the held reservation ends with its lease."""
    path = tmp_path / "c.db"
    url = sqlite_url(path, busy_timeout_s=0.2)
    await created(url)
    now = [NOW]
    db = Database(url)
    conversations = ConversationStore(db, max_age_s=None, max_chars=None)
    spend = SpendStore(db, clock=lambda: now[0], settle_pauses_s=())
    held = await spend.reserve(CAP, 90, lease_s=60)
    async with locked(path) as locker:
        with pytest.raises(StoreError) as appended:
            await conversations.append("c1", turn())
        assert appended.value.kind == "locked" and appended.value.transient
        assert "locked by another process" in str(appended.value) and "?timeout=SECONDS" in str(appended.value)
        with pytest.raises(SettlementFailed) as settled:
            await spend.settle(held, 50, entry())
        message = str(settled.value)
        assert message.startswith("The cost of this call could not be recorded: The database sqlite+aiosqlite://")
        assert "released when its lease ends" in message and not settled.value.budget_counted
        with pytest.raises(StoreError, match="locked by another process"):
            await spend.reserve(CAP, 1, lease_s=60)
        assert [s.id for s in await conversations.list_recent()] == ["c0"]  # WAL: readers go on
        assert await spend.spent("global", "month") == 90
        await release(locker)
        await conversations.append("c1", turn())
    now[0] += 61
    assert await spend.spent("global", "month") == 0
    assert (await spend.report())["today"]["calls"] == 0  # the row was lost, and the caller was told
    await db.aclose()


async def test_settlement_retried_until_the_lock_goes(tmp_path: Path) -> None:
    """A settlement that meets a lock is tried again; the lock let go after the first failure, the row is written."""
    path = tmp_path / "c.db"
    url = sqlite_url(path, busy_timeout_s=0.2)
    await created(url)
    spend = SpendStore(Database(url), clock=lambda: NOW, settle_pauses_s=(0.2,) * 100, settle_retry_within_s=WAIT_S)
    held = await spend.reserve(CAP, 90, lease_s=60)
    retried = anyio.Event()

    class OnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "trying again" in record.getMessage():
                retried.set()

    async def release_on_retry(locker: Child) -> None:
        await retried.wait()
        await release(locker)

    handler = OnRetry()
    logging.getLogger("mcp_llm_server.store.spend").addHandler(handler)
    try:
        async with locked(path) as locker, anyio.create_task_group() as tg:
            tg.start_soon(release_on_retry, locker)
            await spend.settle(held, 50, entry(cost=50))
    finally:
        logging.getLogger("mcp_llm_server.store.spend").removeHandler(handler)
    assert retried.is_set()
    assert await spend.spent("global", "month") == 50
    assert (await spend.report())["this_month"]["cost_nanos"] == 50
    await spend.db.aclose()


async def test_refused_ledger_row_still_counts_the_budget(database_url: str) -> None:
    """A ledger row the database refuses (a NOT NULL column given None): SettlementFailed, not retried; the cost
    still counted against the budget and the reservation released."""
    spend = SpendStore(Database(database_url), clock=lambda: NOW)
    held = await spend.reserve(CAP, 90, lease_s=600)
    bad = LedgerEntry("openai", "gpt-x", 1, 0, 1, None, 40, None, None, "stdio")  # type: ignore[arg-type]
    with pytest.raises(SettlementFailed) as failed:
        await spend.settle(held, 40, bad)
    assert failed.value.kind == "conflict" and failed.value.budget_counted
    assert "could not be recorded" in str(failed.value) and "still counted against the budgets" in str(failed.value)
    assert "INSERT" not in str(failed.value)  # the driver's words, not the statement
    assert await spend.spent("global", "month") == 40
    await spend.db.aclose()


async def test_nul_characters_stored_safely(database_url: str) -> None:
    """NUL in prompt, answer, system, file text and model: SQLite keeps it, PostgreSQL stores U+FFFD; no failure."""
    nul = "a\x00b"
    kept = nul if database_url.startswith("sqlite") else "a\ufffdb"
    db = Database(database_url)
    store = ConversationStore(db, max_age_s=None, max_chars=None)
    files = (StoredFile("f.bin", "0" * 64, nul),)
    await store.append("c1", NewTurn("openai", nul, nul, nul, nul, files=files, usage={}))
    conversation = await store.get("c1")
    assert conversation is not None
    stored = conversation.turns[0].turn
    assert (stored.prompt, stored.answer, stored.system, stored.model) == (kept, kept, kept, kept)
    assert stored.files[0].text == nul  # JSON escapes it: faithful on both
    assert conversation.summary.title == kept
    assert await store.get("c\x00") is None
    spend = SpendStore(db, clock=lambda: NOW)
    await spend.settle(await spend.reserve([], 0, lease_s=60), 5, entry(model=nul, cost=5))
    by_model = (await spend.report())["today"]["by_model"]
    assert [m["model"] for m in by_model] == [kept]
    await db.aclose()


async def test_uncreatable_directory(tmp_path: Path) -> None:
    """A database whose directory cannot be created (a file is in the way): StoreError saying which and what to do."""
    (tmp_path / "file").write_text("not a directory")
    db = Database(sqlite_url(tmp_path / "file" / "sub" / "c.db"))

    async def read() -> None:
        await ConversationStore(db, max_age_s=None, max_chars=None).list_recent()

    async def record() -> None:
        await SpendStore(db).settle(await SpendStore(db).reserve([], 0, lease_s=1), 1, entry())

    try:
        for attempt in (read, record):
            with pytest.raises(StoreError) as failed:
                await attempt()
            assert failed.value.kind == "unavailable"
            assert f"Cannot create the directory {tmp_path / 'file' / 'sub'}" in str(failed.value)
            assert "MCP_LLM_DATABASE_URL" in str(failed.value)
    finally:
        await db.aclose()


async def test_database_file_is_a_directory(tmp_path: Path) -> None:
    """A path SQLite cannot open as a file: StoreError (`unavailable`) on opening, not a driver exception."""
    (tmp_path / "c.db").mkdir()
    db = Database(sqlite_url(tmp_path / "c.db"))
    store = ConversationStore(db, max_age_s=None, max_chars=None)
    try:
        with pytest.raises(StoreError, match="Cannot open the database") as failed:
            await store.list_recent()
        assert failed.value.kind == "unavailable"
    finally:
        await db.aclose()


async def test_unreachable_server_password_redacted() -> None:
    """PostgreSQL not listening: StoreError on opening that names the server but never the password."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    db = Database(f"postgresql+asyncpg://app:hunter2-db-pass@127.0.0.1:{port}/llm")
    with pytest.raises(StoreError) as failed:
        await SpendStore(db).spent("global", "day")
    message = str(failed.value)
    assert failed.value.kind == "unavailable" and failed.value.transient
    assert "hunter2" not in message and f"app:***@127.0.0.1:{port}/llm" in message
    assert "server must be running and reachable" in message


async def test_postgres_connection_dropped(database_url: str) -> None:
    """The server ends the store's connections (a restart, an idle timeout): the next use reconnects."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    db = Database(database_url)
    store = ConversationStore(db, max_age_s=None, max_chars=None)
    await store.append("c1", turn())
    url = make_url(database_url)
    admin = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            url.database,
        )
    finally:
        await admin.close()
    assert ended >= 1
    await store.append("c1", turn("again"))
    conversation = await store.get("c1")
    assert conversation is not None and conversation.summary.turn_count == 2
    await db.aclose()


# --- through the real MCP client -----------------------------------------------------------------------------


@asynccontextmanager
async def locked_server(make_settings: SettingsFactory, tmp_path: Path) -> AsyncIterator[tuple[Client, Child]]:
    path = tmp_path / "locked.db"
    url = sqlite_url(path, busy_timeout_s=0.2)
    await created(url)
    async with (
        locked(path) as locker,
        Client(build_server(make_settings(database_url=url)), raise_exceptions=True) as client,
    ):
        yield client, locker


async def ask_locked(make_settings: SettingsFactory, standin: StandIn, tmp_path: Path) -> CallToolResult:
    standin.script(Reply(text="The paid answer.", input_tokens=10, output_tokens=5))
    async with locked_server(make_settings, tmp_path) as (client, _):
        result = await client.call_tool("ask_openai", {"prompt": "Hi", "model": "gpt-4o"})
    assert [r.model for r in standin.requests if r.method == "POST"] == ["gpt-4o"]
    return result


async def test_locked_database_still_gives_the_answer(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path
) -> None:
    """The database locked by another process throughout: the caller still gets the answer the call paid for."""
    result = await ask_locked(make_settings, standin, tmp_path)
    assert not result.is_error, text_of(result)
    assert "The paid answer." in text_of(result)


async def test_locked_database_answer_says_the_cost_was_not_recorded(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path
) -> None:
    """... and the result tells it that the cost of this call could not be recorded."""
    result = await ask_locked(make_settings, standin, tmp_path)
    assert not result.is_error, text_of(result)
    said = text_of(result) + json.dumps(result.structured_content)
    assert "could not be recorded" in said
