"""One 2,000-delta answer with progress, in memory (server, stand-in and client in one process): 15 calls' median.

For A/B comparisons of the call pipeline between two checkouts on the same machine in the same minutes:

    python -m bench.long_answer_inprocess            # this checkout
    PYTHONPATH=/path/to/other python -m bench.long_answer_inprocess
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import load_settings


async def main() -> None:
    with StandIn() as standin, tempfile.TemporaryDirectory() as folder:
        standin.default_reply = Reply(text=" ".join(f"w{i}" for i in range(2000)))
        settings = load_settings(
            _env_file=None,
            openai_api_key="sk-bench-0123456789abcdef",
            openai_base_url=standin.openai_base_url,
            database_url=f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
        )

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            pass

        async with Client(build_server(settings), raise_exceptions=True) as client:
            await client.call_tool("ask_openai", {"prompt": "warm up"}, progress_callback=on_progress)
            times = []
            for _ in range(15):
                started = time.perf_counter()
                await client.call_tool("ask_openai", {"prompt": "x"}, progress_callback=on_progress)
                times.append(time.perf_counter() - started)
    print(f"2,000-delta answer in memory: median {statistics.median(times) * 1000:.1f} ms over 15 calls")


if __name__ == "__main__":
    anyio.run(main)
