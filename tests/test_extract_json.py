"""`extract_json` end to end in memory: the real MCP client and SDKs against the stand-in upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside calls.
import anthropic  # noqa: F401
import helpers
import openai  # noqa: F401
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY, SettingsFactory, text_of
from helpers import ProgressLog, error_of
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn
from mcp_llm_server.tools.extract import META_KEY

pytestmark = pytest.mark.anyio

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
    },
    "required": ["name"],
}

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"},
                "tier": {"enum": ["free", "pro", "enterprise"]},
            },
            "required": ["name", "email", "tier"],
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["customer", "items"],
}
ORDER_VALUE = {
    "customer": {"name": "Ann Lee", "email": "ann@example.com", "tier": "pro"},
    "items": [{"sku": "A-1", "qty": 2}],
}


@asynccontextmanager
async def connect(make_settings: SettingsFactory, **overrides: Any) -> AsyncIterator[Client]:
    """The real server with these settings (a current Anthropic model: the default one warns), in memory."""
    async with helpers.connect(make_settings(anthropic_model="claude-standin", **overrides)) as client:
        yield client


@pytest.fixture
async def client(make_settings: SettingsFactory) -> AsyncIterator[Client]:
    """The shared in-memory client, with a current Anthropic model."""
    async with connect(make_settings) as c:
        yield c


def summary(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    assert result.meta is not None
    info: dict[str, Any] = result.meta[META_KEY]
    return info


def prompt_of(request: RecordedRequest) -> str:
    body = request.body
    if "input" in body:
        return str(body["input"])
    return str(body["messages"][-1]["content"])


async def extract(client: Client, schema: Any, text: str = "Ann is 30.", **args: Any) -> CallToolResult:
    return await client.call_tool("extract_json", {"text": text, "schema": schema, **args})


# --- success ---------------------------------------------------------------------------------------------


async def test_tools_list_entry(client: Client) -> None:
    """The tool is listed with a flat input schema, annotations and no output schema."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    tool = tools["extract_json"]
    schema = tool.input_schema
    assert schema["required"] == ["text", "schema"]
    assert "anyOf" not in schema and "$ref" not in schema
    assert schema["properties"]["schema"]["type"] == "string"  # an object is accepted too (no strict form to show)
    assert "Default: 3." in schema["properties"]["max_attempts"]["description"]
    assert tool.output_schema is None
    assert tool.annotations is not None and tool.annotations.read_only_hint and tool.annotations.open_world_hint


async def test_valid_first_time(client: Client, standin: StandIn) -> None:
    """A valid answer is returned as structured content and JSON text, after one request."""
    standin.script(Reply(text='{"name": "Ann", "age": 30}', input_tokens=50, output_tokens=9))
    result = await extract(client, PERSON)
    assert result.structured_content == {"name": "Ann", "age": 30}
    assert json.loads(text_of(result)) == {"name": "Ann", "age": 30}
    info = summary(result)
    assert info["attempts"] == 1 and info["upstream_requests"] == 1
    assert info["provider"] == "openai" and info["model"] == "gpt-5.5"
    assert info["usage"] == {"input_tokens": 50, "output_tokens": 9}
    assert len(standin.requests) == 1


async def test_fenced_json(client: Client, standin: StandIn) -> None:
    """JSON inside a Markdown code fence is accepted."""
    standin.script(Reply(text='```json\n{"name": "Ann", "age": 30}\n```'))
    result = await extract(client, PERSON)
    assert result.structured_content == {"name": "Ann", "age": 30}


async def test_prose_around_json(client: Client, standin: StandIn) -> None:
    """JSON surrounded by prose is found and accepted."""
    standin.script(Reply(text='Sure! Here is the data: {"name": "Ann"} Let me know if you need more.'))
    result = await extract(client, PERSON)
    assert result.structured_content == {"name": "Ann"}


async def test_schema_given_as_string(client: Client, standin: StandIn) -> None:
    """A schema sent as a JSON string (as some hosts do) works like the object."""
    standin.script(Reply(text='{"name": "Ann"}'))
    result = await extract(client, json.dumps(PERSON))
    assert result.structured_content == {"name": "Ann"}
    assert standin.requests[0].body["text"]["format"]["schema"]["properties"]["name"] == {"type": "string"}


async def test_nested_schema_with_required_enum_pattern_minimum(client: Client, standin: StandIn) -> None:
    """A nested order passes; a wrong enum, pattern, minimum and a missing property are each reported by path."""
    bad = {
        "customer": {"name": "Ann", "email": "not an email", "tier": "gold"},
        "items": [{"sku": "A-1", "qty": 0}, {"qty": 1}],
    }
    standin.script(Reply(text=json.dumps(bad)), Reply(text=json.dumps(ORDER_VALUE)))
    result = await extract(client, ORDER, text="Ann Lee (ann@example.com, pro plan) orders 2 x A-1.")
    assert result.structured_content == ORDER_VALUE
    assert summary(result)["attempts"] == 2
    repair = prompt_of(standin.requests[1])
    for path in ("$.customer.email", "$.customer.tier", "$.items[0].qty", "$.items[1]"):
        assert f"- {path}: " in repair
    assert '"gold" is not one of ["free", "pro", "enterprise"]' in repair
    assert '"sku" is a required property' in repair


@pytest.mark.parametrize(
    ("schema", "answer", "value"),
    [
        ({"type": "array", "items": {"type": "string"}}, '{"data": ["a", "b"]}', ["a", "b"]),
        ({"type": "array", "items": {"type": "string"}}, '["a"]', ["a"]),
        ({"type": "string", "enum": ["yes", "no"]}, '{"data": "yes"}', "yes"),
        ({"type": "integer", "minimum": 1}, '{"data": 7}', 7),
    ],
)
async def test_non_object_schemas(
    client: Client, standin: StandIn, schema: dict[str, Any], answer: str, value: Any
) -> None:
    """Array, string and integer roots: the provider sees {"data": ...}; the result is wrapped as {"data": value}."""
    standin.script(Reply(text=answer))
    result = await extract(client, schema)
    assert result.structured_content == {"data": value}
    assert json.loads(text_of(result)) == value
    sent = standin.requests[0].body["text"]["format"]["schema"]
    assert sent["required"] == ["data"] and sent["properties"]["data"]["type"] == schema["type"]


async def test_strict_mode_nulls_are_dropped(client: Client, standin: StandIn) -> None:
    """Strict mode makes optional properties nullable; a null the model sends for one is removed, not returned."""
    standin.script(Reply(text='{"name": "Ann", "age": null}'))
    result = await extract(client, PERSON)
    assert result.structured_content == {"name": "Ann"}


# --- repair ----------------------------------------------------------------------------------------------


async def test_invalid_json_then_valid(client: Client, standin: StandIn) -> None:
    """Not-JSON then valid: 2 attempts, the second request carries the previous answer and why it failed."""
    standin.script(
        Reply(text='{"name": "Ann", "age": 30', input_tokens=40, output_tokens=8),
        Reply(text='{"name": "Ann", "age": 30}', input_tokens=90, output_tokens=9),
    )
    log = ProgressLog()
    result = await client.call_tool("extract_json", {"text": "Ann is 30.", "schema": PERSON}, progress_callback=log)
    assert result.structured_content == {"name": "Ann", "age": 30}
    info = summary(result)
    assert info["attempts"] == 2 and info["upstream_requests"] == 2
    assert info["usage"] == {"input_tokens": 130, "output_tokens": 17}
    first, second = (prompt_of(r) for r in standin.requests)
    assert "previous_answer" not in first
    assert '<previous_answer>\n{"name": "Ann", "age": 30\n</previous_answer>' in second
    assert "It is not valid JSON (" in second
    assert any(m.startswith("Attempt 1 of 3: not JSON") and m.endswith("asking again") for m in log.messages)
    assert any(m.startswith("Attempt 2 of 3: ") for m in log.messages)


async def test_schema_violation_every_time(client: Client, standin: StandIn) -> None:
    """An answer that never validates ends in a clear error: attempts = max, last errors with paths, last output."""
    standin.responder = lambda request: Reply(text='{"name": 42, "age": -1}')
    result = await extract(client, PERSON, max_attempts=3)
    error = error_of(result)
    assert error["kind"] == "schema_violation"
    assert error["attempts"] == 3 and error["upstream_requests"] == 3
    assert {e["path"] for e in error["errors"]} == {"$.name", "$.age"}
    assert error["last_output"] == '{"name": 42, "age": -1}'
    message = text_of(result)
    assert "no schema-valid JSON after 3 attempts" in message
    assert "- $.age: -1 is less than the minimum of 0" in message
    assert len(standin.requests) == 3
    assert OPENAI_KEY not in message + json.dumps(error)


async def test_never_json(client: Client, standin: StandIn) -> None:
    """Prose with no JSON at all, every time, ends as `not_json` with the last output truncated."""
    standin.responder = lambda request: Reply(text="I cannot help with that. " * 100)
    result = await extract(client, PERSON, max_attempts=2)
    error = error_of(result)
    assert error["kind"] == "not_json" and error["attempts"] == 2
    assert error["last_output"].endswith("more characters]") and len(error["last_output"]) < 2100


async def test_upstream_retries_are_not_attempts(client: Client, standin: StandIn) -> None:
    """A 429 and a 503 are retried inside one attempt, by the ask tools' policy."""
    standin.script(Reply.error(429), Reply.error(503), Reply(text='{"name": "Ann"}'))
    result = await extract(client, PERSON, max_attempts=1)
    info = summary(result)
    assert info["attempts"] == 1 and info["upstream_requests"] == 3


async def test_final_upstream_error_is_reported(client: Client, standin: StandIn) -> None:
    """A 401 ends the call at once as the ask tools report it, with no repair attempt and no key shown."""
    standin.script(Reply.error(401))
    result = await extract(client, PERSON)
    error = error_of(result)
    assert error["kind"] == "authentication" and error["extract_attempts"] == 1
    assert len(standin.requests) == 1
    assert OPENAI_KEY not in text_of(result)


async def test_rejected_format_falls_back(client: Client, standin: StandIn) -> None:
    """A 400 on the strict format drops to the non-strict one, without using up an attempt."""
    standin.script(Reply.error(400, message="Invalid schema for response_format"), Reply(text='{"name": "Ann"}'))
    result = await extract(client, PERSON, max_attempts=1)
    assert result.structured_content == {"name": "Ann"}
    formats = [r.body["text"]["format"] for r in standin.requests]
    assert [f["strict"] for f in formats] == [True, False]
    assert formats[1]["schema"] == PERSON


# --- schemas refused before any request ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "objekt"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/nowhere"}}}, "points to nothing"),
        ({"$ref": "http://169.254.169.254/latest"}, "only local references"),
        ('{"type": "object", ', "not JSON"),
        ({"type": "string", "description": "x" * 70_000}, "MCP_LLM_EXTRACT_MAX_SCHEMA_BYTES"),
    ],
)
async def test_invalid_schema_costs_nothing(client: Client, standin: StandIn, schema: Any, words: str) -> None:
    """An invalid, dangling, remote or oversized schema is an isError result and no upstream request is made."""
    result = await extract(client, schema)
    error = error_of(result)
    assert error["kind"] == "invalid_schema" and words in error["message"]
    assert standin.requests == []


async def test_too_deep_schema_costs_nothing(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A schema deeper than MCP_LLM_EXTRACT_MAX_SCHEMA_DEPTH is refused before any request."""
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(10):
        deep = {"type": "array", "items": deep}
    async with connect(make_settings, extract_max_schema_depth=8) as client:
        result = await extract(client, deep)
    assert "MCP_LLM_EXTRACT_MAX_SCHEMA_DEPTH" in error_of(result)["message"]
    assert standin.requests == []


# --- providers and wire formats ----------------------------------------------------------------------------


async def test_openai_responses_sends_strict_json_schema(client: Client, standin: StandIn) -> None:
    """Responses: `text.format` is a strict json_schema (closed objects, optional properties nullable)."""
    standin.script(Reply(text=json.dumps(ORDER_VALUE)))
    await extract(client, ORDER)
    fmt = standin.requests[0].body["text"]["format"]
    assert fmt["type"] == "json_schema" and fmt["strict"] is True and fmt["name"] == "extracted_data"
    customer = fmt["schema"]["properties"]["customer"]
    assert customer["additionalProperties"] is False
    assert customer["properties"]["tier"] == {"enum": ["free", "pro", "enterprise"]}
    assert fmt["schema"]["properties"]["items"]["minItems"] == 1


async def test_openai_non_strict_when_schema_cannot_be_strict(client: Client, standin: StandIn) -> None:
    """A keyword strict mode lacks (minLength) means a non-strict json_schema with the caller's schema."""
    schema = {"type": "object", "properties": {"code": {"type": "string", "minLength": 3}}, "required": ["code"]}
    standin.script(Reply(text='{"code": "ab"}'), Reply(text='{"code": "abc"}'))
    result = await extract(client, schema)
    assert result.structured_content == {"code": "abc"}
    fmt = standin.requests[0].body["text"]["format"]
    assert fmt == {"type": "json_schema", "name": "extracted_data", "schema": schema, "strict": False}
    assert '- $.code: "ab" is shorter than 3 characters' in prompt_of(standin.requests[1])


async def test_openai_chat_sends_response_format(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Chat Completions (compatible servers): `response_format` json_schema, falling back to json_object on a 400."""
    standin.script(Reply.error(400), Reply.error(400), Reply(text='{"name": "Ann"}'))
    async with connect(make_settings, openai_api="chat") as client:
        result = await extract(client, PERSON)
    assert result.structured_content == {"name": "Ann"}
    formats = [r.body["response_format"] for r in standin.requests]
    assert [r.api for r in standin.requests] == ["chat"] * 3
    assert formats[0]["type"] == "json_schema" and formats[0]["json_schema"]["strict"] is True
    assert formats[1]["type"] == "json_schema" and formats[1]["json_schema"]["strict"] is False
    assert formats[2] == {"type": "json_object"}
    assert "<json_schema>" in prompt_of(standin.requests[2])


async def test_anthropic_sends_output_config(client: Client, standin: StandIn) -> None:
    """Anthropic: `output_config.format` is a json_schema in the SDK's dialect; the answer is validated the same."""
    standin.script(Reply(text=json.dumps(ORDER_VALUE)))
    result = await extract(client, ORDER, provider="anthropic")
    assert result.structured_content == ORDER_VALUE
    assert summary(result)["provider"] == "anthropic" and summary(result)["model"] == "claude-standin"
    request = standin.requests[0]
    assert request.api == "messages"
    fmt = request.body["output_config"]["format"]
    assert fmt["type"] == "json_schema"
    customer = fmt["schema"]["properties"]["customer"]
    assert customer["additionalProperties"] is False and customer["required"] == ["name", "email", "tier"]
    assert "minimum: 1" in fmt["schema"]["properties"]["items"]["items"]["properties"]["qty"]["description"]


async def test_anthropic_repair(client: Client, standin: StandIn) -> None:
    """Anthropic answers go through the same repair loop."""
    standin.script(Reply(text='{"age": 3}'), Reply(text='{"name": "Ann", "age": 3}'))
    result = await extract(client, PERSON, provider="anthropic")
    assert result.structured_content == {"name": "Ann", "age": 3}
    assert summary(result)["attempts"] == 2
    assert '- $: "name" is a required property' in prompt_of(standin.requests[1])


async def test_anthropic_map_schema_uses_prompt_only(client: Client, standin: StandIn) -> None:
    """A map (additionalProperties schema) cannot be closed, so Anthropic gets no output_config and the prompt."""
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    standin.script(Reply(text='{"apples": 3, "pears": 5}'))
    result = await extract(client, schema, text="3 apples and 5 pears", provider="anthropic")
    assert result.structured_content == {"apples": 3, "pears": 5}
    assert "output_config" not in standin.requests[0].body
    assert '"additionalProperties": {"type": "integer"}' in prompt_of(standin.requests[0])


async def test_default_provider_from_settings(make_settings: SettingsFactory, standin: StandIn) -> None:
    """MCP_LLM_EXTRACT_PROVIDER picks the provider when the call names none."""
    standin.script(Reply(text='{"name": "Ann"}'))
    async with connect(make_settings, extract_provider="anthropic") as client:
        result = await extract(client, PERSON, instructions="Use the full name.")
    assert summary(result)["provider"] == "anthropic"
    assert "<instructions>\nUse the full name.\n</instructions>" in prompt_of(standin.requests[0])


async def test_unconfigured_provider(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A provider without a key is an error naming the variable, with no request made."""
    async with connect(make_settings, anthropic_api_key=None) as client:
        result = await extract(client, PERSON, provider="anthropic")
    assert result.is_error and "ANTHROPIC_API_KEY" in text_of(result)
    assert ANTHROPIC_KEY not in text_of(result)
    assert standin.requests == []
