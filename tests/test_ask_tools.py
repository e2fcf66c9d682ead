"""`ask_openai` and `ask_claude` end to end in memory: the real MCP client and SDKs against the stand-in upstream."""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside timed calls.
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY, SettingsFactory, error_details, text_of
from helpers import ProgressLog, connect, error_of, finished, words
from mcp import Client, MCPDeprecationWarning
from mcp.types import CallToolResult, ProgressNotification

from mcp_llm_server import __version__
from mcp_llm_server._standin import RecordedRequest, Reply, StandIn

MODES = ["auto", "legacy"]
TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
APIS = {"openai": "responses", "anthropic": "messages"}
LABELS = {"openai": "OpenAI", "anthropic": "Anthropic"}
# The streams a deadline or a cancel cuts would run 10 s; closed within half that, they were cut (it takes
# milliseconds), however busy the machine.
UPSTREAM_CLOSED_S = 5.0


# --- helpers ---------------------------------------------------------------------------------------------


def assert_no_keys(result: CallToolResult) -> None:
    everything = text_of(result) + json.dumps(result.structured_content) + json.dumps(result.meta)
    assert OPENAI_KEY not in everything
    assert ANTHROPIC_KEY not in everything


# --- tools/list ------------------------------------------------------------------------------------------


def _variant(schema: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of an optional parameter's schema."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") != "null":
            return dict(branch)
    raise AssertionError(schema)


@pytest.mark.anyio
async def test_tools_list_describes_both_tools(client: Client) -> None:
    """tools/list shows both tools with titles, read-only/open-world hints, constraints and the output schema."""
    listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    tools = {name: listed[name] for name in ("ask_openai", "ask_claude")}  # other tools may be listed too
    for name, tool in tools.items():
        assert tool.title and tool.description, name
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.open_world_hint is True
        props = tool.input_schema["properties"]
        assert tool.input_schema["required"] == ["prompt"]
        assert props["prompt"]["type"] == "string" and props["prompt"]["minLength"] == 1
        assert {"system", "model", "max_tokens", "timeout_s"} <= set(props)
        timeout = _variant(props["timeout_s"])
        assert timeout["type"] == "number" and timeout["minimum"] == 0 and timeout["maximum"] > 0
        assert _variant(props["max_tokens"])["minimum"] == 1
        assert tool.output_schema is not None
        output = tool.output_schema
        assert {"text", "model", "stop_reason", "usage", "latency_ms", "attempts", "request_id"} <= set(
            output["properties"]
        )
        assert {"text", "model", "usage", "attempts", "request_id"} <= set(output["required"])
    temperature = _variant(tools["ask_openai"].input_schema["properties"]["temperature"])
    assert temperature == {**temperature, "type": "number", "minimum": 0, "maximum": 2}
    assert "temperature" not in tools["ask_claude"].input_schema["properties"]
    assert client.server_info is not None and client.server_info.version == __version__ != ""
    assert client.instructions and "ask_openai" in client.instructions and "ask_claude" in client.instructions


# --- success ---------------------------------------------------------------------------------------------


def _assert_answer(result: CallToolResult, rec: RecordedRequest, provider: str, text: str) -> None:
    assert not result.is_error, text_of(result)
    assert text_of(result) == text
    data = result.structured_content
    assert data is not None
    assert data["text"] == text
    assert data["provider"] == provider
    assert data["model"] == rec.model
    assert data["stop_reason"] == "end"
    assert isinstance(data["usage"]["input_tokens"], int) and data["usage"]["output_tokens"] == len(text.split())
    assert data["latency_ms"] > 0
    assert data["attempts"] == 1
    assert data["request_id"] == rec.request_id


@pytest.mark.anyio
async def test_openai_responses_success(client: Client, standin: StandIn) -> None:
    """ask_openai streams a Responses answer and reports it with the upstream request id; the body is as sent."""
    standin.script(Reply(text="Four is the answer"))
    result = await client.call_tool(
        "ask_openai",
        {"prompt": "2+2?", "system": "Be terse.", "model": "gpt-standin", "max_tokens": 77, "temperature": 0.4},
    )
    (rec,) = standin.requests
    _assert_answer(result, rec, "openai", "Four is the answer")
    assert rec.api == "responses" and rec.stream
    assert rec.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = rec.body
    assert body["model"] == "gpt-standin"
    assert body["input"] == "2+2?"
    assert body["instructions"] == "Be terse."
    assert body["max_output_tokens"] == 77
    assert body["temperature"] == 0.4


@pytest.mark.anyio
async def test_openai_chat_success(make_settings: SettingsFactory, standin: StandIn) -> None:
    """With MCP_LLM_OPENAI_API=chat, ask_openai uses Chat Completions with the system text as a system message."""
    standin.script(Reply(text="Chat says hi"))
    async with connect(make_settings(openai_api="chat", max_tokens=321)) as client:
        result = await client.call_tool(
            "ask_openai", {"prompt": "hello", "system": "You are terse.", "model": "llama-local", "temperature": 1.5}
        )
    (rec,) = standin.requests
    _assert_answer(result, rec, "openai", "Chat says hi")
    assert rec.api == "chat"
    assert rec.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = rec.body
    assert body["model"] == "llama-local"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello"},
    ]
    assert body["max_tokens"] == 321
    assert body["temperature"] == 1.5


@pytest.mark.anyio
async def test_anthropic_success(client: Client, standin: StandIn) -> None:
    """ask_claude streams a Messages answer; system and max_tokens are sent, temperature never is."""
    standin.script(Reply(text="Claude answers briefly"))
    result = await client.call_tool(
        "ask_claude", {"prompt": "hi", "system": "Answer in four words.", "model": "claude-standin", "max_tokens": 50}
    )
    (rec,) = standin.requests
    _assert_answer(result, rec, "anthropic", "Claude answers briefly")
    assert rec.api == "messages"
    assert rec.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    body = rec.body
    assert body["model"] == "claude-standin"
    assert body["system"] == "Answer in four words."
    assert body["max_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "temperature" not in body


@pytest.mark.anyio
async def test_defaults_from_settings(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Without model/max_tokens arguments, the settings' defaults are sent."""
    settings = make_settings(openai_model="gpt-default-x", anthropic_model="claude-default-y", max_tokens=99)
    async with connect(settings) as client:
        assert not (await client.call_tool("ask_openai", {"prompt": "a"})).is_error
        assert not (await client.call_tool("ask_claude", {"prompt": "b"})).is_error
    first, second = standin.requests
    assert (first.body["model"], first.body["max_output_tokens"]) == ("gpt-default-x", 99)
    assert (second.body["model"], second.body["max_tokens"]) == ("claude-default-y", 99)
    assert "instructions" not in first.body and "temperature" not in first.body and "system" not in second.body


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_stop_reason_max_tokens(client: Client, standin: StandIn, provider: str) -> None:
    """An answer cut by the token limit reports stop_reason max_tokens."""
    standin.script(Reply(text="cut short", stop_reason="max_tokens"))
    result = await client.call_tool(TOOLS[provider], {"prompt": "long story"})
    assert result.structured_content is not None
    assert result.structured_content["stop_reason"] == "max_tokens"


# --- progress --------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", MODES)
async def test_answer_streams_as_progress(
    make_settings: SettingsFactory, standin: StandIn, mode: str, provider: str
) -> None:
    """Progress notifications carry the growing answer while it streams, before the result, in both eras."""
    chunks = words(8)
    full = "".join(chunks)
    standin.script(Reply(chunks=chunks, chunk_delay_s=0.1))
    order: list[str] = []
    log = ProgressLog(order, standin)
    async with connect(make_settings(), mode=mode) as client:
        result = await client.call_tool(TOOLS[provider], {"prompt": "count"}, progress_callback=log)
        order.append("result")
    (rec,) = standin.requests
    _assert_answer(result, rec, provider, full)
    assert order[-1] == "result" and order.count("result") == 1
    assert len(log.events) >= 2
    # The first notification arrived while the stand-in was still streaming (the stand-in's own count, no clocks).
    assert log.deltas_sent[0] < len(chunks), log.deltas_sent
    assert all(b > a for a, b in itertools.pairwise(log.values))
    assert log.values[0] == 1
    messages = log.messages
    assert all(full.startswith(m) and m for m in messages)
    assert all(len(b) > len(a) for a, b in itertools.pairwise(messages))
    assert messages[-1] == full


@pytest.mark.anyio
async def test_progress_is_throttled(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A 200-chunk stream gives far fewer notifications (one per interval), the first one at once."""
    interval = 0.2
    chunks = words(200)
    standin.script(Reply(chunks=chunks, chunk_delay_s=0.002))
    log = ProgressLog()
    async with connect(make_settings(progress_interval_s=interval, progress_tail_chars=100_000)) as client:
        started = time.monotonic()
        result = await client.call_tool("ask_openai", {"prompt": "go"}, progress_callback=log)
        elapsed = time.monotonic() - started
    full = "".join(chunks)
    assert text_of(result) == full
    count = len(log.events)
    assert 2 <= count <= elapsed / interval + 3
    assert count < len(chunks) / 5
    assert len(log.messages[0]) < len(full) / 2  # (the first delta goes out at once: see the next test)
    assert log.messages[-1] == full
    # Later notifications keep the interval: the n-th after the first is sent n intervals after the call began at
    # the earliest, and a late arrival only adds to that (the last one is the flush at the end of the stream).
    assert all(at - started >= n * interval - 0.001 for n, at in enumerate(log.times[:-1])), (started, log.times)


@pytest.mark.anyio
async def test_first_delta_at_once_later_ones_throttled(make_settings: SettingsFactory, standin: StandIn) -> None:
    """The first delta is sent at once; within the interval later ones wait, and the end of the stream is flushed."""
    standin.script(Reply(chunks=["first ", "second ", "third"], chunk_delay_s=0.3))
    log = ProgressLog()
    async with connect(make_settings(progress_interval_s=5.0)) as client:
        result = await client.call_tool("ask_openai", {"prompt": "go"}, progress_callback=log)
    assert text_of(result) == "first second third"
    assert log.messages == ["first ", "first second third"]


@pytest.mark.anyio
async def test_progress_carries_the_tail(make_settings: SettingsFactory, standin: StandIn) -> None:
    """With a long answer, each progress message is its last `progress_tail_chars` characters after an ellipsis."""
    chunks = words(60)
    full = "".join(chunks)
    standin.script(Reply(chunks=chunks, chunk_delay_s=0.005))
    log = ProgressLog()
    async with connect(make_settings(progress_tail_chars=30)) as client:
        await client.call_tool("ask_claude", {"prompt": "go"}, progress_callback=log)
    assert log.messages[-1] == "…" + full[-30:]
    for message in log.messages:
        assert len(message) <= 31
        tail = message.removeprefix("…")
        assert tail in full


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_no_progress_without_callback(make_settings: SettingsFactory, standin: StandIn, mode: str) -> None:
    """Without a progress callback the call works and no progress notification is sent."""
    received: list[object] = []

    async def on_message(message: object) -> None:
        received.append(message)

    standin.script(Reply(chunks=words(10), chunk_delay_s=0.01))
    async with connect(make_settings(), mode=mode, message_handler=on_message) as client:
        result = await client.call_tool("ask_openai", {"prompt": "quiet"})
    assert text_of(result) == "".join(words(10))
    assert not [m for m in received if isinstance(m, ProgressNotification)]


@pytest.mark.anyio
async def test_progress_reaches_legacy_message_stream(make_settings: SettingsFactory, standin: StandIn) -> None:
    """In the legacy era, progress travels as notifications/progress carrying the caller's token."""
    received: list[ProgressNotification] = []

    async def on_message(message: object) -> None:
        if isinstance(message, ProgressNotification):
            received.append(message)

    standin.script(Reply(chunks=words(5), chunk_delay_s=0.02))
    log = ProgressLog()
    async with connect(make_settings(), mode="legacy", message_handler=on_message) as client:
        await client.call_tool("ask_claude", {"prompt": "go"}, progress_callback=log)
    assert received and len({n.params.progress_token for n in received}) == 1
    assert [n.params.progress for n in received] == log.values


# --- retries ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "reply"),
    [
        ("openai", Reply.error(429, retry_after=0.3)),
        ("anthropic", Reply.error(429, retry_after=0.3)),
        ("openai", Reply.error(429, retry_after_ms=300)),
    ],
    ids=["openai-retry-after", "anthropic-retry-after", "openai-retry-after-ms"],
)
async def test_rate_limit_waits_retry_after(client: Client, standin: StandIn, provider: str, reply: Reply) -> None:
    """A 429 is retried after the server-requested wait; the retry is announced as progress."""
    standin.script(reply, Reply(text="second time lucky"))
    log = ProgressLog()
    result = await client.call_tool(TOOLS[provider], {"prompt": "hi"}, progress_callback=log)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["attempts"] == 2
    first, second = standin.requests
    assert second.received_at - first.received_at >= 0.3 - 0.02
    assert result.structured_content["request_id"] == second.request_id
    assert f"{LABELS[provider]}: rate limited (HTTP 429); retrying in 0.3 s (attempt 2 of 4)" in log.messages


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "reply"),
    [
        ("openai", Reply.error(500)),
        ("anthropic", Reply.error(500)),
        ("anthropic", Reply.error(529)),
        ("openai", Reply.error(503)),
        ("openai", Reply.reset()),
        ("anthropic", Reply.reset()),
    ],
    ids=["openai-500", "anthropic-500", "anthropic-529", "openai-503", "openai-reset", "anthropic-reset"],
)
async def test_transient_failure_is_retried(client: Client, standin: StandIn, provider: str, reply: Reply) -> None:
    """5xx, Anthropic's 529 and a connection reset are retried, and the second attempt's answer is returned."""
    standin.script(reply, Reply(text="recovered"))
    result = await client.call_tool(TOOLS[provider], {"prompt": "hi"})
    assert not result.is_error, text_of(result)
    assert text_of(result) == "recovered"
    assert result.structured_content is not None and result.structured_content["attempts"] == 2
    assert len(standin.requests) == 2


@pytest.mark.anyio
async def test_retry_after_beyond_cap_fails_at_once(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A retry-after longer than MCP_LLM_RETRY_AFTER_MAX_S is not waited: one attempt, and the message says why."""
    standin.script(Reply.error(429, retry_after=30))
    async with connect(make_settings(retry_after_max_s=5)) as client:
        started = time.monotonic()
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
        assert time.monotonic() - started < 3.0
    error = error_of(result)
    assert error["attempts"] == 1 and error["kind"] == "rate_limited" and error["status"] == 429
    assert len(standin.requests) == 1
    assert "asked to wait 30 s, more than the 5 s this server waits" in text_of(result)


@pytest.mark.anyio
async def test_retry_after_beyond_deadline_fails_at_once(client: Client, standin: StandIn) -> None:
    """A retry-after that would not fit in the call's timeout_s is not waited: one attempt, and it says why."""
    standin.script(Reply.error(429, retry_after=20))
    started = time.monotonic()
    result = await client.call_tool("ask_claude", {"prompt": "hi", "timeout_s": 5})
    assert time.monotonic() - started < 3.0
    error = error_of(result)
    assert error["attempts"] == 1 and error["kind"] == "rate_limited"
    assert len(standin.requests) == 1
    assert "would not fit in the call's deadline" in text_of(result)


@pytest.mark.anyio
async def test_attempts_never_exceed_max(make_settings: SettingsFactory, standin: StandIn) -> None:
    """An upstream that always answers 429 gets exactly max_attempts requests, then the call fails."""
    standin.responder = lambda rec: Reply.error(429, retry_after=0.01)
    async with connect(make_settings(max_attempts=3)) as client:
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
    error = error_of(result)
    assert error["attempts"] == 3 and error["retryable"] is True
    assert len(standin.requests) == 3
    assert "Gave up after 3 attempts" in text_of(result)


_FINAL = {
    400: ("bad_request", "request rejected as invalid"),
    401: ("authentication", "authentication failed"),
    403: ("permission", "permission denied"),
    404: ("not_found", "not found"),
    422: ("bad_request", "request rejected as invalid"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("status", sorted(_FINAL))
async def test_final_status_is_not_retried(client: Client, standin: StandIn, provider: str, status: int) -> None:
    """400/401/403/404/422: one request, an isError naming provider, what happened and the request id; no key."""
    # The upstream echoes both keys back (as some proxies do); neither may reach the host.
    standin.script(Reply.error(status, message=f"Nope: key {OPENAI_KEY} / {ANTHROPIC_KEY} refused."))
    result = await client.call_tool(TOOLS[provider], {"prompt": "hi"})
    (rec,) = standin.requests
    kind, what = _FINAL[status]
    error = error_of(result)
    assert error["kind"] == kind and error["status"] == status
    assert error["attempts"] == 1 and error["retryable"] is False
    assert error["request_id"] == rec.request_id
    text = text_of(result)
    assert text.startswith(f"{LABELS[provider]}: {what}")
    assert f"HTTP {status}" in text
    assert f"Request id: {rec.request_id}" in text
    assert_no_keys(result)


# --- stalls, broken streams, deadlines -------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_stall_before_first_token_is_retried(
    make_settings: SettingsFactory, standin: StandIn, provider: str
) -> None:
    """A stream silent before its first token is abandoned after the stall limit, retried, then reported stalled."""
    standin.responder = lambda rec: Reply.stall(after=0)
    async with connect(make_settings(stall_timeout_s=0.3, max_attempts=2)) as client:
        result = await client.call_tool(TOOLS[provider], {"prompt": "hi"})
    error = error_of(result)
    assert error["kind"] == "stalled" and error["attempts"] == 2
    assert "stream stalled" in text_of(result)
    assert error_details(result)["partial_text"] == ""
    for index in range(2):
        assert (await finished(standin, index)).outcome == "stalled_then_disconnected"
    assert len(standin.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_stall_after_tokens_keeps_partial_text(
    make_settings: SettingsFactory, standin: StandIn, provider: str
) -> None:
    """A stream that stalls after forwarding tokens is not retried; the error keeps the partial answer."""
    standin.script(Reply.stall(after=2))
    async with connect(make_settings(stall_timeout_s=0.3)) as client:
        result = await client.call_tool(TOOLS[provider], {"prompt": "hi"})
    error = error_of(result)
    assert error["kind"] == "stalled" and error["attempts"] == 1
    assert error_details(result)["partial_text"] == "Hello from"
    assert text_of(result).endswith("Hello from")
    assert (await finished(standin, 0)).outcome == "stalled_then_disconnected"
    assert len(standin.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault", ["midstream_error", "drop"])
async def test_broken_stream_after_tokens(client: Client, standin: StandIn, provider: str, fault: str) -> None:
    """An in-stream error or a dropped connection after tokens ends the call at once, keeping the partial text."""
    reply = Reply.midstream_error(after=2) if fault == "midstream_error" else Reply.drop(after=2)
    standin.script(reply, Reply(text="must not be requested"))
    log = ProgressLog()
    result = await client.call_tool(TOOLS[provider], {"prompt": "hi"}, progress_callback=log)
    error = error_of(result)
    assert error["attempts"] == 1
    assert error_details(result)["partial_text"] == "Hello from"
    assert "Partial answer received before the failure:\nHello from" in text_of(result)
    assert len(standin.requests) == 1
    assert log.messages and all("Hello from".startswith(m) for m in log.messages)  # tokens were forwarded


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_call_deadline(client: Client, standin: StandIn, provider: str) -> None:
    """timeout_s bounds the whole call: a slow stream ends promptly as a deadline error keeping the partial text."""
    standin.script(Reply(chunks=words(50), chunk_delay_s=0.2))  # 10 s
    started = time.monotonic()
    # 1.5 s: long enough for the first token to arrive on a busy machine, far shorter than the stream.
    result = await client.call_tool(TOOLS[provider], {"prompt": "slow", "timeout_s": 1.5})
    elapsed = time.monotonic() - started
    error = error_of(result)
    assert error["kind"] == "deadline"
    assert "1.5 s" in text_of(result)
    assert elapsed < UPSTREAM_CLOSED_S
    assert error_details(result)["partial_text"].startswith("w0 ")
    rec = await finished(standin, 0, within=UPSTREAM_CLOSED_S)
    assert rec.outcome == "client_disconnected" and rec.deltas_sent < 50


# --- cancellation ----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("mode", MODES)
async def test_cancel_closes_upstream(
    make_settings: SettingsFactory, standin: StandIn, mode: str, provider: str
) -> None:
    """Cancelling a call closes the upstream stream at once, and the same session serves the next call."""
    standin.script(Reply(chunks=words(100), chunk_delay_s=0.1), Reply(text="next one"))
    log = ProgressLog()
    async with connect(make_settings(), mode=mode) as client:
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:

                async def cancel_after_first_token() -> None:
                    await log.first.wait()
                    scope.cancel()

                tg.start_soon(cancel_after_first_token)
                await client.call_tool(TOOLS[provider], {"prompt": "long"}, progress_callback=log)
                tg.cancel_scope.cancel()  # only reached if the call ended before it could be cancelled
        cancelled_at = time.monotonic()
        assert scope.cancelled_caught
        rec = await finished(standin, 0, within=UPSTREAM_CLOSED_S)
        assert rec.outcome == "client_disconnected"
        assert rec.finished_at is not None and rec.finished_at - cancelled_at < UPSTREAM_CLOSED_S
        assert rec.deltas_sent < 100
        result = await client.call_tool(TOOLS[provider], {"prompt": "again"})
    assert text_of(result) == "next one"


# --- configuration and arguments -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_missing_key_only_disables_that_provider(
    make_settings: SettingsFactory, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an Anthropic key ask_claude says which variable to set, sends nothing, and ask_openai still works."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment-0000")  # explicit settings win
    async with connect(make_settings(anthropic_api_key=None)) as client:
        missing = await client.call_tool("ask_claude", {"prompt": "hi"})
        working = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert missing.is_error
    assert "ANTHROPIC_API_KEY" in text_of(missing) and "Anthropic is not configured" in text_of(missing)
    assert not working.is_error
    assert [rec.api for rec in standin.requests] == ["responses"]


@pytest.mark.anyio
async def test_openai_key_optional_for_compatible_server(make_settings: SettingsFactory, standin: StandIn) -> None:
    """With a non-OpenAI base URL and no key, ask_openai works with a placeholder key."""
    async with connect(make_settings(openai_api_key=None, openai_api="chat")) as client:
        result = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert not result.is_error, text_of(result)
    (rec,) = standin.requests
    assert rec.headers["authorization"] == "Bearer not-needed"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "arguments", "field"),
    [
        ("ask_openai", {"prompt": ""}, "prompt"),
        ("ask_claude", {"prompt": ""}, "prompt"),
        ("ask_openai", {}, "prompt"),
        ("ask_openai", {"prompt": "hi", "temperature": 5}, "temperature"),
        ("ask_openai", {"prompt": "hi", "temperature": "warm"}, "temperature"),
        ("ask_claude", {"prompt": ["not", "a", "string"]}, "prompt"),
        ("ask_claude", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ("ask_openai", {"prompt": "hi", "timeout_s": -1}, "timeout_s"),
    ],
)
async def test_bad_arguments(
    client: Client, standin: StandIn, tool: str, arguments: dict[str, Any], field: str
) -> None:
    """Arguments that break the input schema give an isError validation message naming the field; nothing is sent."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error
    text = text_of(result)
    assert f"Invalid argument for `{tool}`" in text and f"`{field}`" in text and "Accepted: " in text
    assert standin.requests == []


@pytest.mark.anyio
async def test_prompt_too_long(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A prompt plus system text over MCP_LLM_MAX_PROMPT_CHARS is refused before any upstream request."""
    async with connect(make_settings(max_prompt_chars=100)) as client:
        refused = await client.call_tool("ask_openai", {"prompt": "p" * 80, "system": "s" * 30})
        accepted = await client.call_tool("ask_claude", {"prompt": "p" * 70, "system": "s" * 30})
    assert refused.is_error
    assert "MCP_LLM_MAX_PROMPT_CHARS" in text_of(refused) and "110" in text_of(refused)
    assert not accepted.is_error
    assert [rec.api for rec in standin.requests] == ["messages"]


@pytest.mark.anyio
async def test_legacy_client_sets_log_level(make_settings: SettingsFactory) -> None:
    """A legacy host sees the logging capability and may call logging/setLevel, which sets the server's level."""
    package_logger = logging.getLogger("mcp_llm_server")
    before = package_logger.level
    try:
        async with connect(make_settings(), mode="legacy") as client:
            assert client.server_capabilities.logging is not None
            with pytest.warns(MCPDeprecationWarning):
                await client.set_logging_level("debug")
            assert package_logger.level == logging.DEBUG
            with pytest.warns(MCPDeprecationWarning):
                await client.set_logging_level("error")
            assert package_logger.level == logging.ERROR
            assert {"ask_openai", "ask_claude"} <= {tool.name for tool in (await client.list_tools()).tools}
    finally:
        package_logger.setLevel(before)
