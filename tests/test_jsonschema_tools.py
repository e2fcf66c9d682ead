"""The pure schema helpers behind `extract_json`: checking, wrapping, the strict form, finding and validating JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from mcp_llm_server.jsonschema_tools import (
    WRAP_KEY,
    CheckedSchema,
    SchemaProblem,
    check_schema,
    closed_objects,
    json_candidates,
    json_depth,
    strictify,
    wrap_schema,
)

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Full name"},
        "age": {"type": "integer", "minimum": 0},
        "role": {"enum": ["admin", "user"]},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
}


def checked(schema: object) -> CheckedSchema:
    return check_schema(schema, max_bytes=65_536, max_depth=32)


# --- checking ---------------------------------------------------------------------------------------------


def test_schema_string_is_parsed() -> None:
    """A schema sent as a JSON string is parsed like the object."""
    assert checked(json.dumps(PERSON)).schema == PERSON


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON Schema object"),
        ({"type": "strin"}, "$.type"),
        ({"type": "string", "pattern": "(("}, "regex"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "points to nothing"),
        ({"$ref": "https://example.com/schema.json"}, "only local references"),
        ({"$schema": "https://example.com/my-dialect", "type": "string"}, "Unknown `$schema`"),
        ({"type": "object", "required": "name"}, "not a valid JSON Schema"),
    ],
)
def test_invalid_schemas_are_refused(schema: object, words: str) -> None:
    """Malformed, metaschema-invalid, dangling or remote-referencing schemas raise a SchemaProblem naming why."""
    with pytest.raises(SchemaProblem, match=None) as caught:
        checked(schema)
    assert words in str(caught.value)


def test_size_and_depth_limits() -> None:
    """A schema over the byte or depth cap is refused with the setting's name."""
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(20):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaProblem, match="MCP_LLM_EXTRACT_MAX_SCHEMA_DEPTH"):
        check_schema(deep, max_bytes=65_536, max_depth=16)
    big = {"type": "string", "description": "x" * 2000}
    with pytest.raises(SchemaProblem, match="MCP_LLM_EXTRACT_MAX_SCHEMA_BYTES"):
        check_schema(big, max_bytes=1000, max_depth=32)


def test_json_depth() -> None:
    """Depth counts nested containers only, and needs no recursion."""
    assert json_depth(3) == 0
    assert json_depth({"a": [1, {"b": []}]}) == 4
    nested: list[Any] = []
    for _ in range(5000):
        nested = [nested]
    assert json_depth(nested) == 5001


def test_draft7_schema_is_honoured() -> None:
    """`$schema` picks the draft: draft 7's tuple `items` validates positions."""
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [{"type": "integer"}]}
    result = checked(schema)
    assert result.issues([1, "x"]) == []
    assert [i.path for i in result.issues(["x"])] == ["$[0]"]


# --- shapes for providers ---------------------------------------------------------------------------------


def test_object_root_is_sent_as_is() -> None:
    """An object schema is not wrapped; `$schema` is left out."""
    assert wrap_schema({"$schema": "https://json-schema.org/draft/2020-12/schema", **PERSON}) == PERSON


def test_non_object_root_is_wrapped_with_its_defs() -> None:
    """An array root becomes {"data": ...}, with root `$defs` moved up so references still resolve."""
    schema = {"type": "array", "items": {"$ref": "#/$defs/Item"}, "$defs": {"Item": {"type": "string"}}}
    wrapped = wrap_schema(schema)
    assert wrapped["properties"]["data"] == {"type": "array", "items": {"$ref": "#/$defs/Item"}}
    assert wrapped["$defs"] == {"Item": {"type": "string"}}
    assert wrapped["required"] == ["data"] and wrapped["additionalProperties"] is False


def test_strictify_closes_objects_and_nulls_optional_properties() -> None:
    """Strict form: additionalProperties false, all properties required, optional ones nullable, defaults dropped."""
    schema = {**PERSON, "properties": {**PERSON["properties"], "nick": {"type": "string", "default": "x"}}}
    strict = strictify(schema)
    assert strict is not None
    assert strict["additionalProperties"] is False
    assert strict["required"] == ["name", "age", "role", "tags", "nick"]
    assert strict["properties"]["name"] == {"type": "string", "description": "Full name"}
    assert strict["properties"]["age"] == {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}
    assert strict["properties"]["nick"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}


def test_strictify_nested_and_refs() -> None:
    """Nested objects and `$defs` are made strict too; an optional property that admits null stays as it is."""
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/A"}, "b": {"type": ["string", "null"]}},
        "$defs": {"A": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
    }
    strict = strictify(schema)
    assert strict is not None
    assert strict["$defs"]["A"] == {
        "type": "object",
        "properties": {"x": {"type": "number"}},
        "required": ["x"],
        "additionalProperties": False,
    }
    assert strict["properties"]["a"] == {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}
    assert strict["properties"]["b"] == {"type": ["string", "null"]}


@pytest.mark.parametrize(
    "part",
    [
        {"type": "string", "minLength": 2},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": "object"},
        {"type": "array"},
        {},
        {"type": "string", "format": "iri"},
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
    ],
)
def test_strictify_falls_back_on_unsupported_parts(part: dict[str, Any]) -> None:
    """A keyword or shape strict mode cannot express anywhere in the schema means no strict form."""
    assert strictify({"type": "object", "properties": {"p": part}}) is None


def test_strictify_needs_an_object_root() -> None:
    """Strict mode wants an object root, and required names must be declared properties."""
    assert strictify({"type": "array", "items": {"type": "string"}}) is None
    assert strictify({"type": "object", "properties": {}, "required": ["x"]}) is None


def test_closed_objects() -> None:
    """Maps, pattern properties and free-form objects cannot be closed; declared properties can."""
    assert closed_objects(PERSON)
    assert closed_objects({"type": "object", "additionalProperties": False})
    assert not closed_objects({"type": "object", "additionalProperties": {"type": "integer"}})
    assert not closed_objects({"type": "object", "properties": {"m": {"type": "object"}}})


# --- finding JSON in text ---------------------------------------------------------------------------------


def test_candidates_plain_fenced_and_prose() -> None:
    """The whole text, then fences, then values inside prose are found; NaN is not JSON."""
    assert json_candidates(' {"a": 1} ')[0] == [{"a": 1}]
    assert json_candidates('Here:\n```json\n{"a": 1}\n```\nDone.')[0][0] == {"a": 1}
    values, error = json_candidates('The result is {"a": [1, 2]} and also [3] (see {oops}).')
    assert values == [{"a": [1, 2]}, [3]]
    assert error is not None
    assert json_candidates("NaN")[0] == []


def test_extract_picks_the_first_valid_candidate() -> None:
    """An invalid value earlier in the prose does not hide a valid one later."""
    result = checked(PERSON).extract('Example: {"age": 1}. Answer: {"name": "Ann", "age": 30}')
    assert result.ok and result.value == {"name": "Ann", "age": 30}


def test_extract_reports_paths() -> None:
    """Validation errors carry JSON paths, nested ones included."""
    schema = {
        "type": "object",
        "properties": {"people": {"type": "array", "items": PERSON}},
        "required": ["people"],
    }
    result = checked(schema).extract('{"people": [{"name": "A"}, {"name": 3, "age": -1}]}')
    assert not result.ok
    assert {(i.path, i.message) for i in result.issues} == {
        ("$.people[1].name", '3 is not of type "string"'),
        ("$.people[1].age", "-1 is less than the minimum of 0"),
    }


def test_extract_not_json() -> None:
    """Text without JSON gives a parse error and no issues."""
    result = checked(PERSON).extract("I could not find anything.")
    assert not result.ok and result.parse_error and result.issues == []


def test_extract_unwraps_data_for_non_object_schemas() -> None:
    """For a wrapped schema, {"data": value} and the bare value are both accepted."""
    schema = checked({"type": "array", "items": {"type": "integer"}})
    assert schema.extract('{"data": [1, 2]}').value == [1, 2]
    assert schema.extract("[3]").value == [3]
    assert not schema.extract('{"data": ["x"]}').ok


def test_extract_drops_nulls_of_optional_properties() -> None:
    """A null in an optional property whose schema rejects null (strict mode's habit) is dropped, nested too."""
    schema = checked(
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"$ref": "#/$defs/B"}, "c": {"type": ["string", "null"]}},
            "required": ["a"],
            "$defs": {"B": {"type": "object", "properties": {"x": {"type": "string"}}}},
        }
    )
    assert schema.extract('{"a": 1, "b": {"x": null}, "c": null}').value == {"a": 1, "b": {}, "c": None}
    assert not schema.extract('{"a": null}').ok


def test_format_is_checked() -> None:
    """`format` is asserted for the formats the validator knows (email, date...)."""
    schema = checked({"type": "object", "properties": {"when": {"type": "string", "format": "date"}}})
    assert schema.extract('{"when": "2026-02-30"}').issues[0].path == "$.when"
    assert schema.extract('{"when": "2026-02-28"}').ok


def test_tool_wraps_with_the_same_key() -> None:
    """The tool (which imports this module lazily) wraps non-object values under the same key."""
    from mcp_llm_server.tools import extract

    assert extract._WRAP_KEY == WRAP_KEY


def test_server_start_does_not_import_jsonschema() -> None:
    """`jsonschema` loads on the first `extract_json` call, not when the server starts (start-up speed)."""
    code = "import sys, mcp_llm_server.server; assert 'jsonschema' not in sys.modules, 'imported at start'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
