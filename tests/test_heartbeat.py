"""Heartbeats: progress while a model sends nothing (slow first byte), in memory and over stdio, single and fan-out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SettingsFactory, server_env, stdio_params, text_of
from helpers import ProgressLog, connect
from mcp import Client
from mcp.types import ProgressNotification

from mcp_llm_server._standin import Reply, StandIn

pytestmark = pytest.mark.anyio

TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
LABELS = {"openai": "OpenAI", "anthropic": "Anthropic"}
# Over a 1 s silence that is 9 heartbeats: the ≥ 3 asked for hold with 0.7 s of delays from a busy machine.
BEAT_S = 0.1
HEARTBEAT = re.compile(r"still waiting for (?P<what>.+) \((?P<seconds>[0-9.]+) s\)…$")


class Recorder(ProgressLog):
    """The progress log, knowing which of its messages are heartbeats."""

    def heartbeats(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if HEARTBEAT.search(m)]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_heartbeats_while_the_first_byte_is_late(
    make_settings: SettingsFactory, standin: StandIn, provider: str
) -> None:
    """A 1 s silent upstream with heartbeat_s=0.1 gives ≥ 3 heartbeats naming the model, rising, then the answer."""
    standin.script(Reply(text="late but here", delay_s=1.0))
    log = Recorder()
    async with connect(make_settings(heartbeat_s=BEAT_S)) as client:
        result = await client.call_tool(TOOLS[provider], {"prompt": "q", "model": "slowpoke"}, progress_callback=log)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "late but here"
    answer = log.messages.index("late but here")
    # The ones before the answer (the stream's end can be quiet long enough for one more on a busy machine).
    beats = [i for i in log.heartbeats() if i < answer]
    assert len(beats) >= 3, log.messages
    assert all(log.messages[i].startswith(f"still waiting for {LABELS[provider]} slowpoke (") for i in beats)
    seconds = [float(HEARTBEAT.search(log.messages[i])["seconds"]) for i in beats]  # type: ignore[index]
    assert seconds == sorted(seconds) and seconds[0] >= BEAT_S
    assert log.values == sorted(set(log.values)) and log.values[0] == 1


async def test_heartbeats_resume_when_the_stream_goes_quiet(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A heartbeat is due after heartbeat_s without any notification, also between deltas of a slow stream."""
    standin.script(Reply(chunks=["first ", "second"], chunk_delay_s=0.8))
    log = Recorder()
    async with connect(make_settings(heartbeat_s=0.2)) as client:
        result = await client.call_tool("ask_openai", {"prompt": "q"}, progress_callback=log)
    assert text_of(result) == "first second"
    first, last = log.messages.index("first "), log.messages.index("first second")
    assert [i for i in log.heartbeats() if first < i < last], log.messages
    assert log.values == sorted(set(log.values))


async def test_no_heartbeats_when_disabled(make_settings: SettingsFactory, standin: StandIn) -> None:
    """heartbeat_s=0 turns heartbeats off: a slow first byte sends nothing until the answer streams."""
    standin.script(Reply(text="quiet", delay_s=0.6))
    log = Recorder()
    async with connect(make_settings(heartbeat_s=0)) as client:
        await client.call_tool("ask_claude", {"prompt": "q"}, progress_callback=log)
    assert log.messages == ["quiet"]


async def test_no_heartbeats_without_a_progress_token(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A caller that asked for no progress gets no heartbeat (no relay runs), however long the wait."""
    received: list[object] = []

    async def on_message(message: object) -> None:
        received.append(message)

    standin.script(Reply(text="silent", delay_s=0.8))
    async with connect(make_settings(heartbeat_s=0.1), message_handler=on_message) as client:
        result = await client.call_tool("ask_openai", {"prompt": "q"})
    assert text_of(result) == "silent"
    assert not [m for m in received if isinstance(m, ProgressNotification)]


async def test_heartbeats_in_ask_many_name_the_targets_still_running(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """ask_many sends heartbeats while every target is silent, naming the targets still running."""
    standin.default_reply = Reply(text="slow", delay_s=1.0)
    log = Recorder()
    async with connect(make_settings(heartbeat_s=BEAT_S)) as client:
        result = await client.call_tool(
            "ask_many", {"prompt": "q", "targets": ["openai:m1", "anthropic:m2"]}, progress_callback=log
        )
    assert not result.is_error, text_of(result)
    first_done = min(i for i, m in enumerate(log.messages) if "targets finished" in m)
    named = {i: HEARTBEAT.search(m)["what"] for i, m in enumerate(log.messages) if HEARTBEAT.search(m)}  # type: ignore[index]
    early = [i for i in named if i < first_done]
    assert len(early) >= 3, log.messages
    assert all(named[i] == "openai:m1, anthropic:m2" for i in early)
    # After the first answer (a busy machine can space the two by more than a heartbeat) only the other is named.
    assert all(named[i] in ("openai:m1", "anthropic:m2") for i in named if i > first_done), log.messages
    assert log.values == sorted(set(log.values))


async def test_heartbeats_over_stdio(standin: StandIn, tmp_path: Path) -> None:
    """Over stdio, MCP_LLM_HEARTBEAT_S sets the interval; heartbeats reach the host before the answer."""
    standin.script(Reply(text="over the wire", delay_s=1.0))
    log = Recorder()
    env = server_env(standin, MCP_LLM_HEARTBEAT_S=str(BEAT_S))
    async with Client(stdio_params(env)) as client:
        result = await client.call_tool("ask_claude", {"prompt": "q", "model": "far"}, progress_callback=log)
    assert text_of(result) == "over the wire"
    beats = log.heartbeats()
    assert len(beats) >= 3, log.messages
    assert log.messages[beats[0]].startswith("still waiting for Anthropic far (")
    assert log.values == sorted(set(log.values))
