"""What hosts see: tool toggles, flat input schemas for every tool, and the output cap on long answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import SettingsFactory, server_env, text_of
from helpers import run_server
from mcp import Client
from pydantic import BaseModel

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.render import answer_budgets
from mcp_llm_server.server import build_server
from mcp_llm_server.surface import flat_schema

pytestmark = pytest.mark.anyio

ALL_TOOLS = {"ask_openai", "ask_claude", "extract_json", "ask_many", "list_models"}


async def tool_names(settings: Any) -> set[str]:
    async with Client(build_server(settings)) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


# --- tool toggles ------------------------------------------------------------------------------------------


async def test_enabled_list_exposes_only_those_tools(make_settings: SettingsFactory, standin: StandIn) -> None:
    """MCP_LLM_TOOLS: tools/list shows exactly the named tools, and the others cannot be called."""
    settings = make_settings(tools="ask_claude")
    async with Client(build_server(settings)) as client:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        hidden = await client.call_tool("ask_openai", {"prompt": "hi"})
        shown = await client.call_tool("ask_claude", {"prompt": "hi"})
    assert listed == ["ask_claude"]
    assert hidden.is_error and "ask_openai" in text_of(hidden)
    assert not shown.is_error
    assert [r.api for r in standin.requests] == ["messages"]


async def test_disabled_list_hides_those_tools(make_settings: SettingsFactory) -> None:
    """MCP_LLM_DISABLED_TOOLS: tools/list shows every tool but the named ones (those added later included)."""
    everything = await tool_names(make_settings())
    assert everything >= ALL_TOOLS
    assert await tool_names(make_settings(disabled_tools="ask_many, extract_json")) == everything - {
        "ask_many",
        "extract_json",
    }
    assert await tool_names(make_settings(tools="", disabled_tools="")) == everything  # blank: not set


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MCP_LLM_TOOLS": "ask_openai,ask_gpt"}, "MCP_LLM_TOOLS: unknown tool ask_gpt (this server's tools: "),
        ({"MCP_LLM_DISABLED_TOOLS": "nope,list_providers"}, "MCP_LLM_DISABLED_TOOLS: unknown tools nope, "),
        ({"MCP_LLM_TOOLS": "ask_openai", "MCP_LLM_DISABLED_TOOLS": "ask_many"}, "not both"),
    ],
)
def test_bad_tool_toggle_exits_2(standin: StandIn, tmp_path: Path, env: dict[str, str], expected: str) -> None:
    """An unknown tool name (or both lists set) stops `python -m mcp_llm_server` with exit 2 and one stderr line."""
    proc = run_server(env=server_env(standin, **env), cwd=tmp_path)  # (cwd: no stray .env)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-llm-server: configuration error: ")
    assert expected in lines[0]


# --- flat input schemas ------------------------------------------------------------------------------------


def _keys_anywhere(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {key for value in node.values() for key in _keys_anywhere(value)}
    if isinstance(node, list):
        return {key for item in node for key in _keys_anywhere(item)}
    return set()


async def test_every_tool_input_schema_is_flat(client: Client) -> None:
    """Every listed tool's input schema is one object: no top-level anyOf/oneOf/allOf, no $ref/$defs anywhere."""
    tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} >= ALL_TOOLS
    for tool in tools:
        schema = tool.input_schema
        assert schema["type"] == "object", tool.name
        assert isinstance(schema.get("properties", {}), dict), tool.name
        assert not {"anyOf", "oneOf", "allOf", "not", "if", "$ref"} & set(schema), tool.name
        assert not {"$ref", "$defs", "definitions"} & _keys_anywhere(schema), tool.name
        for name, prop in schema.get("properties", {}).items():
            assert {"type": "null"} not in prop.get("anyOf", []), (tool.name, name)  # optional = not required
        model = schema.get("properties", {}).get("model")
        if model is not None:  # free text, never an enum of names that goes stale
            assert model["type"] == "string" and "enum" not in model, tool.name


class _Inner(BaseModel):
    a: int
    b: str | None = None


class _Args(BaseModel):
    inner: _Inner
    many: list[_Inner] | None = None
    label: str | None = None


def test_flat_schema_inlines_references() -> None:
    """A tool whose arguments nest models (as a later tool might) gets its $refs inlined and optionals plain."""
    schema = _Args.model_json_schema()
    assert "$defs" in schema
    flat = flat_schema(schema)
    assert not {"$ref", "$defs"} & _keys_anywhere(flat)
    props = flat["properties"]
    assert props["inner"]["properties"]["a"] == {"title": "A", "type": "integer"}
    assert props["many"]["type"] == "array" and props["many"]["items"]["required"] == ["a"]
    assert props["label"] == {"type": "string"}
    assert flat["required"] == ["inner"]


# --- the output cap ----------------------------------------------------------------------------------------


def _note_points_to_full_answer(note: str, structured: dict[str, Any]) -> None:
    conversation_id = structured.get("conversation_id")
    if conversation_id:  # the answer was saved: it is readable whole
        assert "get_conversation" in note and conversation_id in note
    else:
        assert "shorter answer" in note


async def test_long_answer_is_truncated_with_a_note(make_settings: SettingsFactory, standin: StandIn) -> None:
    """An answer over MCP_LLM_MAX_OUTPUT_CHARS is cut to it, with a note; the structured result says so."""
    answer = "".join(f"line {i:05d}\n" for i in range(300))  # 3,300 characters
    standin.script(Reply(text=answer), Reply(text="short"))
    async with Client(build_server(make_settings(max_output_chars=1_000))) as client:
        long = await client.call_tool("ask_openai", {"prompt": "hi"})
        short = await client.call_tool("ask_openai", {"prompt": "hi"})
    assert not long.is_error and long.structured_content is not None
    structured = long.structured_content
    assert (structured["truncated"], structured["omitted_chars"]) == (True, 2_300)
    assert structured["text"] == answer[:1_000]
    note = structured["truncation_note"]
    assert "2,300 of 3,300 characters cut" in note and "MCP_LLM_MAX_OUTPUT_CHARS = 1,000" in note
    _note_points_to_full_answer(note, structured)
    assert text_of(long) == f"{answer[:1_000]}\n\n{note}"
    assert short.structured_content is not None
    assert (short.structured_content["truncated"], short.structured_content["truncation_note"]) == (False, None)
    assert text_of(short) == "short"


async def test_fanout_answers_share_the_cap(make_settings: SettingsFactory, standin: StandIn) -> None:
    """ask_many: a short answer is kept whole and the long ones share the rest of the cap, each with its note."""
    standin.script_model("gpt-short", Reply(text="s" * 200))
    standin.script_model("gpt-long", Reply(text="l" * 5_000))
    standin.script_model("claude-long", Reply(text="c" * 3_000))
    targets = ["openai:gpt-short", "openai:gpt-long", "anthropic:claude-long"]
    async with Client(build_server(make_settings(max_output_chars=1_000))) as client:
        result = await client.call_tool("ask_many", {"prompt": "hi", "targets": targets})
    assert not result.is_error and result.structured_content is not None
    short, long, claude = result.structured_content["answers"]
    assert (short["text"], short["truncated"]) == ("s" * 200, False)
    assert (long["text"], long["omitted_chars"]) == ("l" * 400, 4_600)
    assert (claude["text"], claude["omitted_chars"]) == ("c" * 400, 2_600)
    text = text_of(result)
    for entry in (long, claude):
        assert entry["truncated"] and entry["truncation_note"] in text
        _note_points_to_full_answer(entry["truncation_note"], result.structured_content)
    assert "l" * 401 not in text and "c" * 401 not in text


def test_answer_budgets() -> None:
    """Budgets fit the cap: short answers whole, the rest shared equally; nothing cut when all fit."""
    assert answer_budgets([10, 20], 100) == [10, 20]
    assert answer_budgets([100, 10, 300], 110) == [50, 10, 50]
    assert answer_budgets([500], 100) == [100]
    assert sum(answer_budgets([7, 9_999, 123, 4_567], 1_000)) == 1_000
