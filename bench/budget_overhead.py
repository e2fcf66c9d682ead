"""Added time per call of the budgets and the ledger: reserve (before the call) + settle (after it, ledger row).

    python bench/budget_overhead.py [--reps 200] [--postgres postgresql+asyncpg://...]

SQLite: a file in a temporary directory (WAL, as the server uses it). PostgreSQL: the URL given, or
MCP_LLM_TEST_POSTGRES_URL (a fresh database is created on it). Four caps apply to each call (global and provider,
daily and monthly), as when every budget setting is set; "ledger only" is a call with no budget set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from mcp_llm_server.store import BudgetCap, Database, LedgerEntry, SpendStore

CAPS = [
    BudgetCap("global", "day", 10**15, "MCP_LLM_BUDGET_DAILY_USD"),
    BudgetCap("global", "month", 10**15, "MCP_LLM_BUDGET_MONTHLY_USD"),
    BudgetCap("openai", "day", 10**15, "MCP_LLM_OPENAI_BUDGET_DAILY_USD"),
    BudgetCap("openai", "month", 10**15, "MCP_LLM_OPENAI_BUDGET_MONTHLY_USD"),
]
ENTRY = LedgerEntry("openai", "gpt-5.5", 1200, 0, 300, 0, 12_345, "abcdefghijkl", "ask_openai", "stdio")


async def _measure(url: str, reps: int) -> dict[str, list[float]]:
    spend = SpendStore(Database(url))
    await spend.settle(await spend.reserve(CAPS, 1, lease_s=600), 1, ENTRY)  # open the engine, create the tables
    times: dict[str, list[float]] = {"budgets (4 caps)": [], "ledger only": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        reservation = await spend.reserve(CAPS, 50_000, lease_s=600)
        await spend.settle(reservation, 12_345, ENTRY)
        t1 = time.perf_counter()
        await spend.settle(await spend.reserve([], 0, lease_s=600), 12_345, ENTRY)
        t2 = time.perf_counter()
        times["budgets (4 caps)"].append((t1 - t0) * 1000)
        times["ledger only"].append((t2 - t1) * 1000)
    await spend.db.aclose()
    return times


TESTS = str(Path(__file__).resolve().parent.parent / "tests")


async def _fresh_postgres(admin_url: str) -> str:
    sys.path.insert(0, TESTS)
    from conftest import fresh_postgres_database

    return await fresh_postgres_database(admin_url)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--postgres", default=os.environ.get("MCP_LLM_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        backends = {"SQLite": f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"}
        if args.postgres:
            backends["PostgreSQL"] = await _fresh_postgres(args.postgres)
        for name, url in backends.items():
            for label, samples in (await _measure(url, args.reps)).items():
                ordered = sorted(samples)
                p95 = ordered[int(len(ordered) * 0.95) - 1]
                print(f"{name:10} {label:17} median {statistics.median(samples):6.2f} ms   p95 {p95:6.2f} ms")


if __name__ == "__main__":
    anyio.run(main)
