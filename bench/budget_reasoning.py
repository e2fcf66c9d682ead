"""Issue 12, item 1: what a reasoning call spends under a daily cap ($0.10), one call and 50 at once.

Prices: $1,000 per million output tokens, so `max_tokens: 64` costs $0.064 (fits the cap) while the upstream may
produce 64 + 16,384 reasoning tokens ($16.45). The stand-in reports the whole allowance as used.

    python -m bench.budget_reasoning
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import anyio
from mcp import Client

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import load_settings

CAP_USD = 0.10
PRICES = {"metered": {"input_per_mtok": 0, "output_per_mtok": 1000}}
ARGS = {"prompt": "think hard", "model": "metered", "max_tokens": 64, "reasoning_effort": "high"}


async def spent(calls: int, folder: Path) -> float:
    with StandIn() as standin:
        standin.default_reply = Reply(output_tokens=64 + 16_384, input_tokens=0)
        settings = load_settings(
            _env_file=None,
            openai_api_key="sk-bench-0123456789abcdef",
            openai_base_url=standin.openai_base_url,
            database_url=f"sqlite+aiosqlite:///{folder / f'{calls}.db'}",
            model_prices=PRICES,
            budget_daily_usd=CAP_USD,
            openai_concurrency=50,
        )
        async with Client(build_server(settings), raise_exceptions=True) as client:
            async with anyio.create_task_group() as tg:
                for _ in range(calls):
                    tg.start_soon(client.call_tool, "ask_openai", ARGS)
            report = await client.call_tool("usage_report", {})
    assert report.structured_content is not None
    return float(report.structured_content["today"]["cost_usd"] or 0.0)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        for calls in (1, 50):
            usd = await spent(calls, Path(folder))
            print(json.dumps({"calls": calls, "cap_usd": CAP_USD, "spent_usd": usd, "times_cap": usd / CAP_USD}))


if __name__ == "__main__":
    anyio.run(main)
