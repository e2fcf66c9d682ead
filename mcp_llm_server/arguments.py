"""Arguments that break a tool's input schema, reported in words a host's model can act on.

The SDK reports them as pydantic's text (`1 validation error for ask_openaiArguments … For further information
visit https://errors.pydantic.dev/…`). `argument_error` turns the `ValidationError` into an `isError` result that
names each wrong argument, what was wrong with it and what is accepted; `build_server` applies it to every tool
(see `server.py`), before any model call.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from mcp.types import CallToolResult, TextContent
from pydantic import ValidationError

from .redact import Redactor
from .render import ERROR_META_KEY
from .surface import flat_schema

__all__ = ["ArgumentProblem", "argument_error", "argument_problems"]

# pydantic's phrasing ("Input should be less than or equal to 2") as a rule for the argument ("must be ...").
_PHRASES = (
    ("Input should be ", "must be "),
    ("String should ", "must "),
    ("List should ", "must "),
    ("Dictionary should ", "must "),
    ("Value error, ", ""),
)
_BOUNDS = (
    ("minimum", "at least"),
    ("exclusiveMinimum", "more than"),
    ("maximum", "at most"),
    ("exclusiveMaximum", "less than"),
)
_SHOWN_CHARS = 40  # a string argument longer than this is described by its length, not quoted


@dataclass(frozen=True, slots=True)
class ArgumentProblem:
    name: str  # the argument, with the index of a list item: `files[1]`
    problem: str  # what was wrong: "got 5; must be less than or equal to 2"
    accepted: str  # what the argument takes: "a number from 0 to 2 (optional)"


def argument_error(tool: str, error: ValidationError, schema: dict[str, Any]) -> CallToolResult:
    """The `isError` result for arguments of `tool` that failed validation against its (pydantic) `schema`."""
    problems = argument_problems(error, schema)
    lines = [f"- `{p.name}`: {p.problem}. Accepted: {p.accepted}." for p in problems]
    which = "argument" if len(problems) == 1 else "arguments"
    message = f"Invalid {which} for `{tool}`; nothing was done. Fix and call again:\n" + "\n".join(lines)
    details = {
        "error": {
            "kind": "invalid_argument",
            "tool": tool,
            "message": message,
            "arguments": [asdict(p) for p in problems],
        }
    }
    return CallToolResult(
        content=[TextContent(type="text", text=message)], _meta={ERROR_META_KEY: details}, is_error=True
    )


def argument_problems(error: ValidationError, schema: dict[str, Any]) -> list[ArgumentProblem]:
    """One entry per wrong argument (a union's several complaints about one value become one), in order."""
    flat = flat_schema(schema)
    grouped: dict[str, list[dict[str, Any]]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for err in error.errors(include_url=False):
        name, node = _locate(err["loc"], flat)
        grouped.setdefault(name, []).append(dict(err))
        nodes[name] = node
    problems = []
    for name, errs in grouped.items():
        required = "." not in name and "[" not in name and name in flat.get("required", [])
        accepted = _accepted(nodes[name]) + ("" if required or "[" in name else " (optional: leave it out)")
        problems.append(ArgumentProblem(name, _problem(errs), accepted))
    return problems


def _locate(loc: tuple[int | str, ...], schema: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The argument's display name and its schema node; loc parts that name a union's member are skipped."""
    name, node = "", schema
    for part in loc:
        if isinstance(part, int) and isinstance(node.get("items"), dict):
            name, node = f"{name}[{part}]", node["items"]
        elif isinstance(part, str) and part in node.get("properties", {}):
            name, node = f"{name}.{part}" if name else part, node["properties"][part]
    return name or "arguments", node


def _problem(errs: list[dict[str, Any]]) -> str:
    first = errs[0]
    if first["type"] == "missing":
        return "missing (it is required)"
    got = f"got {_shown(first['input'])}"
    if len(errs) > 1:  # every member of a union refused the value: the accepted forms say it all
        return got
    message = first["msg"].replace(" after validation", "")
    for prefix, verb in _PHRASES:
        if message.startswith(prefix):
            message = verb + message.removeprefix(prefix)
            break
    return f"{got}; {message}"


def _shown(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if value == "":
            return "an empty string"
        if len(value) <= _SHOWN_CHARS:
            return Redactor.shapes(json.dumps(value))
        return f"a string of {len(value):,} characters"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _accepted(node: dict[str, Any]) -> str:
    """What a schema node accepts, in words."""
    if isinstance(node.get("anyOf"), list):
        return " or ".join(_accepted(branch) for branch in node["anyOf"] if branch.get("type") != "null")
    if "enum" in node:
        return "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    kind = node.get("type")
    if kind in ("integer", "number"):
        return _numeric(node, "an integer" if kind == "integer" else "a number")
    if kind == "string":
        return _sized("a string", node, "minLength", "maxLength", "character")
    if kind == "array":
        items = node.get("items")
        each = f", each {_accepted(items)}" if isinstance(items, dict) and items else ""
        return _sized("a list", node, "minItems", "maxItems", "item") + each
    if kind == "boolean":
        return "true or false"
    if kind == "object":
        return "an object"
    return "a JSON value"


def _numeric(node: dict[str, Any], noun: str) -> str:
    if "minimum" in node and "maximum" in node:
        return f"{noun} from {_number(node['minimum'])} to {_number(node['maximum'])}"
    bounds = [f"{words} {_number(node[key])}" for key, words in _BOUNDS if key in node]
    return f"{noun} {' and '.join(bounds)}" if bounds else noun


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _sized(noun: str, node: dict[str, Any], low_key: str, high_key: str, unit: str) -> str:
    low, high = node.get(low_key), node.get(high_key)
    if low == 1 and high is None:
        return f"a non-empty {noun.removeprefix('a ')}"
    if low is not None and high is not None:
        return f"{noun} of {low} to {high:,} {unit}s"
    if high is not None:
        return f"{noun} of at most {high:,} {unit}{'s' if high != 1 else ''}"
    if low is not None:
        return f"{noun} of at least {low:,} {unit}{'s' if low != 1 else ''}"
    return noun
