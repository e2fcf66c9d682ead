"""What named providers, `ask`, failover and the judge cost a call, beside `ask_openai` measured in the same run.

    python -m bench.targets_cost [--calls 150] [--rounds 5]

The real server in memory, the real MCP client, the stand-in answering at once: rounds of sequential calls, the
variants interleaved so the machine's load falls on all alike. Variants:
- `ask_openai` (the baseline: the built-in provider, Responses API);
- `ask` with `openai:gpt-standin` (the same upstream request, through target resolution and `answer_first`);
- `ask` with `local` (a named provider, Chat Completions, on the same stand-in);
- `ask` with a failover alias whose first target is not configured (one skip, no network for it);
- `ask_many` with two targets, and with the same two plus a judge (the judge is one more model call, after them).
Prints the median milliseconds per call of each and its difference to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import anyio

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.settings import load_settings

from .detach_overhead import sequential_ms

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ask_openai": ("ask_openai", {"prompt": "hi"}),
    "ask openai:gpt-standin": ("ask", {"prompt": "hi", "model": "openai:gpt-standin"}),
    "ask local (named, chat)": ("ask", {"prompt": "hi", "model": "local"}),
    "ask failover, 1 skip": ("ask", {"prompt": "hi", "model": "spare"}),
    "ask_many 2 targets": ("ask_many", {"prompt": "hi", "targets": ["openai", "local"]}),
    "ask_many 2 + judge": ("ask_many", {"prompt": "hi", "targets": ["openai", "local"], "judge": "openai"}),
}


async def _per_call_ms(standin: StandIn, tool: str, arguments: dict[str, Any], calls: int, db: Path) -> float:
    os.environ.pop("BENCH_UNSET_KEY", None)
    providers = {
        "local": {"base_url": standin.openai_base_url, "api": "chat", "default_model": "qwen3"},
        "keyless": {"base_url": standin.openai_base_url, "api": "chat", "api_key_env": "BENCH_UNSET_KEY"},
    }
    settings = load_settings(
        _env_file=None,
        openai_api_key="sk-bench-0123456789abcdef",
        openai_base_url=standin.openai_base_url,
        openai_model="gpt-standin",
        database_url=f"sqlite+aiosqlite:///{db}",
        providers=json.dumps(providers),
        model_aliases="spare=keyless:m|openai:gpt-standin",
    )
    return await sequential_ms(settings, tool, arguments, calls)


async def main(calls: int, rounds: int) -> None:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with StandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        standin.default_reply = Reply(text="Hello from the stand-in.")
        names = list(VARIANTS)
        for round_ in range(rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for index, name in enumerate(order):
                tool, arguments = VARIANTS[name]
                db = Path(tmp) / f"{round_}-{index}.db"
                samples[name].append(await _per_call_ms(standin, tool, arguments, calls, db))
    base = statistics.median(samples["ask_openai"])
    print(f"per call, {calls} sequential calls x {rounds} rounds in memory (median of rounds):")
    for name in VARIANTS:
        ms = statistics.median(samples[name])
        extra = "(baseline)" if name == "ask_openai" else f"({ms - base:+.2f} ms, x{ms / base:.2f})"
        print(f"  {name:26} {ms:7.2f} ms  {extra}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    anyio.run(main, args.calls, args.rounds)
