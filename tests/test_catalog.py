"""The `llm://models` resource: configuration and limits, never a key (`list_models`: test_models_catalog.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY, SettingsFactory
from mcp import Client
from mcp.types import TextResourceContents

from mcp_llm_server._standin import StandIn
from mcp_llm_server.server import build_server

pytestmark = pytest.mark.anyio


async def read_catalog(client: Client) -> dict[str, Any]:
    result = await client.read_resource("llm://models")
    (contents,) = result.contents
    assert isinstance(contents, TextResourceContents)
    assert contents.mime_type == "application/json"
    parsed: dict[str, Any] = json.loads(contents.text)
    return parsed


async def test_resource_is_listed_and_describes_both_providers(make_settings: SettingsFactory) -> None:
    """The resource is listed; it gives each provider's model, host, API style and limit, and the policies."""
    settings = make_settings(openai_concurrency=5, anthropic_concurrency=3, openai_model="gpt-z", max_attempts=2)
    async with Client(build_server(settings)) as client:
        listed = await client.list_resources()
        catalog = await read_catalog(client)
    assert [r.uri for r in listed.resources] == ["llm://models", "llm://usage"]
    openai, anthropic = catalog["providers"]
    assert {k: openai[k] for k in ("id", "tool", "configured", "key_set", "missing_variable")} == {
        "id": "openai",
        "tool": "ask_openai",
        "configured": True,
        "key_set": True,
        "missing_variable": None,
    }
    assert (openai["default_model"], openai["api_style"], openai["concurrency_limit"]) == ("gpt-z", "responses", 5)
    assert (openai["concurrency_ceiling"], openai["concurrency_variable"]) == (5, "MCP_LLM_OPENAI_CONCURRENCY")
    assert (anthropic["default_model"], anthropic["api_style"], anthropic["concurrency_limit"]) == (
        "claude-sonnet-5-5",
        "messages",
        3,
    )
    assert openai["base_url_host"].startswith("127.0.0.1:")
    assert catalog["max_fanout_targets"] == 8
    assert catalog["retries"]["max_attempts"] == 2
    assert catalog["timeouts"]["call_timeout_s"] == settings.call_timeout_s


async def test_no_key_and_no_url_secrets(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Keys, URL credentials and URL paths never appear, and reading the resource makes no upstream request."""
    url = "https://alice:url-password@proxy.example.com:8443/tenant-secret/v1"
    async with Client(build_server(make_settings(openai_base_url=url))) as client:
        catalog = await read_catalog(client)
    raw = json.dumps(catalog)
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, "url-password", "alice", "tenant-secret"):
        assert secret not in raw
    assert catalog["providers"][0]["base_url_host"] == "proxy.example.com:8443"
    assert catalog["providers"][1]["base_url_host"] == f"127.0.0.1:{standin.port}"
    assert standin.requests == []


async def test_unconfigured_and_keyless_providers(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A provider without a key names the variable to set; a keyless OpenAI-compatible server is configured."""
    settings = make_settings(
        anthropic_api_key=None,
        openai_api_key=None,
        openai_base_url="http://localhost:11434/v1",
        openai_api="chat",
    )
    async with Client(build_server(settings)) as client:
        openai, anthropic = (await read_catalog(client))["providers"]
    assert (openai["configured"], openai["key_set"], openai["missing_variable"]) == (True, False, None)
    assert (openai["base_url_host"], openai["api_style"]) == ("localhost:11434", "chat")
    assert (anthropic["configured"], anthropic["key_set"]) == (False, False)
    assert anthropic["missing_variable"] == "ANTHROPIC_API_KEY"
    assert anthropic["base_url_host"] == f"127.0.0.1:{standin.port}"


async def test_default_hosts(make_settings: SettingsFactory) -> None:
    """Without base URLs the catalog shows the providers' own hosts, and OpenAI without a key is unconfigured."""
    settings = make_settings(openai_base_url=None, anthropic_base_url=None, openai_api_key=None)
    async with Client(build_server(settings)) as client:
        openai, anthropic = (await read_catalog(client))["providers"]
    assert (openai["base_url_host"], anthropic["base_url_host"]) == ("api.openai.com", "api.anthropic.com")
    assert (openai["configured"], openai["missing_variable"]) == (False, "OPENAI_API_KEY")
