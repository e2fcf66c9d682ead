"""Wall time of N concurrent `ask_openai` calls against a delayed stand-in, at several concurrency limits.

    python bench/concurrency.py                      # 100 calls, 200 ms upstream delay, limits 8 and 64, over stdio
    python bench/concurrency.py --transport memory --limits 8 16 64 --runs 5

The stand-in runs in its own process and so does the server (over stdio), so no two of them share a GIL;
`--transport memory` runs the server in this process instead. Each run starts a fresh server, warms it up
with one call (SDK import, first connection), then times the N calls. The ideal is ceil(N / limit) x delay.
Each limit is fixed (the adaptive limit's initial value and ceiling both set to it); `python -m bench.adaptive`
measures the adaptive one.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from contextlib import AbstractAsyncContextManager
from multiprocessing.connection import Connection
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import load_settings

OPENAI_KEY = "sk-bench-openai-key-0123456789"
ANTHROPIC_KEY = "sk-ant-bench-key-0123456789"


def _standin_process(conn: Connection, delay_s: float) -> None:
    """Serve the stand-in until told to stop; answer `peak` with the peak of open requests since the last one."""
    with StandIn() as standin:
        standin.default_reply = Reply(delay_s=delay_s)
        conn.send(standin.url)
        while True:
            command = conn.recv()
            if command == "peak":
                conn.send((standin.peak_open_requests, len(standin.requests)))
                standin.reset_peak()
            else:
                return


# The calls' conversations go to a throwaway database, never the user's.
_DB_URL = f"sqlite+aiosqlite:///{tempfile.gettempdir()}/mcp-llm-server-bench/conversations.db"


def _client(transport: str, url: str, limit: int) -> AbstractAsyncContextManager[Client]:
    if transport == "memory":
        settings = load_settings(
            _env_file=None,
            openai_api_key=OPENAI_KEY,
            anthropic_api_key=ANTHROPIC_KEY,
            openai_base_url=url + "/v1",
            anthropic_base_url=url,
            openai_concurrency=limit,
            openai_initial_concurrency=limit,
            database_url=_DB_URL,
        )
        return Client(build_server(settings))
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "OPENAI_BASE_URL": url + "/v1",
        "ANTHROPIC_BASE_URL": url,
        "MCP_LLM_OPENAI_CONCURRENCY": str(limit),
        "MCP_LLM_OPENAI_INITIAL_CONCURRENCY": str(limit),
        "MCP_LLM_DATABASE_URL": _DB_URL,
    }
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=env))


async def concurrent_calls(client: Client, n: int) -> tuple[float, int]:
    """Seconds for `n` concurrent ask_openai calls, and how many failed."""
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        result = await client.call_tool("ask_openai", {"prompt": f"question {i}"})
        failures += bool(result.is_error)

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return time.perf_counter() - started, failures


async def _one_run(transport: str, url: str, limit: int, calls: int, conn: Connection) -> tuple[float, int, int]:
    """Seconds for `calls` concurrent calls, the peak of open upstream requests, and the failures."""
    async with _client(transport, url, limit) as client:
        warm = await client.call_tool("ask_openai", {"prompt": "warm up"})
        if warm.is_error:
            raise RuntimeError(f"warm-up call failed: {warm.content}")
        conn.send("peak")
        conn.recv()  # resets the peak
        elapsed, failures = await concurrent_calls(client, calls)
        conn.send("peak")
        peak, _ = conn.recv()
    return elapsed, peak, failures


async def _main(args: argparse.Namespace, url: str, conn: Connection) -> None:
    print(
        f"{args.calls} concurrent ask_openai calls, upstream delay {args.delay_s * 1000:.0f} ms, "
        f"transport {args.transport}, {args.runs} runs per limit"
    )
    print(f"{'limit':>6} {'ideal s':>8} {'median s':>9} {'min s':>7} {'max s':>7} {'peak open':>10} {'failed':>7}")
    for limit in args.limits:
        times: list[float] = []
        peaks: list[int] = []
        failed = 0
        for _ in range(args.runs):
            elapsed, peak, failures = await _one_run(args.transport, url, limit, args.calls, conn)
            times.append(elapsed)
            peaks.append(peak)
            failed += failures
        ideal = math.ceil(args.calls / limit) * args.delay_s
        print(
            f"{limit:>6} {ideal:>8.2f} {statistics.median(times):>9.2f} {min(times):>7.2f} {max(times):>7.2f} "
            f"{max(peaks):>10} {failed:>7}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--delay-s", type=float, default=0.2)
    parser.add_argument("--limits", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--transport", choices=["stdio", "memory"], default="stdio")
    args = parser.parse_args()
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_standin_process, args=(theirs, args.delay_s))
    child.start()
    try:
        url: Any = ours.recv()
        anyio.run(_main, args, str(url), ours)
    finally:
        ours.send("stop")
        child.join(5)


if __name__ == "__main__":
    main()
