"""`list_models`, model aliases and unknown models, against the stand-in provider through the real MCP client."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from conftest import OPENAI_KEY, SettingsFactory, error_details, text_of
from helpers import ok
from mcp import Client
from mcp.types import TextResourceContents

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import SettingsError, load_settings

pytestmark = pytest.mark.anyio

ALIASES = "fast=openai:gpt-standin-mini, Smart=claude:claude-standin, gone=anthropic:claude-retired"


def by_id(catalog: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {provider["id"]: provider for provider in catalog["providers"]}


def model_requests(standin: StandIn) -> list[RecordedRequest]:
    return [r for r in standin.requests if r.api == "models"]


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_lists_both_providers_models(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Each provider's models come from its models endpoint, with its default model and the aliases."""
    standin.openai_models = ["gpt-standin", "gpt-standin-mini", "o-standin"]
    standin.anthropic_models = ["claude-standin", "claude-standin-haiku"]
    settings = make_settings(model_aliases=ALIASES, openai_model="gpt-standin")
    async with Client(build_server(settings)) as client:
        catalog = ok(await client.call_tool("list_models", {}))
    openai, anthropic = by_id(catalog)["openai"], by_id(catalog)["anthropic"]
    assert openai["models"] == ["gpt-standin", "gpt-standin-mini", "o-standin"]
    assert anthropic["models"] == ["claude-standin", "claude-standin-haiku"]
    assert (openai["default_model"], openai["default_model_listed"]) == ("gpt-standin", True)
    assert (anthropic["default_model"], anthropic["default_model_listed"]) == (settings.anthropic_model, False)
    for provider in (openai, anthropic):
        assert provider["models_error"] is None and provider["models_from_cache"] is False
        assert provider["models_fetched_at"].endswith("+00:00") and provider["configured"] is True
    assert catalog["aliases"] == [
        {"name": "fast", "provider": "openai", "model": "gpt-standin-mini", "listed": True, "then": None},
        {"name": "smart", "provider": "anthropic", "model": "claude-standin", "listed": True, "then": None},
        {"name": "gone", "provider": "anthropic", "model": "claude-retired", "listed": False, "then": None},
    ]
    requests = model_requests(standin)
    assert sorted((r.method, r.path) for r in requests) == [("GET", "/v1/models")] * 2
    assert {r.headers.get("authorization") for r in requests} >= {f"Bearer {OPENAI_KEY}"}
    assert any("anthropic-version" in r.headers for r in requests)


async def test_cached_until_refresh(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A second call is answered from the cache without a request; `refresh` fetches both lists again."""
    async with Client(build_server(make_settings())) as client:
        ok(await client.call_tool("list_models", {}))
        assert len(model_requests(standin)) == 2
        standin.openai_models = ["gpt-new"]
        cached = ok(await client.call_tool("list_models", {}))
        assert len(model_requests(standin)) == 2
        assert by_id(cached)["openai"]["models"] == ["gpt-standin", "gpt-standin-mini"]
        assert all(p["models_from_cache"] for p in cached["providers"])
        fresh = ok(await client.call_tool("list_models", {"refresh": True}))
    assert len(model_requests(standin)) == 4
    assert by_id(fresh)["openai"]["models"] == ["gpt-new"]
    assert not any(p["models_from_cache"] for p in fresh["providers"])
    assert all(r.api == "models" for r in standin.requests)


async def test_ttl_zero_fetches_every_time(make_settings: SettingsFactory, standin: StandIn) -> None:
    """With MCP_LLM_MODELS_TTL_S=0 every call asks the providers."""
    async with Client(build_server(make_settings(models_ttl_s=0))) as client:
        for _ in range(2):
            ok(await client.call_tool("list_models", {}))
    assert len(model_requests(standin)) == 4


async def test_one_provider_failing_is_reported_alone(make_settings: SettingsFactory, standin: StandIn) -> None:
    """An unreachable provider's entry says why; the other is listed and the call succeeds; failures are not cached."""
    async with Client(build_server(make_settings(anthropic_base_url=closed_port_url()))) as client:
        catalog = ok(await client.call_tool("list_models", {}))
        again = ok(await client.call_tool("list_models", {}))
    openai, anthropic = by_id(catalog)["openai"], by_id(catalog)["anthropic"]
    assert openai["models"] == ["gpt-standin", "gpt-standin-mini"] and openai["models_error"] is None
    assert anthropic["models"] is None and anthropic["default_model_listed"] is None
    assert anthropic["models_error"].startswith("Anthropic: connection failed")
    assert by_id(again)["openai"]["models_from_cache"] is True
    assert by_id(again)["anthropic"]["models_error"].startswith("Anthropic: connection failed")  # tried again


async def test_unconfigured_provider_names_the_variable(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A provider without a key is listed with the variable to set, and no request is made for it."""
    async with Client(build_server(make_settings(anthropic_api_key=None))) as client:
        catalog = ok(await client.call_tool("list_models", {}))
    anthropic = by_id(catalog)["anthropic"]
    assert (anthropic["configured"], anthropic["models"]) == (False, None)
    assert "ANTHROPIC_API_KEY" in anthropic["models_error"]
    assert [r.headers.get("authorization") for r in model_requests(standin)] == [f"Bearer {OPENAI_KEY}"]


async def test_list_models_carries_the_resource_configuration(make_settings: SettingsFactory) -> None:
    """Apart from the model lists, `list_models` gives exactly what the `llm://models` resource gives."""
    async with Client(build_server(make_settings(model_aliases=ALIASES))) as client:
        catalog = ok(await client.call_tool("list_models", {}))
        (contents,) = (await client.read_resource("llm://models")).contents
    assert isinstance(contents, TextResourceContents)
    resource = json.loads(contents.text)
    listing_keys = {"models", "models_error", "models_fetched_at", "models_from_cache", "default_model_listed"}
    stripped = [{k: v for k, v in p.items() if k not in listing_keys} for p in catalog["providers"]]
    assert stripped == resource["providers"]
    assert [{**a, "listed": None} for a in catalog["aliases"]] == resource["aliases"]
    assert {k: v for k, v in catalog.items() if k not in ("providers", "aliases")} == {
        k: v for k, v in resource.items() if k not in ("providers", "aliases")
    }


async def test_aliases_resolve_on_every_tool(make_settings: SettingsFactory, standin: StandIn) -> None:
    """An alias given as `model` or as an ask_many target reaches the provider as its concrete model."""
    async with Client(build_server(make_settings(model_aliases=ALIASES))) as client:
        ok(await client.call_tool("ask_openai", {"prompt": "hi", "model": "fast"}))
        ok(await client.call_tool("ask_claude", {"prompt": "hi", "model": "SMART"}))
        standin.script(Reply(text='{"n": 1}'))
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        ok(await client.call_tool("extract_json", {"text": "n is 1", "schema": schema, "model": "smart"}))
        many = ok(await client.call_tool("ask_many", {"prompt": "hi", "targets": ["fast", "anthropic:smart"]}))
    sent = [(r.api, r.body["model"]) for r in standin.requests]
    openai_fast, anthropic_smart = ("responses", "gpt-standin-mini"), ("messages", "claude-standin")
    assert sent[:3] == [openai_fast, anthropic_smart, anthropic_smart]
    assert sorted(sent[3:]) == [anthropic_smart, openai_fast]
    assert [a["target"] for a in many["answers"]] == ["openai:gpt-standin-mini", "anthropic:claude-standin"]


async def test_alias_of_the_other_provider_is_refused(make_settings: SettingsFactory, standin: StandIn) -> None:
    """An alias for another provider's model is refused before any request, naming the tool to use."""
    async with Client(build_server(make_settings(model_aliases=ALIASES))) as client:
        wrong = await client.call_tool("ask_openai", {"prompt": "hi", "model": "smart"})
        wrong_target = await client.call_tool("ask_many", {"prompt": "hi", "targets": ["openai:smart"]})
    assert wrong.is_error and "anthropic:claude-standin" in text_of(wrong) and "ask_claude" in text_of(wrong)
    assert wrong_target.is_error and "`openai:smart`" in text_of(wrong_target)
    assert standin.requests == []


@pytest.mark.parametrize("tool", ["ask_openai", "ask_claude"])
async def test_unknown_model_points_to_list_models(make_settings: SettingsFactory, standin: StandIn, tool: str) -> None:
    """The upstream's 404 for an unknown model is an isError naming the model and pointing to `list_models`."""
    standin.script_model("gpt-nope", Reply.error(404, message="The model `gpt-nope` does not exist"))
    async with Client(build_server(make_settings())) as client:
        result = await client.call_tool(tool, {"prompt": "hi", "model": "gpt-nope"})
    assert result.is_error
    text = text_of(result)
    assert "not found" in text and "`gpt-nope` does not exist" in text and "`list_models`" in text
    assert (error_details(result)["error"]["kind"], error_details(result)["error"]["status"]) == (
        "not_found",
        404,
    )
    assert len(standin.requests) == 1


def test_alias_setting_forms() -> None:
    """Aliases are read from `name=provider:model` pairs or a JSON object; names are case-insensitive."""
    pairs = load_settings(_env_file=None, model_aliases="Fast = openai:gpt-x , local=openai:llama3.2:3b")
    as_json = load_settings(_env_file=None, model_aliases='{"fast": "openai:gpt-x", "local": "openai:llama3.2:3b"}')
    assert pairs.model_aliases == as_json.model_aliases == {"fast": "openai:gpt-x", "local": "openai:llama3.2:3b"}
    assert load_settings(_env_file=None, model_aliases="").model_aliases == {}


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("fast=gpt-x", "must map to `provider:model`"),
        ("fast=gemini:pro", "the provider `gemini` is neither built in"),
        ("sk-secret-pasted-here", "entry 1 is not `name=provider:model`"),
        ("openai=openai:gpt-x", "is a provider name"),
        ('{"fast": 3}', "must map to a `provider:model` string"),
        ("[1, 2]", "entry 1 is not"),
        ('{"fast": ', "not a valid JSON object"),
    ],
)
def test_bad_alias_setting_names_the_variable(value: str, why: str) -> None:
    """A malformed MCP_LLM_MODEL_ALIASES is a settings error naming the variable, never echoing the entry."""
    with pytest.raises(SettingsError) as caught:
        load_settings(_env_file=None, model_aliases=value)
    message = str(caught.value)
    assert message.startswith("MCP_LLM_MODEL_ALIASES: ") and why in message
    assert "sk-secret" not in message
