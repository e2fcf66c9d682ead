"""`ask_many`: one prompt to several targets at once, against the stand-in provider."""

from __future__ import annotations

from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside the calls (the stall limit counts).
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import SettingsFactory, text_of
from helpers import ProgressLog, connect, wait_until
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn
from mcp_llm_server.server import build_server

pytestmark = pytest.mark.anyio


def by_target(result: CallToolResult) -> dict[str, dict[str, Any]]:
    assert result.structured_content is not None
    return {answer["target"]: answer for answer in result.structured_content["answers"]}


def per_model(replies: dict[str, Reply]) -> Any:
    """A stand-in responder giving every request for a model the same reply (so retries see it again)."""
    return lambda rec: replies.get(rec.model or "")


async def all_finished(standin: StandIn, n: int, within: float = 3.0) -> list[RecordedRequest]:
    """Poll (bounded) until ``n`` requests were received and all of them have finished."""

    def done() -> bool:
        requests = standin.requests
        return len(requests) >= n and all(r.outcome is not None for r in requests)

    await wait_until(done, within, f"{n} finished requests")
    return standin.requests


async def test_fanout_returns_every_answer(client: Client, standin: StandIn) -> None:
    """Three targets over both providers: every answer comes back, in target order, with its details."""
    standin.responder = per_model(
        {
            "gpt-a": Reply(text="Answer A", input_tokens=7),
            "claude-b": Reply(text="Answer B"),
            "gpt-c": Reply(text="Answer C"),
        }
    )
    result = await client.call_tool(
        "ask_many", {"prompt": "Who?", "targets": ["openai:gpt-a", "anthropic:claude-b", " claude : gpt-c "]}
    )
    assert not result.is_error
    structured = result.structured_content
    assert structured is not None
    assert (structured["succeeded"], structured["failed"]) == (3, 0)
    answers = structured["answers"]
    assert [a["target"] for a in answers] == ["openai:gpt-a", "anthropic:claude-b", "anthropic:gpt-c"]
    assert [a["text"] for a in answers] == ["Answer A", "Answer B", "Answer C"]
    first = answers[0]
    assert (first["provider"], first["model"], first["stop_reason"], first["attempts"]) == (
        "openai",
        "gpt-a",
        "end",
        1,
    )
    assert (first["usage"]["input_tokens"], first["usage"]["output_tokens"]) == (7, 2)
    assert first["latency_ms"] > 0 and first["request_id"].startswith("req_standin_")
    assert first["error"] is None
    apis = sorted((r.api, r.model) for r in standin.requests)
    assert apis == [("messages", "claude-b"), ("messages", "gpt-c"), ("responses", "gpt-a")]
    text = text_of(result)
    assert "3 of 3 targets answered" in text
    assert text.index("## openai:gpt-a") < text.index("Answer A") < text.index("## anthropic:claude-b")


async def test_defaults_ask_each_configured_provider(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Without targets, each configured provider's default model is asked once."""
    settings = make_settings(openai_model="gpt-default", anthropic_model="claude-default")
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("ask_many", {"prompt": "hi"})
    assert not result.is_error
    assert list(by_target(result)) == ["openai:gpt-default", "anthropic:claude-default"]
    assert sorted(r.model or "" for r in standin.requests) == ["claude-default", "gpt-default"]


async def test_defaults_skip_an_unconfigured_provider(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Without targets, an unconfigured provider is left out; named explicitly, its entry says what to set."""
    async with Client(build_server(make_settings(anthropic_api_key=None))) as client:
        defaults = await client.call_tool("ask_many", {"prompt": "hi"})
        explicit = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai", "anthropic"]})
    assert list(by_target(defaults)) == ["openai:gpt-5.5"]
    assert not explicit.is_error
    entry = by_target(explicit)["anthropic:claude-sonnet-5-5"]
    assert entry["error"]["kind"] == "not_configured"
    assert "ANTHROPIC_API_KEY" in entry["error"]["message"]
    assert entry["attempts"] == 0
    assert all(r.api == "responses" for r in standin.requests)


async def test_failing_targets_leave_the_others_intact(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A bad model, a rate limit outlasting its retries and a stalled target fail alone; the good one answers."""
    standin.responder = per_model(
        {
            "good": Reply(text="Fine answer"),
            "missing": Reply.error(404, message="The model `missing` does not exist"),
            "busy": Reply.error(429, message="Rate limit reached"),
            "silent": Reply(delay_s=30),
        }
    )
    # Every target's first byte must beat the stall limit but the silent one's: 1 s leaves a busy machine room.
    settings = make_settings(max_attempts=2, stall_timeout_s=1.0)
    async with Client(build_server(settings)) as client:
        result = await client.call_tool(
            "ask_many",
            {"prompt": "hi", "targets": ["openai:good", "openai:missing", "anthropic:busy", "openai:silent"]},
        )
    assert not result.is_error
    assert result.structured_content is not None
    assert (result.structured_content["succeeded"], result.structured_content["failed"]) == (1, 3)
    answers = by_target(result)
    assert answers["openai:good"]["text"] == "Fine answer"
    assert answers["openai:good"]["error"] is None
    missing = answers["openai:missing"]["error"]
    assert (missing["kind"], missing["status"], missing["retryable"]) == ("not_found", 404, False)
    assert answers["openai:missing"]["attempts"] == 1
    busy = answers["anthropic:busy"]
    assert (busy["error"]["kind"], busy["error"]["status"], busy["attempts"]) == ("rate_limited", 429, 2)
    assert busy["error"]["request_id"].startswith("req_standin_")
    silent = answers["openai:silent"]
    assert (silent["error"]["kind"], silent["attempts"], silent["text"]) == ("stalled", 2, None)
    text = text_of(result)
    assert "1 of 4 targets answered" in text and "## openai:missing: failed (not_found)" in text


async def test_every_target_failing_is_an_error(client: Client, standin: StandIn) -> None:
    """When no target answers the call is an error listing each target's error, structured content included."""
    standin.responder = per_model({"x": Reply.error(404), "y": Reply.error(400, message="max_tokens too large")})
    result = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai:x", "anthropic:y"]})
    assert result.is_error
    text = text_of(result)
    assert text.startswith("Every target failed.")
    assert "## openai:x: failed (not_found)" in text and "max_tokens too large" in text
    answers = by_target(result)
    assert [a["error"]["kind"] for a in answers.values()] == ["not_found", "bad_request"]


async def test_invalid_targets_are_refused_before_any_request(client: Client, standin: StandIn) -> None:
    """Malformed targets (unknown provider, empty model, too many, empty list) never reach the provider."""
    result = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai", "gemini:pro", "openai:"]})
    assert result.is_error
    text = text_of(result)
    assert "`gemini:pro`: unknown provider `gemini`" in text and "`openai:`: empty model name" in text
    too_many = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai"] * 9})
    assert too_many.is_error
    empty = await client.call_tool("ask_many", {"prompt": "hi", "targets": []})
    assert empty.is_error
    assert standin.requests == []


async def test_repeated_targets_are_independent_samples(client: Client, standin: StandIn) -> None:
    """A target given twice is asked twice; the second is labelled `#2`."""
    result = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai:m", "openai:m"]})
    assert list(by_target(result)) == ["openai:m", "openai:m #2"]
    assert [r.model for r in standin.requests] == ["m", "m"]


async def test_model_names_keep_their_colons(client: Client, standin: StandIn) -> None:
    """Only the first colon separates the provider: `openai:llama3.2:3b` asks the model `llama3.2:3b`."""
    result = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai:llama3.2:3b"]})
    assert not result.is_error
    assert [r.model for r in standin.requests] == ["llama3.2:3b"]


async def test_progress_streams_each_target_and_counts_finished(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """Progress rises strictly, text is prefixed with its target, and each target's finish is counted."""
    standin.responder = per_model(
        {
            "fast": Reply(chunks=["quick ", "answer"]),
            "slow": Reply(chunks=["slow ", "and ", "steady"], chunk_delay_s=0.05),
            "broken": Reply.error(404),
        }
    )
    log = ProgressLog()
    async with connect(make_settings(progress_interval_s=0.02)) as client:
        result = await client.call_tool(
            "ask_many",
            {"prompt": "hi", "targets": ["openai:fast", "anthropic:slow", "openai:broken"]},
            progress_callback=log,
        )
    assert not result.is_error
    values = log.values
    assert values == sorted(set(values)) and values[0] == 1
    messages = log.messages
    assert messages[0].startswith("Asking 3 targets at once: openai:fast, anthropic:slow, openai:broken")
    finished = [m for m in messages if "targets finished" in m]
    assert [m.rsplit("; ", 1)[1] for m in finished] == [f"{n}/3 targets finished" for n in (1, 2, 3)]
    assert any(m.startswith("[openai:broken] failed (not_found)") for m in finished)
    slow_text = [i for i, m in enumerate(messages) if m.startswith("[anthropic:slow] slow ")]
    slow_done = next(i for i, m in enumerate(messages) if m.startswith("[anthropic:slow] answered"))
    assert messages[slow_text[-1]] == "[anthropic:slow] slow and steady"
    assert slow_text[-1] < slow_done
    assert "[openai:fast] quick answer" in messages


async def test_cancelling_a_fanout_closes_every_upstream_stream(client: Client, standin: StandIn) -> None:
    """Cancelled mid-stream, a fan-out of three stalled targets leaves no upstream request open."""
    standin.default_reply = Reply(chunks=["first ", "never"], chunk_delay_s=30)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def fan_out() -> None:
                await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai:a", "anthropic:b", "openai:c"]})

            tg.start_soon(fan_out)
            await wait_until(lambda: sum(r.deltas_sent for r in standin.requests) >= 3)
            tg.cancel_scope.cancel()
    requests = await all_finished(standin, 3)
    assert sorted(r.model or "" for r in requests) == ["a", "b", "c"]
    assert [r.outcome for r in requests] == ["client_disconnected"] * 3
    assert standin.open_requests == 0
