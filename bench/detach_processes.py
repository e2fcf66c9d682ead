"""Detached answers across server processes on PostgreSQL: how soon another process returns an answer, and how soon a
cancel asked of another process closes the upstream stream.

    . .ci/postgres.sh && python -m bench.detach_processes [--reps 7]
    MCP_LLM_TEST_POSTGRES_URL=postgresql+asyncpg://... python -m bench.detach_processes

Two stdio servers, A and B, on a fresh database of that PostgreSQL, the stand-in upstream in this process. A runs a
slow ask_openai (MCP_LLM_DETACH_AFTER_S=1, so it detaches); B (detach limit 30 s, so one get_answer spans the end)
fetches or cancels it (B polls the row every POLL_S = 0.25 s; A writes it every BEAT_S = 1 s). Both servers are
warm (a call made, the database open) before anything is timed.

  get_answer: from A writing the finished answer to its row (the row's `finished_at`, A's clock; one host) to B's
              get_answer returning it; also from the stand-in's last chunk. B asks at a random phase of its polling.
  cancel:     from B's cancel_answer request to the stand-in seeing the stream closed; and B's request duration.
              Each cancel comes at a random moment in A's heartbeat cycle (BEAT_S).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn

URL_ENV = "MCP_LLM_TEST_POSTGRES_URL"
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the servers' stderr, for the life of the benchmark


def _env(standin: StandIn, database_url: str, detach_after_s: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "OPENAI_API_KEY": "sk-bench-openai-key-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-bench-key-0123456789",
        "OPENAI_BASE_URL": standin.openai_base_url,
        "ANTHROPIC_BASE_URL": standin.anthropic_base_url,
        "MCP_LLM_DATABASE_URL": database_url,
        "MCP_LLM_DETACH_AFTER_S": detach_after_s,
    }


@asynccontextmanager
async def _server(env: dict[str, str]) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=env)
    async with Client(stdio_client(params, errlog=_DEVNULL)) as client:
        yield client


@asynccontextmanager
async def _fresh_database(admin_url: str) -> AsyncIterator[str]:
    """A new database on the PostgreSQL of `admin_url`, dropped afterwards; its SQLAlchemy URL."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"bench_{secrets.token_hex(6)}"
    where = {"host": url.host, "port": url.port, "user": url.username, "password": url.password}
    admin = await asyncpg.connect(database=url.database, **where)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


async def _finished_at(database_url: str, answer_id: str) -> float:
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from mcp_llm_server.store._tables import answers

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            value = (await conn.execute(select(answers.c.finished_at).where(answers.c.id == answer_id))).scalar_one()
    finally:
        await engine.dispose()
    return float(value)


def _chunks(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


def _structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    structured: dict[str, Any] = result.structured_content
    return structured


async def _detach(a: Client) -> str:
    running = _structured(await a.call_tool("ask_openai", {"prompt": "a long story"}))
    assert running["status"] == "running", running
    return str(running["answer_id"])


async def _ended(standin: StandIn) -> RecordedRequest:
    await standin.wait_until_idle_async(timeout=30)
    return standin.requests[-1]


async def _fetch_once(standin: StandIn, a: Client, b: Client, database_url: str) -> tuple[float, float]:
    """Seconds from A's final write, and from the stand-in's last chunk, to B's get_answer returning the answer."""
    standin.script(Reply(chunks=_chunks(40), chunk_delay_s=0.05))  # 2 s of stream
    answer_id = await _detach(a)
    await anyio.sleep(random.uniform(0, 0.25))  # a random phase of B's polling (POLL_S) against the answer's end
    fetched = _structured(await b.call_tool("get_answer", {"answer_id": answer_id}))
    returned_wall, returned = time.time(), time.monotonic()
    assert fetched["status"] == "complete", fetched
    last_chunk = (await _ended(standin)).finished_at
    assert last_chunk is not None
    return returned_wall - await _finished_at(database_url, answer_id), returned - last_chunk


async def _cancel_once(standin: StandIn, a: Client, b: Client) -> tuple[float, float]:
    """Seconds from B's cancel_answer request to the upstream stream's close, and to B's answer."""
    standin.script(Reply(chunks=_chunks(600), chunk_delay_s=0.05))  # 30 s of stream
    answer_id = await _detach(a)
    await anyio.sleep(random.uniform(0, 1))  # a random phase of A's heartbeat
    asked = time.monotonic()
    cancelled = _structured(await b.call_tool("cancel_answer", {"answer_id": answer_id}))
    answered = time.monotonic()
    assert cancelled["status"] == "cancelled", cancelled
    record = await _ended(standin)
    assert record.outcome == "client_disconnected" and record.finished_at is not None
    return record.finished_at - asked, answered - asked


def _row(name: str, values: list[float]) -> str:
    ms = [value * 1000 for value in values]
    return f"{name:<58} median {statistics.median(ms):7.0f} ms   max {max(ms):7.0f} ms   (n={len(ms)})"


async def _run(admin_url: str, reps: int) -> None:
    async with AsyncExitStack() as stack:
        database_url = await stack.enter_async_context(_fresh_database(admin_url))
        standin = stack.enter_context(StandIn())
        a = await stack.enter_async_context(_server(_env(standin, database_url, "1")))
        b = await stack.enter_async_context(_server(_env(standin, database_url, "30")))
        _structured(await a.call_tool("ask_openai", {"prompt": "warm up"}))  # SDK imported, database open
        await b.call_tool("get_answer", {"answer_id": "ans_warm_up"})  # database open
        fetches = [await _fetch_once(standin, a, b, database_url) for _ in range(reps)]
        cancels = [await _cancel_once(standin, a, b) for _ in range(reps)]
    print("Detached answers across two stdio server processes on PostgreSQL")
    print(_row("get_answer on B: A's final write -> B returns it", [f[0] for f in fetches]))
    print(_row("get_answer on B: upstream's last chunk -> B returns it", [f[1] for f in fetches]))
    print(_row("cancel_answer on B: B's request -> upstream stream closed", [c[0] for c in cancels]))
    print(_row("cancel_answer on B: request duration", [c[1] for c in cancels]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--url", default=os.environ.get(URL_ENV), help=f"a postgresql+asyncpg URL (default ${URL_ENV})")
    args = parser.parse_args()
    if not args.url:
        print(f"skipped: no PostgreSQL. Set {URL_ENV} (a postgresql+asyncpg:// URL), or `. .ci/postgres.sh` first.")
        return
    anyio.run(_run, args.url, args.reps)


if __name__ == "__main__":
    main()
