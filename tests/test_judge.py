"""`ask_many` with a judge and stances, through the real MCP client against the stand-in: the judge sees the answers
labelled, never the models; each target argues its stance; a failed judge leaves the answers; progress names both
phases; a mismatch of stances and targets is refused before any request."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SettingsFactory, text_of
from helpers import ProgressLog, connect
from mcp import Client

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn

pytestmark = pytest.mark.anyio

TARGETS = ["openai:gpt-pro", "anthropic:claude-con"]
JUDGE = "openai:gpt-judge"


def body_text(request: RecordedRequest) -> str:
    """Everything a request sent, as text (system and input, whatever the API)."""
    import json

    return json.dumps(request.body)


def replies(judge: Reply) -> Any:
    answers = {"gpt-pro": Reply(text="Yes: because X."), "claude-con": Reply(text="No: because Y."), "gpt-judge": judge}
    return lambda request: answers.get(request.model or "")


async def judged(client: Client, **extra: Any) -> Any:
    return await client.call_tool("ask_many", {"prompt": "Is it so?", "targets": TARGETS, "judge": JUDGE, **extra})


async def test_the_judge_sees_labelled_answers_and_writes_the_synthesis(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    standin.responder = replies(Reply(text="A and B disagree; I trust A.", input_tokens=40, output_tokens=9))
    progress = ProgressLog()
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    prices = {model: price for model in ("gpt-pro", "claude-con", "gpt-judge")}
    async with connect(make_settings(model_prices=prices)) as client:
        result = await client.call_tool(
            "ask_many", {"prompt": "Is it so?", "targets": TARGETS, "judge": JUDGE}, progress_callback=progress
        )
    assert not result.is_error and result.structured_content is not None
    structured = result.structured_content
    assert [a["text"] for a in structured["answers"]] == ["Yes: because X.", "No: because Y."]
    assert structured["labels"] == {"A": "openai:gpt-pro", "B": "anthropic:claude-con"}
    judgment = structured["judgment"]
    assert judgment["text"] == "A and B disagree; I trust A." and judgment["error"] is None
    assert judgment["target"] == "judge openai:gpt-judge" and judgment["cost_usd"] > 0
    parts = [a["cost_usd"] for a in structured["answers"]] + [judgment["cost_usd"]]
    assert structured["cost_usd"] == pytest.approx(sum(parts))  # the judge's cost is in the total
    (judge_request,) = [r for r in standin.requests if r.model == "gpt-judge"]
    sent = body_text(judge_request)
    assert "### Answer A" in sent and "Yes: because X." in sent and "No: because Y." in sent
    assert "gpt-pro" not in sent and "claude-con" not in sent  # labelled, never named
    assert max(r.received_at for r in standin.requests if r.model != "gpt-judge") < judge_request.received_at
    text = text_of(result)
    assert text.index("## openai:gpt-pro") < text.index("## Synthesis by the judge") < text.index("I trust A")
    messages = [m or "" for _, _, m in progress.events]
    assert any("Judging 2 answers with openai:gpt-judge" in m for m in messages)


async def test_each_target_argues_its_stance(make_settings: SettingsFactory, standin: StandIn) -> None:
    standin.responder = replies(Reply(text="ok"))
    async with connect(make_settings()) as client:
        result = await client.call_tool(
            "ask_many",
            {"prompt": "Is it so?", "targets": TARGETS, "stances": ["for", "play the sceptical auditor"]},
        )
    assert not result.is_error
    sent = {r.model: body_text(r) for r in standin.requests}
    assert "strongest honest case in its favour" in sent["gpt-pro"] and "sceptical auditor" not in sent["gpt-pro"]
    assert "Take this stance in your answer: play the sceptical auditor" in sent["claude-con"]


async def test_a_failed_judge_leaves_the_answers(make_settings: SettingsFactory, standin: StandIn) -> None:
    standin.responder = replies(Reply.error(400, message="the judge model refused"))
    async with connect(make_settings()) as client:
        result = await judged(client)
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["succeeded"] == 2
    judgment = result.structured_content["judgment"]
    assert judgment["text"] is None and judgment["error"]["kind"] == "bad_request"
    assert "the judge failed (bad_request)" in text_of(result)


async def test_stances_not_one_per_target_are_refused_before_any_request(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    async with connect(make_settings()) as client:
        result = await judged(client, stances=["for"])
        bad_judge = await client.call_tool("ask_many", {"prompt": "Q", "targets": TARGETS, "judge": "nobody:x"})
    assert result.is_error and "1 stances for 2 targets" in text_of(result)
    assert bad_judge.is_error and "The judge:" in text_of(bad_judge)
    assert standin.requests == []


async def test_with_every_target_failed_there_is_nothing_to_judge(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    standin.responder = lambda request: Reply.error(400) if request.model != "gpt-judge" else Reply(text="?")
    async with connect(make_settings()) as client:
        result = await judged(client)
    assert result.is_error and "Every target failed" in text_of(result)
    assert [r.model for r in standin.requests if r.model == "gpt-judge"] == []
