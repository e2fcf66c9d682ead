"""Named providers (MCP_LLM_PROVIDERS) and the `ask` tool, end to end: the real MCP client and SDKs against two
stand-ins, one spoken to in Chat Completions and one in the Messages API, at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import SettingsFactory, text_of
from helpers import ProgressLog, connect, error_of, ok

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.settings import SettingsError, load_settings

LOCAL_KEY = "sk-local-named-provider-0123456789"
REMOTE_KEY = "sk-remote-named-provider-9876543210"


@pytest.fixture
def remote() -> Iterator[StandIn]:
    """A second upstream: the named `remote` provider (Messages API)."""
    with StandIn() as server:
        yield server


def providers(standin: StandIn, remote: StandIn, **extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "local": {"base_url": standin.openai_base_url, "api": "chat", "default_model": "qwen3"},
        "remote": {
            "base_url": remote.anthropic_base_url,
            "api": "messages",
            "api_key_env": "REMOTE_TEST_KEY",
            "default_model": "remote-large",
        },
        **extra,
    }


@pytest.fixture
def named(
    make_settings: SettingsFactory, standin: StandIn, remote: StandIn, monkeypatch: pytest.MonkeyPatch
) -> SettingsFactory:
    monkeypatch.setenv("REMOTE_TEST_KEY", REMOTE_KEY)

    def make(**overrides: Any) -> Any:
        return make_settings(**{"providers": json.dumps(providers(standin, remote)), **overrides})

    return make


# --- settings -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ({"api": "chat"}, "entry `x`, field `base_url`: required"),
        ({"base_url": "ftp://h", "api": "chat"}, "entry `x`, field `base_url`"),
        ({"base_url": "http://h/v1", "api": "completions"}, "entry `x`, field `api`: required, one of chat"),
        ({"base_url": "http://h/v1", "api": "chat", "base-url": "http://h"}, "entry `x`: unknown field `base-url`"),
        ({"base_url": "http://h/v1", "api": "chat", "api_key_env": "sk-live-abcdef0123"}, "field `api_key_env`"),
        ({"base_url": "http://h/v1", "api": "chat", "concurrency": 0}, "entry `x`, field `concurrency`"),
        ({"base_url": "http://h/v1", "api": "chat", "budget_daily_usd": -1}, "field `budget_daily_usd`"),
        ("not an object", "entry `x`: must be an object"),
    ],
)
def test_a_bad_entry_stops_the_server_naming_entry_and_field(entry: object, why: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, providers=json.dumps({"x": entry}))
    message = str(caught.value)
    assert message.startswith("MCP_LLM_PROVIDERS: ") and why in message, message
    assert "sk-live-abcdef0123" not in message and "ftp://h" not in message


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ('{"openai": {"base_url": "http://h/v1", "api": "chat"}}', "`openai` is built in"),
        ('{"Bad Name": {"base_url": "http://h/v1", "api": "chat"}}', "a name is 1 to 32"),
        ("[1]", "expected a JSON object"),
        ("{", "not JSON"),
    ],
)
def test_a_bad_provider_list_names_the_variable(value: str, why: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, providers=value)
    assert str(caught.value).startswith("MCP_LLM_PROVIDERS: ") and why in str(caught.value)


def test_aliases_may_name_named_providers_but_not_unknown_ones() -> None:
    spec = '{"ollama": {"base_url": "http://localhost:11434/v1", "api": "chat"}}'
    settings = load_settings(_env_file=None, providers=spec, model_aliases="local=ollama:qwen3:8b|openai:gpt-x")
    assert settings.model_aliases == {"local": "ollama:qwen3:8b|openai:gpt-x"}
    with pytest.raises(SettingsError, match="the provider `lmstudio` is neither built in"):
        load_settings(_env_file=None, providers=spec, model_aliases="local=lmstudio:qwen3")
    with pytest.raises(SettingsError, match="the alias `ollama` is the name of a provider"):
        load_settings(_env_file=None, providers=spec, model_aliases="ollama=openai:gpt-x")
    with pytest.raises(SettingsError, match="MCP_LLM_EXTRACT_PROVIDER"):
        load_settings(_env_file=None, providers=spec, extract_provider="lmstudio")


def test_the_key_is_read_from_its_variable_and_joins_the_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = '{"or": {"base_url": "https://openrouter.ai/api/v1", "api": "chat", "api_key_env": "OR_TEST_KEY"}}'
    monkeypatch.delenv("OR_TEST_KEY", raising=False)
    unset = load_settings(_env_file=None, providers=spec)
    assert not unset.providers["or"].configured and unset.providers["or"].api_key is None
    monkeypatch.setenv("OR_TEST_KEY", "sk-or-v1-abcdef0123456789")
    settings = load_settings(_env_file=None, providers=spec)
    assert settings.providers["or"].configured and "sk-or-v1-abcdef0123456789" in settings.secrets()
    assert "sk-or-v1" not in repr(settings.providers)
    monkeypatch.setenv("OR_TEST_KEY", "sk-or-v1-abc def")
    with pytest.raises(SettingsError, match="contains whitespace") as caught:
        load_settings(_env_file=None, providers=spec)
    assert "sk-or-v1" not in str(caught.value)


# --- ask -----------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_two_named_providers_of_different_apis_answer_at_once(
    named: SettingsFactory, standin: StandIn, remote: StandIn
) -> None:
    """`ask` reaches a Chat Completions provider and a Messages API provider in the same moment, each in its own
    wire format, with its own key (none for the local one), and the results name the provider."""
    standin.script_model("qwen3", Reply(text="local answer", chunk_delay_s=0.05, chunks=["local ", "answer"]))
    remote.script_model("remote-large", Reply(text="remote answer", chunk_delay_s=0.05, chunks=["remote ", "answer"]))
    results: dict[str, Any] = {}
    async with connect(named()) as client:

        async def ask(model: str) -> None:
            results[model] = await client.call_tool("ask", {"prompt": "hi", "model": model})

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "local")
            tg.start_soon(ask, "remote:remote-large")
    local, far = ok(results["local"]), ok(results["remote:remote-large"])
    assert (local["provider"], local["model"], local["text"]) == ("local", "qwen3", "local answer")
    assert (far["provider"], far["model"], far["text"]) == ("remote", "remote-large", "remote answer")
    (chat,) = [r for r in standin.requests if r.api != "models"]
    (messages,) = [r for r in remote.requests if r.api != "models"]
    assert chat.path == "/v1/chat/completions" and chat.body["model"] == "qwen3" and chat.body["stream"] is True
    assert messages.path == "/v1/messages" and messages.body["model"] == "remote-large"
    assert messages.headers.get("authorization") == f"Bearer {REMOTE_KEY}"
    assert REMOTE_KEY not in json.dumps(chat.headers)  # each provider gets its own key, or none
    assert chat.headers.get("authorization") == "Bearer not-needed"
    # Both streams were open together: each started before the other finished.
    assert chat.received_at < (messages.finished_at or 0) and messages.received_at < (chat.finished_at or 0)


@pytest.mark.anyio
async def test_ask_streams_progress_and_continues_a_conversation_across_providers(
    named: SettingsFactory, standin: StandIn, remote: StandIn
) -> None:
    standin.script(Reply(text="first answer"))
    remote.script(Reply(text="second answer"))
    log = ProgressLog()
    async with connect(named()) as client:
        first = ok(await client.call_tool("ask", {"prompt": "one", "model": "local"}, progress_callback=log))
        second = ok(
            await client.call_tool(
                "ask", {"prompt": "two", "model": "remote", "conversation_id": first["conversation_id"]}
            )
        )
    assert second["conversation_id"] == first["conversation_id"]
    assert any("first" in message for message in log.messages)
    (messages,) = [r for r in remote.requests if r.api == "messages"]
    sent = json.dumps(messages.body["messages"])
    assert "one" in sent and "first answer" in sent  # the local provider's turn reached the remote one


@pytest.mark.anyio
async def test_bad_model_arguments_say_what_exists(named: SettingsFactory, standin: StandIn) -> None:
    async with connect(
        named(providers=json.dumps({"bare": {"base_url": standin.openai_base_url, "api": "chat"}}))
    ) as c:
        unknown = error_of(await c.call_tool("ask", {"prompt": "hi", "model": "lmstudio:qwen3"}))
        alone = error_of(await c.call_tool("ask", {"prompt": "hi", "model": "bare"}))
        nothing = error_of(await c.call_tool("ask", {"prompt": "hi", "model": "nonsense"}))
    assert unknown["kind"] == "invalid_target" and "unknown provider `lmstudio`" in unknown["message"]
    assert "openai, anthropic, bare" in unknown["message"]
    assert "`bare` has no default model: write `bare:<model>`" in alone["message"]
    assert "unknown provider or model alias `nonsense`" in nothing["message"]
    assert [r for r in standin.requests if r.api != "models"] == []


@pytest.mark.anyio
async def test_a_provider_without_its_key_is_listed_as_not_configured(
    make_settings: SettingsFactory, standin: StandIn, remote: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REMOTE_TEST_KEY", raising=False)
    async with connect(make_settings(providers=json.dumps(providers(standin, remote)))) as client:
        refused = error_of(await client.call_tool("ask", {"prompt": "hi", "model": "remote"}))
        catalog = ok(await client.call_tool("list_models", {}))
    assert refused["kind"] == "not_configured" and "set REMOTE_TEST_KEY" in refused["message"]
    entry = next(p for p in catalog["providers"] if p["id"] == "remote")
    assert entry["configured"] is False and entry["missing_variable"] == "REMOTE_TEST_KEY"
    assert remote.requests == []


@pytest.mark.anyio
async def test_list_models_shows_named_providers(named: SettingsFactory, standin: StandIn, remote: StandIn) -> None:
    async with connect(named()) as client:
        catalog = ok(await client.call_tool("list_models", {}))
    by_id = {p["id"]: p for p in catalog["providers"]}
    assert list(by_id) == ["openai", "anthropic", "local", "remote"]
    local, far = by_id["local"], by_id["remote"]
    assert (local["api_style"], local["tool"], local["configured"], local["key_set"]) == ("chat", "ask", True, False)
    assert local["base_url_host"] == f"127.0.0.1:{standin.port}" and local["models"]
    assert local["concurrency_variable"] == 'MCP_LLM_PROVIDERS["local"].concurrency'
    assert (far["api_style"], far["configured"], far["key_set"], far["default_model"]) == (
        "messages",
        True,
        True,
        "remote-large",
    )
    assert REMOTE_KEY not in json.dumps(catalog)


@pytest.mark.anyio
async def test_ask_many_mixes_named_and_built_in_providers_and_the_ledger_names_them(
    named: SettingsFactory, standin: StandIn, remote: StandIn
) -> None:
    async with connect(named()) as client:
        many = ok(await client.call_tool("ask_many", {"prompt": "hi", "targets": ["local", "remote", "openai"]}))
        defaults = ok(await client.call_tool("ask_many", {"prompt": "hi"}))
        usage = ok(await client.call_tool("usage_report", {}))
    assert [a["provider"] for a in many["answers"]] == ["local", "remote", "openai"]
    assert [a["target"] for a in many["answers"]] == ["local:qwen3", "remote:remote-large", "openai:gpt-5.5"]
    assert {a["provider"] for a in defaults["answers"]} == {"openai", "anthropic", "local", "remote"}
    text = json.dumps(usage)
    assert '"local"' in text and '"remote"' in text


@pytest.mark.anyio
async def test_a_named_providers_budget_and_price(
    make_settings: SettingsFactory, standin: StandIn, remote: StandIn
) -> None:
    """Prices come from MCP_LLM_MODEL_PRICES as `provider:model`; a named provider's own budget refuses the call
    that would pass it, naming where it is set, while the other providers still answer."""
    spec = providers(standin, remote)
    spec["local"]["budget_daily_usd"] = 0.002
    prices = {"local:qwen3": {"input_per_mtok": 10, "output_per_mtok": 1000}}
    settings = make_settings(providers=json.dumps(spec), model_prices=prices)
    standin.script(Reply(text="x", input_tokens=1, output_tokens=1))
    async with connect(settings) as client:
        first = ok(await client.call_tool("ask", {"prompt": "hi", "model": "local", "max_tokens": 1}))
        refused = error_of(await client.call_tool("ask", {"prompt": "hi", "model": "local", "max_tokens": 1000}))
        other = ok(await client.call_tool("ask", {"prompt": "hi", "model": "openai"}))
        usage = ok(await client.call_tool("usage_report", {}))
    assert first["cost_usd"] == pytest.approx(0.00101) and first["cost_note"] == "price from MCP_LLM_MODEL_PRICES"
    assert refused["kind"] == "budget_exceeded"
    assert 'MCP_LLM_PROVIDERS["local"].budget_daily_usd' in refused["message"]
    assert other["provider"] == "openai"
    (cap,) = [b for b in usage["budgets"] if b["scope"] == "local"]
    assert cap["period"] == "day" and cap["spent_usd"] == pytest.approx(0.00101)


@pytest.mark.anyio
async def test_a_named_providers_key_never_comes_back(named: SettingsFactory, remote: StandIn) -> None:
    remote.script(Reply.error(400, message=f"bad request, key {REMOTE_KEY} echoed"), Reply(text=f"I saw {REMOTE_KEY}"))
    async with connect(named()) as client:
        failed = await client.call_tool("ask", {"prompt": "hi", "model": "remote"})
        echoed = await client.call_tool("ask", {"prompt": "hi", "model": "remote"})
    assert failed.is_error and "bad request" in text_of(failed)
    for result in (failed, echoed):
        assert REMOTE_KEY not in text_of(result) + json.dumps(result.structured_content) + json.dumps(result.meta)


@pytest.mark.anyio
async def test_extract_json_with_a_named_provider(named: SettingsFactory, standin: StandIn, remote: StandIn) -> None:
    """`extract_json`'s provider may be a named one; the output format follows its API (Chat Completions'
    `response_format` for `local`, the Messages API's for `remote`)."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    standin.script(Reply(text='{"n": 1}'))
    remote.script(Reply(text='{"n": 2}'))
    async with connect(named()) as client:
        local = ok(await client.call_tool("extract_json", {"text": "one", "schema": schema, "provider": "local"}))
        far = ok(await client.call_tool("extract_json", {"text": "two", "schema": schema, "provider": "remote"}))
        unknown = error_of(await client.call_tool("extract_json", {"text": "x", "schema": schema, "provider": "lm"}))
    assert local == {"n": 1} and far == {"n": 2}
    (chat,) = [r for r in standin.requests if r.api == "chat"]
    (messages,) = [r for r in remote.requests if r.api == "messages"]
    assert chat.body["model"] == "qwen3" and "response_format" in chat.body
    assert messages.body["model"] == "remote-large" and "response_format" not in messages.body
    assert unknown["kind"] == "invalid_provider" and "openai, anthropic, local, remote" in unknown["message"]
