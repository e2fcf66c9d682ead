"""`reasoning_effort` end to end in memory: request parameters, reasoning as marked progress, reasoning tokens."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SettingsFactory, text_of
from helpers import ProgressLog, connect
from mcp import Client

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.progress import REASONING_MARK

pytestmark = pytest.mark.anyio

TOOLS = {"openai": "ask_openai", "anthropic": "ask_claude"}
BUDGETS = {"low": 2_048, "medium": 8_192, "high": 16_384}
THOUGHTS = ["Let me ", "weigh ", "both ", "options."]
ANSWER = ["The ", "answer ", "is ", "42."]


# --- request parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
async def test_responses_body_carries_effort_and_summary(
    make_settings: SettingsFactory, standin: StandIn, effort: str
) -> None:
    """Responses: `reasoning` is {effort, summary: auto}; max_output_tokens is max_tokens plus the effort's budget."""
    async with connect(make_settings()) as client:
        result = await client.call_tool("ask_openai", {"prompt": "q", "max_tokens": 500, "reasoning_effort": effort})
    assert not result.is_error, text_of(result)
    body = standin.requests[0].body
    assert body["reasoning"] == {"effort": effort, "summary": "auto"}
    assert body["max_output_tokens"] == 500 + BUDGETS[effort]


async def test_chat_body_carries_reasoning_effort(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Chat Completions: `reasoning_effort` is sent as is, with the budget added to max_tokens."""
    async with connect(make_settings(openai_api="chat")) as client:
        result = await client.call_tool("ask_openai", {"prompt": "q", "max_tokens": 300, "reasoning_effort": "low"})
    assert not result.is_error, text_of(result)
    body = standin.requests[0].body
    assert body["reasoning_effort"] == "low" and body["max_tokens"] == 300 + BUDGETS["low"]
    assert "reasoning" not in body


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
async def test_anthropic_thinking_budget_below_max_tokens(
    make_settings: SettingsFactory, standin: StandIn, effort: str
) -> None:
    """Messages: enabled thinking, summarized, its budget from the effort and below max_tokens (raised by it)."""
    async with connect(make_settings()) as client:
        result = await client.call_tool("ask_claude", {"prompt": "q", "max_tokens": 1, "reasoning_effort": effort})
    assert not result.is_error, text_of(result)
    body = standin.requests[0].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": BUDGETS[effort], "display": "summarized"}
    assert 1_024 <= body["thinking"]["budget_tokens"] < body["max_tokens"] == 1 + BUDGETS[effort]


@pytest.mark.parametrize("api", ["responses", "chat"])
async def test_no_reasoning_parameters_without_effort(
    make_settings: SettingsFactory, standin: StandIn, api: str
) -> None:
    """Without reasoning_effort nothing about reasoning is sent and max_tokens is sent unchanged."""
    async with connect(make_settings(openai_api=api)) as client:
        await client.call_tool("ask_openai", {"prompt": "q", "max_tokens": 77})
        await client.call_tool("ask_claude", {"prompt": "q", "max_tokens": 77})
    openai_body, anthropic_body = (r.body for r in standin.requests)
    assert not {"reasoning", "reasoning_effort"} & set(openai_body)
    assert openai_body.get("max_output_tokens", openai_body.get("max_tokens")) == 77
    assert "thinking" not in anthropic_body and anthropic_body["max_tokens"] == 77


async def test_unknown_effort_is_refused_before_any_request(client: Client, standin: StandIn) -> None:
    """An effort outside low/medium/high is an error and never reaches the provider."""
    result = await client.call_tool("ask_openai", {"prompt": "q", "reasoning_effort": "extreme"})
    assert result.is_error
    assert standin.requests == []


# --- reasoning as progress, reasoning tokens ---------------------------------------------------------------


@pytest.mark.parametrize(("provider", "api"), [("openai", "responses"), ("openai", "chat"), ("anthropic", "messages")])
async def test_reasoning_streams_as_marked_progress_before_the_answer(
    make_settings: SettingsFactory, standin: StandIn, provider: str, api: str
) -> None:
    """The reasoning summary / thinking arrives as `[reasoning] …` progress before the answer text and the result."""
    standin.script(Reply(chunks=ANSWER, reasoning=THOUGHTS, chunk_delay_s=0.02))
    log = ProgressLog()
    async with connect(make_settings(openai_api="chat" if api == "chat" else "responses")) as client:
        result = await client.call_tool(
            TOOLS[provider], {"prompt": "q", "reasoning_effort": "medium"}, progress_callback=log
        )
        seen_before_result = len(log.messages)
    assert not result.is_error, text_of(result)
    assert text_of(result) == "".join(ANSWER)  # the reasoning is not part of the answer
    assert seen_before_result == len(log.messages) and log.values == sorted(set(log.values))
    marked = [i for i, m in enumerate(log.messages) if m.startswith(REASONING_MARK)]
    answer = [i for i, m in enumerate(log.messages) if not m.startswith(REASONING_MARK)]
    assert marked and answer and max(marked) < min(answer), log.messages
    assert log.messages[marked[-1]] == REASONING_MARK + "".join(THOUGHTS)
    assert log.messages[answer[-1]] == "".join(ANSWER)
    assert all("weigh" not in log.messages[i] for i in answer)


@pytest.mark.parametrize(("provider", "api"), [("openai", "responses"), ("openai", "chat"), ("anthropic", "messages")])
async def test_reasoning_tokens_in_usage(
    make_settings: SettingsFactory, standin: StandIn, provider: str, api: str
) -> None:
    """usage.reasoning_tokens carries the provider's count (OpenAI reasoning tokens, Anthropic thinking tokens)."""
    standin.script(Reply(chunks=ANSWER, reasoning=THOUGHTS), Reply(chunks=ANSWER))
    async with connect(make_settings(openai_api="chat" if api == "chat" else "responses")) as client:
        thought = await client.call_tool(TOOLS[provider], {"prompt": "q", "reasoning_effort": "high"})
        plain = await client.call_tool(TOOLS[provider], {"prompt": "q"})
    usage: dict[str, Any] = thought.structured_content["usage"]
    assert usage["reasoning_tokens"] == len(THOUGHTS)
    assert usage["output_tokens"] == len(THOUGHTS) + len(ANSWER)
    plain_usage: dict[str, Any] = plain.structured_content["usage"]
    # OpenAI counts zero reasoning tokens; Anthropic sends no breakdown without thinking.
    assert plain_usage["reasoning_tokens"] == (0 if provider == "openai" else None)


async def test_ask_many_reasoning_per_target(make_settings: SettingsFactory, standin: StandIn) -> None:
    """ask_many passes reasoning_effort to every target; each target's reasoning is marked under its label."""
    standin.default_reply = Reply(chunks=ANSWER, reasoning=THOUGHTS, chunk_delay_s=0.02)
    log = ProgressLog()
    async with connect(make_settings()) as client:
        result = await client.call_tool(
            "ask_many",
            {"prompt": "q", "targets": ["openai:o", "anthropic:a"], "reasoning_effort": "low"},
            progress_callback=log,
        )
    assert not result.is_error, text_of(result)
    bodies = {r.api: r.body for r in standin.requests}
    assert bodies["responses"]["reasoning"] == {"effort": "low", "summary": "auto"}
    assert bodies["messages"]["thinking"]["budget_tokens"] == BUDGETS["low"]
    answers = result.structured_content["answers"]
    assert [a["usage"]["reasoning_tokens"] for a in answers] == [len(THOUGHTS)] * 2
    assert [a["text"] for a in answers] == ["".join(ANSWER)] * 2
    for label in ("openai:o", "anthropic:a"):
        marked = [i for i, m in enumerate(log.messages) if m.startswith(f"[{label}] {REASONING_MARK}")]
        text = [i for i, m in enumerate(log.messages) if m.startswith(f"[{label}] The ")]
        assert marked and text and max(marked) < min(text), log.messages
        assert log.messages[marked[-1]] == f"[{label}] {REASONING_MARK}{''.join(THOUGHTS)}"
