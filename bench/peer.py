"""The most-used peer, measured in the same run when it is installed: `pal-mcp-server`'s `chat` tool through a Chat
Completions endpoint (its custom provider), against the same stand-in.

Point `BENCH_PEER` at its console script (e.g. a separate venv: `python -m venv /tmp/pal && /tmp/pal/bin/pip install
pal-mcp-server==11.8.2`, then `BENCH_PEER=/tmp/pal/bin/pal-mcp-server python -m bench`). Without it the peer's
figures are left out. Its figures: time added per call over the direct SDK call it makes (a non-streamed Chat
Completions request), 10 concurrent calls answered in 1 s, and resident memory after 5 calls.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_llm_server._standin import Reply

from .remote_standin import RemoteStandIn as StandIn

_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the peer's stderr, for the life of the benchmark
PEER_MODEL = "local-llama"  # a model its custom provider lists for an OpenAI-compatible URL


@dataclass
class PeerFigures:
    added_ms: float
    direct_ms: float
    fanout_s: float
    memory_mb: float


def peer_command() -> str | None:
    command = os.environ.get("BENCH_PEER")
    return command if command and Path(command).exists() else None


def _arguments(workdir: str) -> dict[str, object]:
    return {"prompt": "bench", "model": PEER_MODEL, "working_directory_absolute_path": workdir}


async def _direct_ms(standin: StandIn, runs: int) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="sk-bench-0123456789abcdef", base_url=standin.openai_base_url, max_retries=0)
    times = []
    for _ in range(runs + 2):
        started = time.perf_counter()
        await client.chat.completions.create(model=PEER_MODEL, messages=[{"role": "user", "content": "bench"}])
        times.append(time.perf_counter() - started)
    await client.close()
    return statistics.median(times[2:]) * 1000


async def measure_peer(command: str, standin: StandIn, runs: int) -> PeerFigures:
    workdir = tempfile.mkdtemp()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "CUSTOM_API_URL": standin.openai_base_url,
        "CUSTOM_API_KEY": "sk-bench-0123456789abcdef",
        "PAL_WORKSPACE_ROOT": workdir,
        "LOG_LEVEL": "WARNING",
    }
    params = StdioServerParameters(command=command, args=[], env=env, cwd=workdir)
    standin.default_reply = Reply(text="A short answer.")
    async with Client(stdio_client(params, errlog=_DEVNULL), read_timeout_seconds=60) as client:
        await client.list_tools()
        for _ in range(3):
            await client.call_tool("chat", _arguments(workdir))
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await client.call_tool("chat", _arguments(workdir))
            times.append(time.perf_counter() - started)
        memory = _peer_memory_mb(command)
        standin.default_reply = Reply(text="ok", delay_s=1.0)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(client.call_tool, "chat", _arguments(workdir))
        fanout = time.perf_counter() - started
    standin.default_reply = Reply(text="A short answer.")
    direct = await _direct_ms(standin, runs)
    return PeerFigures(statistics.median(times) * 1000 - direct, direct, fanout, memory)


def _peer_memory_mb(command: str) -> float:
    found = subprocess.run(["pgrep", "-n", "-f", command], capture_output=True, text=True).stdout.split()
    if not found:
        return float("nan")
    for line in Path(f"/proc/{found[-1]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    command = peer_command()
    if command is None:
        sys.exit("set BENCH_PEER to pal-mcp-server's console script")
    with StandIn() as standin:
        figures = anyio.run(measure_peer, command, standin, 15)
    print(figures)


if __name__ == "__main__":
    main()
