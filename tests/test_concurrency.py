"""Per-provider concurrency limits shared by every tool and request, and concurrent calls on one session."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import SettingsFactory, error_details, server_env, stdio_params
from helpers import connect, wait_until
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import Api, RecordedRequest, Reply, StandIn
from mcp_llm_server.state import AppState

pytestmark = pytest.mark.anyio


def peak_overlap(requests: list[RecordedRequest], api: Api) -> int:
    """Most requests of one API that were open at the same moment, from their recorded start and end."""
    events: list[tuple[float, int]] = []
    for r in requests:
        if r.api == api:
            assert r.finished_at is not None
            events += [(r.received_at, 1), (r.finished_at, -1)]
    open_now = peak = 0
    for _, step in sorted(events):  # at equal times the end (-1) sorts first: touching is not overlapping
        open_now += step
        peak = max(peak, open_now)
    return peak


async def call_many(client: Client, calls: list[tuple[str, dict[str, Any]]]) -> list[CallToolResult]:
    """Run the tool calls concurrently on one session; results in call order."""
    results: list[CallToolResult | None] = [None] * len(calls)

    async def one(index: int, name: str, arguments: dict[str, Any]) -> None:
        results[index] = await client.call_tool(name, arguments)

    async with anyio.create_task_group() as tg:
        for index, (name, arguments) in enumerate(calls):
            tg.start_soon(one, index, name, arguments)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


async def test_hundred_calls_never_exceed_a_limit_of_eight(make_settings: SettingsFactory, standin: StandIn) -> None:
    """100 concurrent ask_openai calls with a limit of 8: at most 8 open upstream, and all 100 answered."""
    standin.default_reply = Reply(delay_s=0.05)
    async with connect(make_settings(openai_concurrency=8)) as client:
        results = await call_many(client, [("ask_openai", {"prompt": f"question {i}"}) for i in range(100)])
    assert [r.is_error for r in results] == [False] * 100
    assert standin.peak_open_requests == 8
    requests = standin.requests
    assert len(requests) == 100
    assert sorted(r.body["input"] for r in requests) == sorted(f"question {i}" for i in range(100))
    assert all(r.outcome == "completed" for r in requests)


async def test_limits_are_per_provider_and_shared_by_every_tool(
    make_settings: SettingsFactory, standin: StandIn, states: list[AppState]
) -> None:
    """ask_openai, ask_claude and ask_many calls together keep each provider within its own limit."""
    standin.default_reply = Reply(delay_s=0.05)
    fanout = {"prompt": "hi", "targets": ["openai:a", "anthropic:b", "openai:c", "anthropic:d", "openai:e"]}
    calls = [("ask_openai", {"prompt": "hi"})] * 6 + [("ask_claude", {"prompt": "hi"})] * 6 + [("ask_many", fanout)] * 3
    async with connect(
        make_settings(openai_concurrency=3, anthropic_concurrency=2, anthropic_model="claude-x")
    ) as client:
        results = await call_many(client, calls)
    assert not any(r.is_error for r in results)
    requests = standin.requests
    assert len(requests) == 6 + 6 + 3 * 5
    assert peak_overlap(requests, "responses") == 3
    assert peak_overlap(requests, "messages") == 2
    assert standin.peak_open_requests <= 5
    (state,) = states
    assert [slot.limiter.open for slot in state.slots.values()] == [0, 0]


async def test_fifty_concurrent_calls_overlap_upstream(make_settings: SettingsFactory, standin: StandIn) -> None:
    """50 concurrent calls with a 500 ms upstream delay and room for all: they overlap instead of queueing."""
    standin.default_reply = Reply(delay_s=0.5)  # long enough for a busy machine to start half of them meanwhile
    async with connect(make_settings(openai_concurrency=64)) as client:
        await client.call_tool("ask_openai", {"prompt": "warm up"})  # SDK import and first connection
        standin.reset_peak()
        results = await call_many(client, [("ask_openai", {"prompt": "hi"})] * 50)
    assert not any(r.is_error for r in results)
    # Serialised calls would never overlap; 50 x 500 ms in a row would be 25 s.
    assert standin.peak_open_requests >= 25


async def test_a_waiting_call_honours_its_deadline(make_settings: SettingsFactory, standin: StandIn) -> None:
    """With a limit of 1 held by a long call, a second call times out while waiting and never reaches upstream."""
    standin.script_model("long", Reply(chunks=["one ", "two"], chunk_delay_s=30))
    async with connect(make_settings(openai_concurrency=1)) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.call_tool, "ask_openai", {"prompt": "hi", "model": "long"})
        await wait_until(lambda: any(r.deltas_sent for r in standin.requests))
        started = anyio.current_time()
        result = await client.call_tool("ask_openai", {"prompt": "hi", "model": "quick", "timeout_s": 0.3})
        elapsed = anyio.current_time() - started
        tg.cancel_scope.cancel()
    assert result.is_error
    error = error_details(result)["error"]
    assert (error["kind"], error["attempts"]) == ("deadline", 0)
    assert "still waiting for a free slot (all 1 concurrent OpenAI requests" in error["message"]
    assert elapsed < 10.0  # not the 30 s the slot is held (the deadline is 0.3 s)
    assert [r.model for r in standin.requests] == ["long"]


async def test_a_waiting_call_can_be_cancelled(
    make_settings: SettingsFactory, standin: StandIn, states: list[AppState]
) -> None:
    """A call cancelled while it waits for a slot never reaches upstream and leaves the limiter intact."""
    standin.script_model("long", Reply(chunks=["one ", "two"], chunk_delay_s=30))
    async with connect(make_settings(openai_concurrency=1)) as client:
        (state,) = states
        limiter = state.slots["openai"].limiter
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "ask_openai", {"prompt": "hi", "model": "long"})
            await wait_until(lambda: any(r.deltas_sent for r in standin.requests))
            tg.start_soon(client.call_tool, "ask_openai", {"prompt": "hi", "model": "waiting"})
            await wait_until(lambda: limiter.waiting == 1)
            tg.cancel_scope.cancel()
        await wait_until(lambda: limiter.open == 0 and limiter.waiting == 0)
        after = await client.call_tool("ask_openai", {"prompt": "hi", "model": "after"})
    assert not after.is_error
    assert [r.model for r in standin.requests] == ["long", "after"]


async def test_stdio_session_runs_calls_concurrently(standin: StandIn) -> None:
    """Over stdio, concurrent tool calls on one session are served at the same time, not one by one."""
    standin.default_reply = Reply(delay_s=0.3)
    async with Client(stdio_params(server_env(standin))) as client:
        await client.call_tool("ask_openai", {"prompt": "warm up"})
        standin.reset_peak()
        calls = [("ask_openai", {"prompt": "hi"})] * 3 + [
            ("ask_many", {"prompt": "hi", "targets": ["anthropic:claude-x"]})
        ]
        results = await call_many(client, calls)
    assert not any(r.is_error for r in results)
    assert standin.peak_open_requests >= 2


async def test_stdio_cancelled_fanout_closes_every_upstream_stream(standin: StandIn) -> None:
    """Over stdio (notifications/cancelled), cancelling a fan-out closes each of its upstream streams."""
    standin.default_reply = Reply(chunks=["first ", "never"], chunk_delay_s=30)
    async with Client(stdio_params(server_env(standin))) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "ask_many", {"prompt": "hi", "targets": ["openai:a", "anthropic:b"]})
            await wait_until(lambda: sum(r.deltas_sent for r in standin.requests) >= 2, within=15)
            tg.cancel_scope.cancel()
        await wait_until(lambda: all(r.outcome is not None for r in standin.requests))
        assert [r.outcome for r in standin.requests] == ["client_disconnected"] * 2
        standin.default_reply = Reply()
        after = await client.call_tool("ask_openai", {"prompt": "still serving?"})
    assert not after.is_error
