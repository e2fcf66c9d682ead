"""Arguments that break a tool's input schema come back, for every tool, as an error a model can act on: each wrong
argument named, what was wrong and what is accepted, with `_meta` details of kind `invalid_argument`; never pydantic's
text (`1 validation error for ask_openaiArguments … https://errors.pydantic.dev/…`). Through the real MCP client."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SettingsFactory, error_details, text_of
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import StandIn
from mcp_llm_server.server import build_server

pytestmark = pytest.mark.anyio

# A value of the wrong type for each JSON type (pydantic does not coerce these).
WRONG = {"string": 12345, "number": "lots", "integer": "lots", "boolean": "maybe", "array": 7, "object": 7}


def assert_actionable(result: CallToolResult, tool: str, argument: str) -> dict[str, Any]:
    """The error names the argument and what is accepted, carries `invalid_argument` details, and no pydantic text."""
    assert result.is_error
    text = text_of(result)
    assert f"for `{tool}`" in text and f"`{argument}`" in text and "Accepted: " in text, text
    for pydantic_text in ("pydantic", "validation error for", "Arguments", "type=", "input_value"):
        assert pydantic_text not in text, text
    error: dict[str, Any] = error_details(result)["error"]
    assert error["kind"] == "invalid_argument" and error["tool"] == tool and error["message"] == text
    assert argument in [entry["name"] for entry in error["arguments"]]
    return error


def a_valid_value(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    return {"string": "x", "integer": 1, "number": 1, "boolean": True, "array": ["x"]}.get(str(kind), "x")


async def test_every_argument_of_every_tool(make_settings: SettingsFactory, standin: StandIn) -> None:
    """For each listed tool and each of its arguments, a value of the wrong type gives the actionable error."""
    checked = 0
    async with Client(build_server(make_settings())) as client:
        for tool in (await client.list_tools()).tools:
            schema = tool.input_schema
            required = {name: a_valid_value(schema["properties"][name]) for name in schema.get("required", [])}
            for name, prop in schema["properties"].items():
                result = await client.call_tool(tool.name, {**required, name: WRONG[prop["type"]]})
                error = assert_actionable(result, tool.name, name)
                (entry,) = error["arguments"]
                assert entry["problem"].startswith("got ")
                checked += 1
    assert checked >= 30
    assert standin.requests == []


@pytest.mark.parametrize(
    ("tool", "arguments", "argument", "problem", "accepted"),
    [
        ("ask_openai", {}, "prompt", "missing (it is required)", "a non-empty string"),
        ("ask_claude", {"prompt": ""}, "prompt", "got an empty string; must have at least 1 character", None),
        (
            "ask_openai",
            {"prompt": "hi", "temperature": 5},
            "temperature",
            "got 5; must be less than or equal to 2",
            "a number from 0 to 2 (optional: leave it out)",
        ),
        ("ask_openai", {"prompt": "hi", "timeout_s": 0}, "timeout_s", "got 0; must be greater than 0", None),
        ("ask_claude", {"prompt": "hi", "max_tokens": 0}, "max_tokens", None, "an integer from 1 to 200,000"),
        ("ask_openai", {"prompt": "hi", "reasoning_effort": "max"}, "reasoning_effort", 'got "max"', "`high`"),
        ("ask_openai", {"prompt": "hi", "files": ["a.txt", ""]}, "files[1]", "got an empty string", None),
        ("ask_many", {"prompt": "hi", "targets": []}, "targets", "got a list of 0 items", "a list of 1 to 8 items"),
        ("extract_json", {"text": "t", "schema": 5}, "schema", "got 5", "an object or a string"),
        ("extract_json", {"text": "t", "schema": "{}", "max_attempts": 11}, "max_attempts", None, "1 to 10"),
        ("get_conversation", {"conversation_id": "x" * 65}, "conversation_id", "a string of 65 characters", None),
    ],
)
async def test_what_was_wrong_and_what_is_accepted(
    make_settings: SettingsFactory,
    standin: StandIn,
    tool: str,
    arguments: dict[str, Any],
    argument: str,
    problem: str | None,
    accepted: str | None,
) -> None:
    async with Client(build_server(make_settings())) as client:
        result = await client.call_tool(tool, arguments)
    error = assert_actionable(result, tool, argument)
    (entry,) = [entry for entry in error["arguments"] if entry["name"] == argument]
    assert problem is None or problem in entry["problem"], entry
    assert accepted is None or accepted in entry["accepted"], entry
    assert f"- `{argument}`: {entry['problem']}. Accepted: {entry['accepted']}." in text_of(result)
    assert standin.requests == []


async def test_several_wrong_arguments_are_all_named(make_settings: SettingsFactory) -> None:
    async with Client(build_server(make_settings())) as client:
        result = await client.call_tool("ask_openai", {"prompt": "", "temperature": "warm", "max_tokens": 1.5})
    error = assert_actionable(result, "ask_openai", "prompt")
    assert [entry["name"] for entry in error["arguments"]] == ["prompt", "max_tokens", "temperature"]
    assert text_of(result).startswith("Invalid arguments for `ask_openai`; nothing was done.")


async def test_a_long_or_secret_looking_value_is_not_echoed(make_settings: SettingsFactory) -> None:
    """A long string is described by its length; a short one shaped like a key is masked."""
    async with Client(build_server(make_settings())) as client:
        long = await client.call_tool("get_conversation", {"conversation_id": "c" * 5000})
        key = await client.call_tool("ask_openai", {"prompt": "hi", "temperature": "sk-proj-abcdefghij0123456789"})
    assert "c" * 100 not in text_of(long) and "a string of 5,000 characters" in text_of(long)
    assert "abcdefghij0123456789" not in text_of(key) + str(key.meta)
