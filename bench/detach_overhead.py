"""What running every model call as a job that can detach costs a call that never detaches.

    python -m bench.detach_overhead [--calls 150] [--rounds 5]

The real server in memory, the real MCP client, the stand-in answering at once (no delay): rounds of sequential
`ask_openai` calls with detaching on (`MCP_LLM_DETACH_AFTER_S=50`, the default: a task in the server's task group,
a progress relay recording the text, an event) and off (`0`: the call runs in its request, as before), interleaved
so the machine's load falls on both alike. Prints the median milliseconds per call of each and their difference.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import Settings, load_settings


async def _per_call_ms(standin: StandIn, detach_after_s: float, calls: int, db: Path) -> float:
    settings = load_settings(
        _env_file=None,
        openai_api_key="sk-bench-0123456789abcdef",
        openai_base_url=standin.openai_base_url,
        database_url=f"sqlite+aiosqlite:///{db}",
        detach_after_s=detach_after_s,
    )
    return await sequential_ms(settings, "ask_openai", {"prompt": "hi"}, calls)


async def sequential_ms(settings: Settings, tool: str, arguments: dict[str, Any], calls: int) -> float:
    """Milliseconds per call of `calls` sequential calls to a fresh server in memory, after one call to warm up
    (SDK imports, the database, the stand-in's connection)."""
    async with Client(build_server(settings)) as client:
        await client.call_tool(tool, arguments)
        started = time.perf_counter()
        for _ in range(calls):
            result = await client.call_tool(tool, arguments)
            assert not result.is_error, result
        return (time.perf_counter() - started) * 1000 / calls


async def main(calls: int, rounds: int) -> None:
    samples: dict[float, list[float]] = {50.0: [], 0.0: []}
    with StandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        standin.default_reply = Reply(text="Hello from the stand-in.")
        for round_ in range(rounds):
            order = (50.0, 0.0) if round_ % 2 == 0 else (0.0, 50.0)
            for detach in order:
                samples[detach].append(await _per_call_ms(standin, detach, calls, Path(tmp) / f"{detach}.db"))
    on, off = statistics.median(samples[50.0]), statistics.median(samples[0.0])
    print(f"ask_openai per call, {calls} sequential calls x {rounds} rounds (median of rounds):")
    print(f"  detaching off (MCP_LLM_DETACH_AFTER_S=0):  {off:6.2f} ms  (baseline)")
    print(f"  detaching on  (MCP_LLM_DETACH_AFTER_S=50): {on:6.2f} ms  ({on - off:+.2f} ms, x{on / off:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.rounds)
