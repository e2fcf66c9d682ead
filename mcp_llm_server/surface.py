"""What hosts see of the tools: which tools are exposed, and input schemas every host accepts.

Applied by `build_server` after every tool is registered, so it covers tools added later without their
involvement:

- `MCP_LLM_TOOLS` (the tools to expose) or `MCP_LLM_DISABLED_TOOLS` (the ones to hide), comma-separated. A
  name the server does not have stops it at start (`SettingsError` naming the variable).
- Every input schema is made one flat object: `$ref`s are inlined and `$defs` dropped (some hosts reject
  them), an optional argument's `anyOf: [X, {"type": "null"}]` becomes X (it is optional because it is not
  `required`; a `null` sent all the same is still accepted, as before), and the titles pydantic derives from
  names are dropped.
- Every input schema keeps to the subset the model APIs hosts forward tool schemas to all accept (OpenAI strict
  function calling, Gemini's `parameters`, Anthropic): no `default` (the value is said in the description
  instead), `exclusiveMinimum`/`exclusiveMaximum` become `minimum`/`maximum` (the description says "more
  than"), every object is closed (`additionalProperties: false`), and a free-form object offered beside
  another form (`extract_json`'s `schema`: an object or a JSON string) is shown in that other form only.

Only what hosts are shown changes: arguments are validated by the tool's own model, which accepts all it did.
"""

from __future__ import annotations

import json
from typing import Any

from mcp.server import MCPServer

from .sdk_adapter import registered_tools
from .settings import Settings, SettingsError

__all__ = ["apply_tool_toggles", "flat_schema", "flatten_input_schemas", "portable_schema"]

_NULL = {"type": "null"}


def apply_tool_toggles(server: MCPServer, settings: Settings) -> None:
    """Remove the tools the settings do not expose; unknown names raise `SettingsError`."""
    names = [tool.name for tool in registered_tools(server)]
    if settings.tools is not None:
        variable, chosen = "MCP_LLM_TOOLS", settings.tools
    else:
        variable, chosen = "MCP_LLM_DISABLED_TOOLS", settings.disabled_tools
    unknown = [name for name in chosen if name not in names]
    if unknown:
        which = "unknown tool" + ("s" if len(unknown) > 1 else "")
        raise SettingsError(f"{variable}: {which} {', '.join(unknown)} (this server's tools: {', '.join(names)})")
    hidden = [name for name in names if name not in chosen] if settings.tools is not None else list(chosen)
    for name in hidden:
        server.remove_tool(name)


def flatten_input_schemas(server: MCPServer) -> None:
    for tool in registered_tools(server):
        tool.parameters = portable_schema(flat_schema(tool.parameters))


def portable_schema(node: dict[str, Any]) -> dict[str, Any]:
    """`node` (a flat schema) within the subset every function-calling API accepts; see the module's docstring."""
    node = dict(node)
    notes: list[str] = []
    if "default" in node:
        notes.append(f"Default: {json.dumps(node.pop('default'))}.")
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if exclusive in node:
            bound = node.pop(exclusive)
            node.setdefault(inclusive, bound)
            notes.append(f"Must be {'more' if inclusive == 'minimum' else 'less'} than {bound:g}.")
    if notes:
        node["description"] = " ".join([node["description"], *notes] if node.get("description") else notes)
    if isinstance(node.get("properties"), dict):
        node["properties"] = {name: portable_schema(prop) for name, prop in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = portable_schema(node["items"])
    if isinstance(node.get("anyOf"), list):
        node = _without_free_form_branches(node)
    if node.get("type") == "object" and not _free_form(node):
        node["additionalProperties"] = False
        node.setdefault("properties", {})
    return node


def _free_form(node: dict[str, Any]) -> bool:
    """An object whose keys are not listed (any object, or a map): no closed form describes it."""
    return node.get("type") == "object" and "properties" not in node and node.get("additionalProperties") is not False


def _without_free_form_branches(node: dict[str, Any]) -> dict[str, Any]:
    branches = [portable_schema(branch) for branch in node["anyOf"]]
    kept = [branch for branch in branches if not _free_form(branch)] or branches
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    return {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def flat_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$ref`s inlined, no `$defs`, optional (nullable) arguments as their plain type, and no
    derived titles."""
    defs = schema.get("$defs", {})
    flat: dict[str, Any] = _inline(schema, defs, ())
    flat.pop("$defs", None)
    flat.pop("title", None)
    for name, prop in flat.get("properties", {}).items():
        if isinstance(prop, dict):
            flat["properties"][name] = _plain_optional(prop, name)
    return flat


def _inline(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in seen or name not in defs:
            raise ValueError(f"cannot inline `{ref}` (recursive or missing)")
        target = _inline(defs[name], defs, (*seen, name))
        rest = {key: _inline(value, defs, seen) for key, value in node.items() if key != "$ref"}
        return {**target, **rest}
    return {key: _inline(value, defs, seen) for key, value in node.items() if key != "$defs"}


def _plain_optional(prop: dict[str, Any], name: str) -> dict[str, Any]:
    branches = prop.get("anyOf")
    if isinstance(branches, list) and len(branches) == 2 and _NULL in branches:
        (kept,) = [branch for branch in branches if branch != _NULL]
        prop = {**kept, **{key: value for key, value in prop.items() if key != "anyOf"}}
        if "default" in prop and prop["default"] is None:  # not sending it is the way to leave it out
            del prop["default"]
    if prop.get("title") == name.replace("_", " ").title():
        prop = {key: value for key, value in prop.items() if key != "title"}
    return prop
