"""Every listed tool's input schema keeps to the subset that the model APIs hosts forward tool schemas to all accept:
OpenAI strict function calling (no `default`, every object closed), Gemini's `parameters` (an OpenAPI subset: no
`exclusiveMinimum`/`exclusiveMaximum`, one `type` a node, string enums) and Anthropic; defaults stay documented in the
descriptions. Checked on `tools/list` through the real MCP client, with every tool exposed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import SettingsFactory
from mcp import Client
from pydantic_core import PydanticUndefined

from mcp_llm_server.server import build_server

pytestmark = pytest.mark.anyio

# The keywords every one of those APIs understands.
COMMON_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "anyOf",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
}
TYPES = {"object", "array", "string", "number", "integer", "boolean"}


def nodes(schema: dict[str, Any], path: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties, items and anyOf branches, recursively)."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from nodes(prop, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    for index, branch in enumerate(schema.get("anyOf", [])):
        yield from nodes(branch, f"{path}|{index}")


def problems(schema: dict[str, Any]) -> list[str]:
    found = []
    if schema.get("type") != "object" or "anyOf" in schema:
        found.append("$: the root must be a plain object")
    for path, node in nodes(schema):
        extra = set(node) - COMMON_KEYWORDS
        if extra:
            found.append(f"{path}: keywords outside the common subset: {sorted(extra)}")
        if "anyOf" not in node and node.get("type") not in TYPES:
            found.append(f"{path}: `type` must be one of {sorted(TYPES)}, not {node.get('type')!r}")
        if node.get("type") == "object":
            if node.get("additionalProperties") is not False:
                found.append(f"{path}: an object must be closed (additionalProperties: false)")
            if not isinstance(node.get("properties"), dict):
                found.append(f"{path}: an object must list its properties")
            if not set(node.get("required", [])) <= set(node.get("properties", {})):
                found.append(f"{path}: `required` names a property it does not list")
        if "enum" in node and (node.get("type") != "string" or not all(isinstance(v, str) for v in node["enum"])):
            found.append(f"{path}: enums must be of strings")
        if not node.get("description") and path.count(".") == 1 and not {"[", "|"} & set(path):
            found.append(f"{path}: an argument needs a description")
    return found


async def listed_tools(make_settings: SettingsFactory) -> dict[str, dict[str, Any]]:
    async with Client(build_server(make_settings())) as client:
        return {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}


async def test_every_input_schema_keeps_to_the_common_subset(make_settings: SettingsFactory) -> None:
    tools = await listed_tools(make_settings)
    assert set(tools) >= {"ask_openai", "ask_claude", "ask_many", "extract_json", "list_models", "usage_report"}
    found = {name: problems(schema) for name, schema in tools.items()}
    assert {name: issues for name, issues in found.items() if issues} == {}, json.dumps(found, indent=1)


async def test_defaults_are_documented_in_descriptions(make_settings: SettingsFactory) -> None:
    """An argument with a default value (not the "omit it" None) names that value in its description."""
    server = build_server(make_settings())
    listed = await listed_tools(make_settings)
    checked = 0
    for tool in server._tool_manager.list_tools():
        for name, field in tool.fn_metadata.arg_model.model_fields.items():
            if field.default is PydanticUndefined or field.default is None:
                continue
            description = listed[tool.name]["properties"][name]["description"]
            assert f"Default: {json.dumps(field.default)}." in description, (tool.name, name)
            checked += 1
    assert checked >= 3  # list_models.refresh, list_conversations.limit, extract_json.max_attempts


async def test_exclusive_bounds_are_described(make_settings: SettingsFactory) -> None:
    """`timeout_s` must be more than 0: shown as minimum 0 plus the words, and 0 is still refused."""
    timeout = (await listed_tools(make_settings))["ask_openai"]["properties"]["timeout_s"]
    assert timeout["minimum"] == 0 and "Must be more than 0." in timeout["description"]
    async with Client(build_server(make_settings())) as client:
        result = await client.call_tool("ask_openai", {"prompt": "hi", "timeout_s": 0})
    assert result.is_error


async def test_free_form_object_is_offered_as_a_json_string(make_settings: SettingsFactory) -> None:
    """`extract_json`'s `schema` is shown as a string (an open object has no strict form); an object still works."""
    schema = (await listed_tools(make_settings))["extract_json"]["properties"]["schema"]
    assert schema["type"] == "string" and "anyOf" not in schema
    assert "JSON string (an object is accepted too)" in schema["description"]
