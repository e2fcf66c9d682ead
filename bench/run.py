"""Benchmarks against the stand-in provider: start-up, per-call overhead, streaming latency, concurrency, memory.

Run: `python -m bench` (about two minutes). Every figure is a median over repeated runs, printed beside a
baseline measured in the same run and the goal it is held to.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_llm_server._standin import Reply

from . import adaptive, first_answer, peer
from .remote_standin import RemoteStandIn as StandIn

OPENAI_KEY = "sk-bench-openai-key-0123456789"
ANTHROPIC_KEY = "sk-ant-bench-key-0123456789"

_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the servers' stderr, for the life of the benchmark


@dataclass
class Row:
    name: str
    value: str
    baseline: str
    goal: str
    met: bool | None


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


MEMORY_OVER_FLOOR_MB = 30
BENCH_DB_DIR = Path(tempfile.gettempdir()) / "mcp-llm-server-bench"  # never the user's conversations


def _server_env(standin: StandIn) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "OPENAI_BASE_URL": standin.openai_base_url,
        "ANTHROPIC_BASE_URL": standin.anthropic_base_url,
        "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{BENCH_DB_DIR / 'conversations.db'}",
    }


# 1. Start-up ---------------------------------------------------------------------------------------------


def _spawn_to_tools_list(env: dict[str, str]) -> float:
    process, started = first_answer.spawn_to_tools_list(env)
    elapsed = time.perf_counter() - started
    assert process.stdin is not None
    process.stdin.close()
    process.wait(10)
    return elapsed


def _import_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mcp.server"], check=True)
    return time.perf_counter() - started


def bench_startup(standin: StandIn, runs: int) -> list[Row]:
    env = _server_env(standin)
    _spawn_to_tools_list(env)  # warm the OS file cache and the bytecode caches
    ours, floor = [], []
    for _ in range(runs):
        floor.append(_import_floor())
        ours.append(_spawn_to_tools_list(env))
    ratio = _median(ours) / _median(floor)
    return [
        Row(
            "start-up: spawn → first tools/list answer",
            f"{_median(ours) * 1000:.0f} ms ({ratio:.2f}x floor)",
            f"`import mcp.server`: {_median(floor) * 1000:.0f} ms",
            "≤ 1.3x floor",
            ratio <= 1.3,
        )
    ]


# 2-5. One stdio session ----------------------------------------------------------------------------------


def _child_pid() -> int:
    """The server subprocess: our child whose command line runs mcp_llm_server."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and b"mcp_llm_server" in cmdline:
            return int(entry.name)
    raise RuntimeError("server process not found")


def _memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


async def _timed(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return times


class _Direct:
    """The same streamed requests made straight with the SDKs, one client each (as the server holds them)."""

    def __init__(self, standin: StandIn) -> None:
        from anthropic import AsyncAnthropic
        from openai import AsyncOpenAI

        self.openai = AsyncOpenAI(api_key=OPENAI_KEY, base_url=standin.openai_base_url, max_retries=0)
        self.anthropic = AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=standin.anthropic_base_url, max_retries=0)

    async def ask_openai(self, prompt: str) -> None:
        stream = await self.openai.responses.create(model="gpt-5.5", input=prompt, max_output_tokens=4096, stream=True)
        async with stream:
            async for _ in stream:
                pass

    async def ask_claude(self, prompt: str) -> None:
        stream = await self.anthropic.messages.create(
            model="claude-sonnet-5-5",
            max_tokens=4096,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
        )
        async with stream:
            async for _ in stream:
                pass

    async def close(self) -> None:
        await self.openai.close()
        await self.anthropic.close()


async def _mcp_floor(runs: int) -> float:
    """Median seconds of a trivial tool call over stdio to a bare MCPServer: the protocol's own cost."""
    script = str(Path(__file__).with_name("echo_server.py"))
    params = StdioServerParameters(command=sys.executable, args=[script])
    async with Client(stdio_client(params, errlog=_DEVNULL)) as client:

        async def call() -> None:
            await client.call_tool("echo", {"text": "x"})

        await _timed(call, 3)
        return _median(await _timed(call, runs))


async def _overhead(client: Client, direct: _Direct, standin: StandIn, runs: int) -> list[Row]:
    floor = await _mcp_floor(runs * 2)
    rows = [
        Row(
            "MCP stdio round trip of a trivial tool (bare MCPServer)",
            f"{floor * 1000:.2f} ms",
            "—",
            "(the protocol floor, included in every figure below)",
            None,
        )
    ]
    long_text = " ".join(f"w{i}" for i in range(2000))
    for label, text in (("short", "A short answer."), ("2,000-token", long_text)):
        standin.default_reply = Reply(text=text)
        for tool in ("ask_openai", "ask_claude"):
            direct_call = direct.ask_openai if tool == "ask_openai" else direct.ask_claude

            async def via_mcp(tool: str = tool) -> None:
                result = await client.call_tool(tool, {"prompt": "bench"})
                assert not result.is_error, result.content

            async def via_sdk(call: Callable[[str], Awaitable[None]] = direct_call) -> None:
                await call("bench")

            await via_mcp()
            await via_sdk()
            mcp_times: list[float] = []
            sdk_times: list[float] = []
            for _ in range(runs):  # interleaved, so drift hits both alike
                mcp_times += await _timed(via_mcp, 1)
                sdk_times += await _timed(via_sdk, 1)
            added_ms = (_median(mcp_times) - _median(sdk_times)) * 1000
            ours_ms = added_ms - floor * 1000
            rows.append(
                Row(
                    f"per-call overhead: {tool}, {label} answer",
                    f"+{added_ms:.2f} ms (MCP {_median(mcp_times) * 1000:.1f} ms; {ours_ms:+.2f} ms beyond the floor)",
                    f"direct SDK stream: {_median(sdk_times) * 1000:.1f} ms",
                    "< 2 ms added",
                    added_ms < 2.0,
                )
            )
    return rows


async def _streaming_latency(client: Client, standin: StandIn, deltas: int, gap_s: float) -> list[Row]:
    chunks = [f" d{i}" for i in range(deltas)]
    standin.clear()
    standin.default_reply = Reply(text="".join(chunks), chunks=chunks, chunk_delay_s=gap_s)
    received: list[tuple[float, str]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append((time.monotonic(), message or ""))

    result = await client.call_tool("ask_openai", {"prompt": "bench"}, progress_callback=on_progress)
    assert not result.is_error
    sent_at = standin.last_delta_sent_at()
    latencies = []
    for at, message in received:
        last = message.rsplit(" d", 1)[-1]
        if last.isdigit():
            index = int(last)
            latencies.append(at - sent_at[index])
    first = latencies[0] * 1000
    p95 = _p95(latencies) * 1000

    # A fast stream: 1,000 deltas as quickly as the stand-in writes them; count the notifications.
    fast = [f" f{i}" for i in range(1000)]
    standin.default_reply = Reply(text="".join(fast), chunks=fast)
    count = 0

    async def count_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal count
        count += 1

    started = time.perf_counter()
    await client.call_tool("ask_openai", {"prompt": "bench"}, progress_callback=count_progress)
    fast_s = time.perf_counter() - started
    return [
        Row(
            "streaming latency: delta sent → progress received",
            f"first {first:.2f} ms, p95 {p95:.2f} ms ({len(latencies)} deltas {gap_s * 1000:.0f} ms apart)",
            "—",
            "< 5 ms p95",
            p95 < 5.0,
        ),
        Row(
            "throttling: 1,000-delta burst",
            f"{count} notifications in {fast_s * 1000:.0f} ms ({count / fast_s:.1f}/s)",
            "1,000 deltas",
            "≤ 4/s + first + final",
            count <= fast_s * 4 + 3,
        ),
    ]


async def _concurrency(client: Client, standin: StandIn) -> list[Row]:
    ours = await adaptive.fanout_on(client, standin)
    old = await adaptive.fanout(standin, _server_env(standin), adaptive.OLD_FIXED_LIMIT)
    return [
        Row(
            f"concurrency: {adaptive.FANOUT_CALLS} concurrent calls, upstream answers in {adaptive.FANOUT_DELAY_S:g} s",
            f"{ours.seconds:.2f} s (peak open {ours.peak_open}, failed {ours.failures})",
            f"old fixed limit of {adaptive.OLD_FIXED_LIMIT}: {old.seconds:.2f} s (peak open {old.peak_open}); "
            f"ideal {adaptive.FANOUT_DELAY_S:.2f} s",
            f"≤ {adaptive.FANOUT_DELAY_S * 1.1:.1f} s",
            ours.seconds <= adaptive.FANOUT_DELAY_S * 1.1 and ours.failures == 0,
        )
    ]


async def bench_rate_limited(standin: StandIn) -> list[Row]:
    ours, old = await adaptive.rate_limited(standin, _server_env(standin))

    def figures(run: adaptive.RateLimited) -> str:
        return (
            f"throughput {run.throughput:.1%} of the cap's, 429s {run.refused} of {run.answered + run.refused} "
            f"({run.refused_share:.1%}); {run.seconds:.1f} s, failed {run.failures}"
        )

    low, high = adaptive.DELAYS_S
    return [
        Row(
            f"rate-limited provider: {adaptive.RATE_LIMITED_CALLS} calls, {adaptive.PROVIDER_CAP} served at once "
            f"(429 beyond, retry-after {adaptive.RETRY_AFTER_S * 1000:.0f} ms), answers in {low:g} to {high:g} s",
            figures(ours),
            f"old fixed limit of {adaptive.OLD_FIXED_LIMIT}: {figures(old)}",
            "≥ 90% of the cap's throughput, ≤ 5% 429s",
            ours.throughput >= 0.9 and ours.refused_share <= 0.05 and ours.failures == 0,
        )
    ]


async def bench_session(standin: StandIn, runs: int) -> list[Row]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=_server_env(standin))
    rows: list[Row] = []
    async with Client(stdio_client(params, errlog=_DEVNULL), read_timeout_seconds=60) as client:
        await client.list_tools()
        pid = _child_pid()
        idle_start = _memory_mb(pid, "VmRSS")
        direct = _Direct(standin)
        rows += await _overhead(client, direct, standin, runs)
        await direct.close()
        idle_warm = _memory_mb(pid, "VmRSS")
        rows += await _streaming_latency(client, standin, deltas=20, gap_s=0.3)
        rows += await _concurrency(client, standin)
        peak = _memory_mb(pid, "VmHWM")
    floor = _import_floor_mb()
    rows.append(
        Row(
            "memory: resident after calls to both providers",
            f"{idle_warm:.0f} MB ({idle_warm - floor:+.0f} MB over the floor; {idle_start:.0f} MB after start)",
            f"`import mcp.server, openai, anthropic`: {floor:.0f} MB",
            f"≤ floor + {MEMORY_OVER_FLOOR_MB} MB",
            idle_warm <= floor + MEMORY_OVER_FLOOR_MB,
        )
    )
    rows.append(
        Row("memory: peak (high-water mark) through the session's calls", f"{peak:.0f} MB", "—", "< 200 MB", peak < 200)
    )
    return rows


def _import_floor_mb() -> float:
    code = (
        "import mcp.server, openai, anthropic\n"
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')) / 1024)"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def bench_first_answer(standin: StandIn, runs: int) -> list[Row]:
    standin.default_reply = Reply(text="A short answer.")  # the earlier figures left a slow one
    at_once, idle, script = first_answer.first_answers(_server_env(standin), standin.openai_base_url, runs)
    return [
        Row(
            f"first answer: spawn → first ask_openai answer, {label}",
            f"{seconds * 1000:.0f} ms ({seconds / script:.2f}x the script)",
            f"a fresh script making the same streamed call: {script * 1000:.0f} ms",
            "≤ 1.5x the script",
            seconds <= 1.5 * script,
        )
        for label, seconds in (
            ("sent right after tools/list", at_once),
            (f"sent after {first_answer.IDLE_S:g} s idle (idle not counted)", idle),
        )
    ]


def bench_peer(standin: StandIn, runs: int) -> list[Row]:
    command = peer.peer_command()
    if command is None:
        return [Row("peer (pal-mcp-server)", "not measured: set BENCH_PEER to its console script", "—", "—", None)]
    figures = anyio.run(peer.measure_peer, command, standin, runs)
    return [
        Row(
            "peer, pal-mcp-server `chat`: time added per call",
            f"+{figures.added_ms:.2f} ms",
            f"its direct SDK call (Chat Completions): {figures.direct_ms:.1f} ms",
            "(ours must add less)",
            None,
        ),
        Row("peer: 10 concurrent calls, upstream answers in 1 s", f"{figures.fanout_s:.2f} s", "—", "—", None),
        Row("peer: resident memory after 5 calls (one provider)", f"{figures.memory_mb:.0f} MB", "—", "—", None),
    ]


def _table(rows: list[Row]) -> str:
    lines = ["| figure | measured | baseline (same run) | goal | met |", "|---|---|---|---|---|"]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.name} | {row.value} | {row.baseline} | {row.goal} | {met} |")
    return "\n".join(lines)


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "15"))
    started = time.perf_counter()
    with StandIn() as standin:
        rows = bench_startup(standin, runs=max(5, runs // 2))
        rows += anyio.run(bench_session, standin, runs)
        rows += anyio.run(bench_rate_limited, standin)
        rows += bench_first_answer(standin, runs=max(3, runs // 5))
        rows += bench_peer(standin, runs)
    print(_table(rows))
    took = time.perf_counter() - started
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; benchmark took {took:.0f} s")


if __name__ == "__main__":
    main()
