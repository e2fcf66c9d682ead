"""The adaptive concurrency limit (issue 14): a fan-out of 10 one-second calls, and 200 calls against a provider
that refuses (429) beyond 20 open requests, each beside the old fixed limit of 8 measured in the same run.

Run on its own: `python -m bench.adaptive`; `python -m bench` includes it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_llm_server._standin import RateLimit, Reply

from .concurrency import concurrent_calls
from .remote_standin import RemoteStandIn as StandIn

__all__ = ["Fanout", "RateLimited", "fanout", "fanout_on", "rate_limited"]

FANOUT_CALLS = 10
FANOUT_DELAY_S = 1.0
RATE_LIMITED_CALLS = 200
PROVIDER_CAP = 20  # requests the rate-limited stand-in serves at once
DELAYS_S = (0.5, 1.5)  # each answer takes a random time in this range (the same sequence in every run)
RETRY_AFTER_S = 0.25  # what its 429s ask for (`retry-after-ms: 250`, `retry-after: 1`)
OLD_FIXED_LIMIT = 8
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the servers' stderr, for the life of the benchmark


@asynccontextmanager
async def _server(env: dict[str, str], ceiling: int | None) -> AsyncIterator[Client]:
    """A stdio server: the defaults (adaptive, from 16 up to 64), or a fixed limit (initial = ceiling)."""
    env = dict(env)
    if ceiling is not None:
        env["MCP_LLM_OPENAI_CONCURRENCY"] = env["MCP_LLM_OPENAI_INITIAL_CONCURRENCY"] = str(ceiling)
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=env)
    async with Client(stdio_client(params, errlog=_DEVNULL), read_timeout_seconds=120) as client:
        # Both SDKs imported (the server's warm-up thread would import the other in the timed calls, holding the GIL)
        # and a first connection.
        for tool in ("ask_openai", "ask_claude"):
            warm = await client.call_tool(tool, {"prompt": "warm up"})
            assert not warm.is_error, warm.content
        yield client


@dataclass
class Fanout:
    seconds: float
    peak_open: int
    failures: int


async def fanout_on(client: Client, standin: StandIn) -> Fanout:
    """10 concurrent calls, each answered in 1 s, on a warm server."""
    standin.default_reply = Reply(text="ok", delay_s=FANOUT_DELAY_S)
    standin.reset_peak()
    seconds, failures = await concurrent_calls(client, FANOUT_CALLS)
    return Fanout(seconds, standin.peak_open_requests, failures)


async def fanout(standin: StandIn, env: dict[str, str], ceiling: int | None) -> Fanout:
    """`fanout_on` a fresh server: the defaults (`ceiling` None) or a fixed limit."""
    async with _server(env, ceiling) as client:
        return await fanout_on(client, standin)


def _busy_share(spans: list[tuple[float, float]]) -> float:
    """How full the cap was kept while calls were waiting: the mean number of requests served at once from the
    first request to the last one sent, over the cap. (After the last is sent nothing is left to send: the tail,
    as the last answers come in, is the same for any limit. Throughput is this share of the cap's, Little's law:
    requests per second = requests open / time each takes, and the stand-in decides the time.)"""
    start = min(came for came, _ in spans)
    end = max(came for came, _ in spans)
    busy = sum(max(0.0, min(ended, end) - came) for came, ended in spans)
    return busy / (PROVIDER_CAP * (end - start))


@dataclass
class RateLimited:
    seconds: float
    answered: int
    throughput: float  # as a fraction of the cap's (see _busy_share)
    refused: int
    peak_open: int
    failures: int

    @property
    def refused_share(self) -> float:
        return self.refused / (self.answered + self.refused)


async def _rate_limited_once(standin: StandIn, env: dict[str, str], ceiling: int | None) -> RateLimited:
    async with _server(env, ceiling) as client:
        standin.random_delays(DELAYS_S)
        standin.set_rate_limit(RateLimit(max_open=PROVIDER_CAP, retry_after_s=RETRY_AFTER_S))
        standin.clear()
        standin.reset_peak()
        try:
            seconds, failures = await concurrent_calls(client, RATE_LIMITED_CALLS)
            spans, refused, peak = standin.served()
        finally:
            standin.set_rate_limit(None)
            standin.random_delays(None)
    return RateLimited(seconds, len(spans), _busy_share(spans), refused, peak, failures)


async def rate_limited(standin: StandIn, env: dict[str, str]) -> tuple[RateLimited, RateLimited]:
    """200 calls against a provider serving 20 at once (429 beyond): the defaults, and the old fixed limit of 8."""
    return await _rate_limited_once(standin, env, None), await _rate_limited_once(standin, env, OLD_FIXED_LIMIT)


async def _main() -> None:
    from .run import _server_env

    with StandIn() as standin:
        env = _server_env(standin)
        ours, old = await fanout(standin, env, None), await fanout(standin, env, OLD_FIXED_LIMIT)
        print(f"{FANOUT_CALLS} calls of {FANOUT_DELAY_S:g} s: adaptive {ours}; fixed {OLD_FIXED_LIMIT}: {old}")
        adaptive, fixed = await rate_limited(standin, env)
        for name, run in (("adaptive", adaptive), (f"fixed {OLD_FIXED_LIMIT}", fixed)):
            print(
                f"{RATE_LIMITED_CALLS} calls, cap {PROVIDER_CAP}: {name}: {run.seconds:.2f} s, throughput "
                f"{run.throughput:.1%} of the cap's, 429s {run.refused} ({run.refused_share:.1%}), "
                f"peak {run.peak_open}, failed {run.failures}"
            )


if __name__ == "__main__":
    anyio.run(_main)
