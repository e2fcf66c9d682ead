"""Failover aliases (`a|b|c`) end to end: the real MCP client and SDKs against stand-ins, one provider down."""

from __future__ import annotations

import json
import socket
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import openai  # noqa: F401
import pytest
from conftest import SettingsFactory, text_of
from helpers import ProgressLog, connect, error_of, ok

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.settings import SettingsError, load_settings


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def failover(make_settings: SettingsFactory, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> SettingsFactory:
    """`down` refuses connections, `local` (Chat Completions) and the built-ins answer from the stand-in;
    `keyless` has its key variable unset."""
    monkeypatch.delenv("KEYLESS_TEST_KEY", raising=False)
    named = {
        "down": {"base_url": closed_port_url(), "api": "chat", "default_model": "m-down"},
        "local": {"base_url": standin.openai_base_url, "api": "chat", "default_model": "m-local"},
        "keyless": {"base_url": standin.openai_base_url, "api": "chat", "api_key_env": "KEYLESS_TEST_KEY"},
    }
    aliases = {
        "smart": "down:m-down|local:m-local",
        "careful": "openai:m-first|anthropic:m-second",
        "spare": "keyless:m-x|local:m-local",
        "chain": "down:m-down|openai:m-gone|anthropic:m-last",
    }

    def make(**overrides: Any) -> Any:
        values = {"providers": json.dumps(named), "model_aliases": json.dumps(aliases), "max_attempts": 2}
        return make_settings(**{**values, **overrides})

    return make


def model_calls(standin: StandIn) -> list[str]:
    return [r.body["model"] for r in standin.requests if r.api != "models"]


@pytest.mark.anyio
async def test_a_provider_that_is_down_is_skipped(failover: SettingsFactory, standin: StandIn) -> None:
    """`down` refuses connections (retried, then given up): `local` answers, and the result says so."""
    standin.script_model("m-local", Reply(text="from local"))
    log = ProgressLog()
    async with connect(failover()) as client:
        result = ok(await client.call_tool("ask", {"prompt": "hi", "model": "smart"}, progress_callback=log))
    assert (result["provider"], result["model"], result["text"]) == ("local", "m-local", "from local")
    (skipped,) = result["skipped"]
    assert skipped["target"] == "down:m-down" and skipped["kind"] == "connection"
    assert "Answered by local:m-local after skipping down:m-down" in result["notes"][0]
    assert any("down:m-down could not answer (connection); asking local:m-local" in m for m in log.messages)
    assert model_calls(standin) == ["m-local"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (Reply.error(429, message="slow down"), "rate_limited"),
        (Reply.error(529, message="Overloaded", error_type="overloaded_error"), "overloaded"),
        (Reply.error(502, message="bad gateway"), "server_error"),
        (Reply.error(404, message="The model `m-first` does not exist", error_type="not_found_error"), "not_found"),
    ],
)
async def test_retries_exhausted_or_an_unknown_model_switch(
    failover: SettingsFactory, standin: StandIn, first: Reply, kind: str
) -> None:
    standin.script_model("m-first", first, first)
    standin.script_model("m-second", Reply(text="second answers"))
    async with connect(failover()) as client:
        result = ok(await client.call_tool("ask", {"prompt": "hi", "model": "careful"}))
    assert (result["provider"], result["text"]) == ("anthropic", "second answers")
    assert [(s["target"], s["kind"]) for s in result["skipped"]] == [("openai:m-first", kind)]
    attempts = 1 if kind == "not_found" else 2  # a 404 is not retried; the others are, up to max_attempts
    assert model_calls(standin) == ["m-first"] * attempts + ["m-second"]


@pytest.mark.anyio
async def test_a_bad_request_does_not_switch(failover: SettingsFactory, standin: StandIn) -> None:
    """A 400 would be wrong for the next target too: it is the call's error, and nobody else is asked."""
    standin.script_model("m-first", Reply.error(400, message="max_tokens is too large"))
    async with connect(failover()) as client:
        result = await client.call_tool("ask", {"prompt": "hi", "model": "careful"})
    error = error_of(result)
    assert error["kind"] == "bad_request" and "max_tokens is too large" in text_of(result)
    assert model_calls(standin) == ["m-first"]


@pytest.mark.anyio
async def test_an_unconfigured_target_is_skipped(failover: SettingsFactory, standin: StandIn) -> None:
    async with connect(failover()) as client:
        result = ok(await client.call_tool("ask", {"prompt": "hi", "model": "spare"}))
    assert result["provider"] == "local"
    (skipped,) = result["skipped"]
    assert skipped["kind"] == "not_configured" and "KEYLESS_TEST_KEY" in skipped["reason"]


@pytest.mark.anyio
async def test_when_every_target_fails_the_error_lists_each(failover: SettingsFactory, standin: StandIn) -> None:
    standin.script_model("m-gone", Reply.error(404, message="no such model", error_type="not_found_error"))
    standin.script_model("m-last", Reply.error(500, message="boom"), Reply.error(500, message="boom"))
    async with connect(failover()) as client:
        result = await client.call_tool("ask", {"prompt": "hi", "model": "chain"})
    assert result.is_error
    text = text_of(result)
    assert "Targets tried before:" in text and "down:m-down: skipped" in text and "openai:m-gone: skipped" in text
    details = error_of(result)
    assert details["kind"] == "server_error" and details["provider"] == "Anthropic"
    structured = result.meta or {}
    assert "skipped" in json.dumps(structured)


@pytest.mark.anyio
async def test_ask_many_targets_and_the_judge_fail_over(failover: SettingsFactory, standin: StandIn) -> None:
    standin.script_model("m-local", Reply(text="local view"), Reply(text="the synthesis"))
    async with connect(failover()) as client:
        result = ok(
            await client.call_tool(
                "ask_many", {"prompt": "hi", "targets": ["smart", "openai:m-other"], "judge": "smart"}
            )
        )
    first = result["answers"][0]
    assert (first["target"], first["provider"], first["text"]) == ("smart", "local", "local view")
    assert first["skipped"][0]["target"] == "down:m-down"
    assert result["judgment"]["text"] == "the synthesis" and result["judgment"]["provider"] == "local"
    assert result["answers"][1]["skipped"] is None


@pytest.mark.anyio
async def test_single_provider_tools_point_a_failover_alias_to_ask(failover: SettingsFactory) -> None:
    async with connect(failover()) as client:
        error = error_of(await client.call_tool("ask_openai", {"prompt": "hi", "model": "careful"}))
    assert error["kind"] == "alias_mismatch"
    assert "a failover list (openai:m-first then anthropic:m-second)" in error["message"]
    assert "with `ask`" in error["message"]


def test_failover_alias_settings() -> None:
    nine = "|".join(f"openai:m{i}" for i in range(9))
    with pytest.raises(SettingsError, match="names more than 8 targets"):
        load_settings(_env_file=None, model_aliases=json.dumps({"x": nine}))
    with pytest.raises(SettingsError, match="must map to `provider:model`"):
        load_settings(_env_file=None, model_aliases="x=openai:m1||anthropic:m2")
    parsed = load_settings(_env_file=None, model_aliases="x=OpenAI:m1 | claude:m2")
    assert parsed.model_aliases == {"x": "openai:m1|anthropic:m2"}


@pytest.mark.anyio
async def test_a_failover_call_detaches_and_get_answer_names_who_answered(
    failover: SettingsFactory, standin: StandIn
) -> None:
    """A long `ask` on a failover alias comes back `running` (naming the first model it asks) and get_answer later
    returns the whole result, naming the target that answered and the one skipped."""
    standin.script_model("m-local", Reply(chunks=[f"w{i} " for i in range(40)], chunk_delay_s=0.05))
    async with connect(failover(detach_after_s=0.5)) as client:
        running = ok(await client.call_tool("ask", {"prompt": "hi", "model": "smart"}))
        assert running["status"] == "running" and (running["provider"], running["model"]) == ("down", "m-down")
        fetched = running
        for _ in range(40):  # each get_answer waits at most the detach limit
            fetched = ok(await client.call_tool("get_answer", {"answer_id": running["answer_id"]}))
            if fetched["status"] == "complete":
                break
    assert fetched["status"] == "complete" and fetched["provider"] == "local"
    assert fetched["text"] == "".join(f"w{i} " for i in range(40))
    assert [s["target"] for s in fetched["skipped"]] == ["down:m-down"]


@pytest.mark.anyio
async def test_a_provider_found_unreachable_is_passed_over_for_a_while(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """Once a provider's connection failed (its retries spent), the next calls' failover lists pass it over without
    a request, saying why; as a list's last target, or asked alone, it is still tried, and an answer clears it."""
    with StandIn() as flaky:
        named = {
            "flaky": {"base_url": flaky.openai_base_url, "api": "chat", "default_model": "m-flaky"},
            "local": {"base_url": standin.openai_base_url, "api": "chat", "default_model": "m-local"},
        }
        aliases = {"first": "flaky:m-flaky|local:m-local", "last": "local:m-gone|flaky:m-flaky"}
        settings = make_settings(providers=json.dumps(named), model_aliases=json.dumps(aliases), max_attempts=2)
        flaky.script(Reply.reset(), Reply.reset())
        standin.script_model("m-gone", Reply.error(404, message="no such model", error_type="not_found_error"))
        async with connect(settings) as client:
            first = ok(await client.call_tool("ask", {"prompt": "hi", "model": "first"}))
            assert first["skipped"][0]["kind"] == "connection" and len(model_calls(flaky)) == 2
            second = ok(await client.call_tool("ask", {"prompt": "hi", "model": "first"}))
            assert second["provider"] == "local" and len(model_calls(flaky)) == 2  # no request this time
            assert "not asked: its connection failed" in second["skipped"][0]["reason"]
            last = ok(await client.call_tool("ask", {"prompt": "hi", "model": "last"}))  # the last target: tried
            assert last["provider"] == "flaky" and len(model_calls(flaky)) == 3
            third = ok(await client.call_tool("ask", {"prompt": "hi", "model": "first"}))  # cleared by that answer
            assert third["provider"] == "flaky" and third["skipped"] is None


@pytest.mark.anyio
async def test_extract_json_fails_over_before_its_first_answer(failover: SettingsFactory, standin: StandIn) -> None:
    """A failover alias as extract_json's `model`: a provider that is down is skipped (said in `_meta`), the next
    one extracts; a target that answered keeps the repair attempts (no switch after an answer)."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    standin.script_model("m-local", Reply(text="not json"), Reply(text='{"n": 3}'), Reply(text='{"n": 1}'))
    async with connect(failover()) as client:
        result = await client.call_tool("extract_json", {"text": "three", "schema": schema, "model": "smart"})
        spare = await client.call_tool("extract_json", {"text": "one", "schema": schema, "model": "spare"})
    assert ok(result) == {"n": 3}
    summary = (result.meta or {})["mcp-llm-server/extract_json"]
    assert summary["provider"] == "local" and summary["attempts"] == 2
    assert [s["target"] for s in summary["skipped"]] == ["down:m-down"]
    assert model_calls(standin).count("m-local") == 2 + 1  # two attempts, then `spare`'s second target
    assert ok(spare) == {"n": 1}
    (skipped,) = (spare.meta or {})["mcp-llm-server/extract_json"]["skipped"]
    assert skipped["kind"] == "not_configured" and "KEYLESS_TEST_KEY" in skipped["reason"]
