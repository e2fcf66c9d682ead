"""The stand-in upstream, driven by the real OpenAI and Anthropic SDKs (no retries)."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import anyio
import httpx2
import openai
import pytest
from helpers import finished

from mcp_llm_server._standin import Reply, StandIn

USER = [{"role": "user", "content": "one two three"}]
# A disconnect is noticed in milliseconds; the replies waited on would take 30 s. The bound is far from both.
NOTICED_S = 5.0


@pytest.fixture
async def oai(standin: StandIn) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=standin.openai_base_url, api_key="sk-test-key", max_retries=0) as c:
        yield c


@pytest.fixture
async def ant(standin: StandIn) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=standin.anthropic_base_url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


# --- OpenAI Responses ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_responses_stream_events_usage_and_request_id(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """The raw Responses stream has the documented event order, usage and the x-request-id header."""
    standin.script(Reply(text="Hello big world", input_tokens=11))
    stream = await oai.responses.create(model="gpt-x", input="hi", instructions="be brief", stream=True)
    async with stream:
        events = [ev async for ev in stream]
        request_id = stream.response.headers["x-request-id"]
    types = [ev.type for ev in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [ev.sequence_number for ev in events] == list(range(len(events)))
    deltas = [ev.delta for ev in events if ev.type == "response.output_text.delta"]
    assert "".join(deltas) == "Hello big world"
    completed = events[-1]
    assert completed.type == "response.completed"
    usage = completed.response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 3, 14)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    await standin.wait_until_idle_async()
    (rec,) = standin.requests
    assert request_id == rec.request_id
    assert rec.request_id.startswith("req_standin_")
    assert (rec.api, rec.stream, rec.model, rec.outcome, rec.deltas_sent) == (
        "responses",
        True,
        "gpt-x",
        "completed",
        3,
    )


@pytest.mark.anyio
async def test_responses_stream_helper_accepts_the_stream(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """``responses.stream()``'s state machine accepts the events and builds the final response."""
    standin.script(Reply(chunks=["Hel", "lo", "!"]))
    async with oai.responses.stream(model="gpt-x", input="one two") as stream:
        snapshots = [ev.snapshot async for ev in stream if ev.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert snapshots == ["Hel", "Hello", "Hello!"]
    assert final.output_text == "Hello!"
    assert final.status == "completed"
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (2, 3)


@pytest.mark.anyio
async def test_responses_json_and_max_tokens(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """Non-streamed Responses JSON; a max_tokens stop reads as status incomplete (JSON and stream)."""
    response = await oai.responses.create(model="gpt-x", input="hi")
    assert response.output_text == "Hello from the stand-in."
    assert response._request_id == standin.requests[0].request_id
    standin.script(Reply(text="cut short", stop_reason="max_tokens"), Reply(text="cut", stop_reason="max_tokens"))
    cut = await oai.responses.create(model="gpt-x", input="hi")
    assert cut.status == "incomplete"
    assert cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    stream = await oai.responses.create(model="gpt-x", input="hi", stream=True)
    async with stream:
        last = [ev async for ev in stream][-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.anyio
async def test_responses_reasoning_summary_events(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """Reasoning chunks stream as a reasoning item with summary deltas, before the message."""
    standin.script(Reply(text="42", reasoning=["Let me ", "think."]))
    async with oai.responses.stream(model="o-x", input="q") as stream:
        events = [ev async for ev in stream]
        final = await stream.get_final_response()
    reasoning = [ev.delta for ev in events if ev.type == "response.reasoning_summary_text.delta"]
    assert reasoning == ["Let me ", "think."]
    types = [ev.type for ev in events]
    assert types.index("response.reasoning_summary_part.added") < types.index("response.output_text.delta")
    assert "response.reasoning_summary_text.done" in types
    assert "response.reasoning_summary_part.done" in types
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output_text == "42"
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 2


# --- OpenAI Chat Completions ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream(standin: StandIn, oai: openai.AsyncOpenAI, include_usage: bool) -> None:
    """Chat chunks: a role chunk, content deltas, a finish chunk and (if asked) a usage chunk."""
    stream = await oai.chat.completions.create(
        model="gpt-x",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    async with stream:
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the stand-in."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usages = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usages) == 1
        assert chunks[-1].choices == []
        assert (usages[0].prompt_tokens, usages[0].completion_tokens, usages[0].total_tokens) == (3, 4, 7)
    else:
        assert usages == []
    assert (await finished(standin, 0)).outcome == "completed"


@pytest.mark.anyio
async def test_chat_json_and_length(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """Non-streamed chat completion; a max_tokens stop is finish_reason length."""
    standin.script(Reply(text="Hi there"), Reply(text="Hi", stop_reason="max_tokens"))
    completion = await oai.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2
    assert completion._request_id == standin.requests[0].request_id
    cut = await oai.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    assert cut.choices[0].finish_reason == "length"


# --- Anthropic Messages ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_messages_raw_stream(standin: StandIn, ant: anthropic.AsyncAnthropic) -> None:
    """The raw Messages stream: event types, text deltas, usage and the request-id header."""
    stream = await ant.messages.create(model="claude-x", max_tokens=100, messages=USER, system="be brief", stream=True)
    async with stream:
        events = [ev async for ev in stream]
        request_id = stream.response.headers["request-id"]
    assert [ev.type for ev in events] == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start, delta = events[0], events[-2]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == 5  # "one two three" + "be brief"
    text = "".join(ev.delta.text for ev in events if ev.type == "content_block_delta" and ev.delta.type == "text_delta")
    assert text == "Hello from the stand-in."
    assert delta.type == "message_delta"
    assert (delta.delta.stop_reason, delta.usage.output_tokens) == ("end_turn", 4)
    assert request_id == standin.requests[0].request_id


@pytest.mark.anyio
async def test_messages_stream_helper_and_json(standin: StandIn, ant: anthropic.AsyncAnthropic) -> None:
    """The ``messages.stream()`` helper builds the final message; non-streamed JSON parses too."""
    standin.script(Reply(text="Bonjour tout le monde", stop_reason="max_tokens", output_tokens=9))
    async with ant.messages.stream(model="claude-x", max_tokens=100, messages=USER) as stream:
        texts = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts) == "Bonjour tout le monde"
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 9)
    assert stream.request_id == standin.requests[0].request_id
    message = await ant.messages.create(model="claude-x", max_tokens=100, messages=USER)
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the stand-in."
    assert message.stop_reason == "end_turn"
    assert message._request_id == standin.requests[1].request_id


@pytest.mark.anyio
async def test_messages_thinking_block(standin: StandIn, ant: anthropic.AsyncAnthropic) -> None:
    """Reasoning chunks stream as a thinking block with thinking deltas and a signature."""
    standin.script(Reply(text="Yes.", reasoning=["Hmm, ", "yes."]))
    async with ant.messages.stream(model="claude-x", max_tokens=100, messages=USER) as stream:
        thinking = [ev.thinking async for ev in stream if ev.type == "thinking"]
        final = await stream.get_final_message()
    assert thinking == ["Hmm, ", "yes."]
    assert [block.type for block in final.content] == ["thinking", "text"]
    block = final.content[0]
    assert block.type == "thinking"
    assert block.thinking == "Hmm, yes."
    assert block.signature


@pytest.mark.anyio
async def test_models_lists(standin: StandIn, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    """GET /v1/models answers in each provider's shape (picked by the anthropic-version header)."""
    assert [m.id async for m in oai.models.list()] == standin.openai_models
    anthropic_models = [m async for m in ant.models.list()]
    assert [m.id for m in anthropic_models] == standin.anthropic_models
    assert anthropic_models[0].display_name
    assert [r.api for r in standin.requests] == ["models", "models"]


def test_unknown_path_is_404_in_provider_shape(standin: StandIn) -> None:
    """Unknown paths get 404 with the provider's error body and request id header (sync use)."""
    with httpx2.Client(base_url=standin.url) as client:
        oa = client.post("/v1/nope", json={})
        an = client.get("/v1/nope", headers={"anthropic-version": "2026-10-21"})
    assert oa.status_code == 404
    assert oa.json()["error"]["type"] == "not_found_error"
    assert oa.headers["x-request-id"] == "req_standin_1"
    assert an.status_code == 404
    assert an.json()["type"] == "error"
    assert an.json()["request_id"] == an.headers["request-id"] == "req_standin_2"


# --- faults ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_error_statuses(standin: StandIn, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    """429/401/500/529 map to the SDKs' exception classes, with headers and request ids intact."""
    standin.script(Reply.error(429, retry_after=7), Reply.error(401), Reply.error(500))
    with pytest.raises(openai.RateLimitError) as rate:
        await oai.responses.create(model="gpt-x", input="hi")
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.request_id == standin.requests[0].request_id
    assert rate.value.type == "rate_limit_error"
    with pytest.raises(openai.AuthenticationError):
        await oai.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.InternalServerError):
        await oai.responses.create(model="gpt-x", input="hi", stream=True)

    standin.script(Reply.error(529), Reply.error(401), Reply.error(429, retry_after_ms=250))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        await ant.messages.create(model="claude-x", max_tokens=10, messages=USER, stream=True)
    assert overloaded.value.type == "overloaded_error"
    assert overloaded.value.request_id == standin.requests[3].request_id
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await ant.messages.create(model="claude-x", max_tokens=10, messages=USER)
    assert auth.value.type == "authentication_error"
    with pytest.raises(anthropic.RateLimitError) as limited:
        await ant.messages.create(model="claude-x", max_tokens=10, messages=USER)
    assert limited.value.response.headers["retry-after-ms"] == "250"
    await standin.wait_until_idle_async()
    assert {r.outcome for r in standin.requests} == {"error_status"}


@pytest.mark.anyio
async def test_reset_is_a_connection_error(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """A reset before any byte surfaces as APIConnectionError."""
    standin.script(Reply.reset())
    with pytest.raises(openai.APIConnectionError):
        await oai.responses.create(model="gpt-x", input="hi")
    assert (await finished(standin, 0)).outcome == "reset"


@pytest.mark.anyio
async def test_stall_fires_the_read_timeout(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """A stalled stream trips the client's read timeout; the stand-in records the disconnect."""
    standin.script(Reply.stall(after=2))
    deltas: list[str] = []
    stream = await oai.with_options(timeout=httpx2.Timeout(5.0, read=0.3)).responses.create(
        model="gpt-x", input="hi", stream=True
    )
    with pytest.raises(openai.APITimeoutError):
        async with stream:
            async for ev in stream:
                if ev.type == "response.output_text.delta":
                    deltas.append(ev.delta)
    assert deltas == ["Hello", " from"]
    rec = await finished(standin, 0)
    assert (rec.outcome, rec.deltas_sent) == ("stalled_then_disconnected", 2)
    assert rec.finished_at is not None


@pytest.mark.anyio
async def test_midstream_errors(standin: StandIn, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    """Responses yields an error event, Chat raises APIError, Anthropic raises APIStatusError (status 200)."""
    standin.script(Reply.midstream_error(), Reply.midstream_error(), Reply.midstream_error(after=2))
    stream = await oai.responses.create(model="gpt-x", input="hi", stream=True)
    async with stream:
        events = [ev async for ev in stream]
    assert [ev.type for ev in events[-2:]] == ["response.output_text.delta", "error"]
    error = events[-1]
    assert error.type == "error"
    assert (error.code, error.message) == ("overloaded_error", "Overloaded")

    chat = await oai.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}], stream=True)
    with pytest.raises(openai.APIError) as chat_error:
        async with chat:
            async for _ in chat:
                pass
    assert not isinstance(chat_error.value, openai.APIStatusError)
    assert chat_error.value.message == "Overloaded"

    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as ant_error:
        async with ant.messages.stream(model="claude-x", max_tokens=10, messages=USER) as ms:
            async for text in ms.text_stream:
                texts.append(text)
    assert texts == ["Hello", " from"]
    assert ant_error.value.status_code == 200
    assert ant_error.value.type == "overloaded_error"
    await standin.wait_until_idle_async()
    assert [r.outcome for r in standin.requests] == ["midstream_error"] * 3


@pytest.mark.anyio
async def test_drop_mid_stream(standin: StandIn, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    """A connection closed mid-body: OpenAI wraps it as APIConnectionError, Anthropic leaks httpx2's error."""
    standin.script(Reply.drop(after=1), Reply.drop(after=3))
    stream = await oai.responses.create(model="gpt-x", input="hi", stream=True)
    with pytest.raises(openai.APIConnectionError):
        async with stream:
            async for _ in stream:
                pass
    raw = await ant.messages.create(model="claude-x", max_tokens=10, messages=USER, stream=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        async with raw:
            async for _ in raw:
                pass
    await standin.wait_until_idle_async()
    first, second = standin.requests
    assert (first.outcome, first.deltas_sent) == ("dropped", 1)
    assert (second.outcome, second.deltas_sent) == ("dropped", 3)


# --- recording and scripting -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_records_headers_and_bodies(
    standin: StandIn, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    """Headers (lowercased) and JSON bodies are recorded for both providers."""
    await oai.responses.create(model="gpt-x", input="hello", instructions="terse", max_output_tokens=50)
    await ant.messages.create(model="claude-x", max_tokens=20, messages=USER, system="sys")
    await standin.wait_until_idle_async()
    oa, an = standin.wait_for_requests(2)
    assert oa.headers["authorization"] == "Bearer sk-test-key"
    assert oa.body == {"model": "gpt-x", "input": "hello", "instructions": "terse", "max_output_tokens": 50}
    assert (oa.method, oa.path, oa.stream) == ("POST", "/v1/responses", False)
    assert an.headers["authorization"] == "Bearer sk-ant-test"
    assert "anthropic-version" in an.headers
    assert an.body == {"model": "claude-x", "max_tokens": 20, "messages": USER, "system": "sys"}
    assert an.api == "messages"
    assert int(an.request_id.rsplit("_", 1)[1]) == int(oa.request_id.rsplit("_", 1)[1]) + 1
    assert all(r.finished_at is not None and r.finished_at >= r.received_at for r in (oa, an))


@pytest.mark.anyio
async def test_scripting_precedence(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """Responder beats the per-model queue, which beats the global queue, which beats the default reply."""

    async def ask(model: str) -> str:
        response = await oai.responses.create(model=model, input="hi")
        return response.output_text

    standin.default_reply = Reply(text="default")
    standin.script(Reply(text="global 1"), Reply(text="global 2"))
    standin.script_model("special", Reply(text="special 1"))
    assert await ask("special") == "special 1"
    assert await ask("special") == "global 1"
    assert await ask("other") == "global 2"
    assert await ask("other") == "default"

    rng = random.Random(7)
    standin.script_model("special", Reply(text="queued"))
    standin.responder = lambda rec: Reply(text=f"responder {rec.model} {rng.randint(0, 9)}")
    assert (await ask("special")).startswith("responder special ")
    standin.responder = lambda rec: None  # falls through
    assert await ask("special") == "queued"
    standin.clear()
    assert standin.requests == []


@pytest.mark.anyio
async def test_peak_open_requests(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """Ten concurrent delayed requests are all open at once; the peak says so."""
    standin.default_reply = Reply(delay_s=0.3)
    standin.reset_peak()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(lambda: oai.responses.create(model="gpt-x", input="hi"))
    assert standin.peak_open_requests == 10
    await standin.wait_until_idle_async()
    assert standin.open_requests == 0
    assert [r.outcome for r in standin.requests] == ["completed"] * 10


@pytest.mark.anyio
async def test_cancelled_client_is_recorded(standin: StandIn, ant: anthropic.AsyncAnthropic) -> None:
    """Cancelling the consumer mid-stream closes the connection; the stand-in records it long before the stream ends."""
    standin.script(Reply(chunk_delay_s=30.0))
    received = anyio.Event()
    with anyio.CancelScope() as scope:
        async with ant.messages.stream(model="claude-x", max_tokens=10, messages=USER) as stream:
            async for _ in stream.text_stream:
                received.set()
                scope.cancel()
    assert received.is_set()
    rec = await finished(standin, 0, within=NOTICED_S)
    assert (rec.outcome, rec.deltas_sent) == ("client_disconnected", 1)
    assert standin.open_requests == 0


@pytest.mark.anyio
async def test_cancel_during_delay_is_recorded(standin: StandIn, oai: openai.AsyncOpenAI) -> None:
    """A client that gives up while the reply is still delayed is noticed before the delay ends."""
    standin.script(Reply(delay_s=30.0))
    with anyio.move_on_after(0.2):
        await oai.chat.completions.create(model="gpt-x", messages=[{"role": "user", "content": "hi"}])
    rec = await finished(standin, 0, within=NOTICED_S)
    assert rec.outcome == "client_disconnected"


@pytest.mark.anyio
async def test_stop_is_fast_with_a_stalled_stream() -> None:
    """stop() closes a stalled stream and joins the thread promptly."""
    s = StandIn().start()
    try:
        s.script(Reply.stall())
        async with openai.AsyncOpenAI(base_url=s.openai_base_url, api_key="k", max_retries=0) as client:
            stream = await client.responses.create(model="gpt-x", input="hi", stream=True)
            async with stream:
                first_delta: Any = None
                async for ev in stream:
                    if ev.type == "response.output_text.delta":
                        first_delta = ev
                        break
                assert first_delta is not None
                started = time.monotonic()
                s.stop(timeout=2 * NOTICED_S)  # raises if the thread is still running then
                assert time.monotonic() - started < NOTICED_S
        assert s.requests[0].outcome == "stalled_then_disconnected"
    finally:
        s.stop()
