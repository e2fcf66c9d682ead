"""What hosts see of the tools: which tools are exposed, and input schemas every host accepts.

Applied by `build_server` after every tool is registered, so it covers tools added later without their
involvement:

- `MCP_LLM_TOOLS` (the tools to expose) or `MCP_LLM_DISABLED_TOOLS` (the ones to hide), comma-separated. A
  name the server does not have stops it at start (`SettingsError` naming the variable).
- Every input schema is made one flat object: `$ref`s are inlined and `$defs` dropped (some hosts reject
  them), an optional argument's `anyOf: [X, {"type": "null"}]` becomes X (it is optional because it is not
  `required`; a `null` sent all the same is still accepted, as before), and the titles pydantic derives from
  names are dropped. Only what hosts are shown changes: arguments are validated by the tool's own model.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer

from .settings import Settings, SettingsError

__all__ = ["apply_tool_toggles", "flat_schema", "flatten_input_schemas"]

_NULL = {"type": "null"}


def apply_tool_toggles(server: MCPServer, settings: Settings) -> None:
    """Remove the tools the settings do not expose; unknown names raise `SettingsError`."""
    names = [tool.name for tool in server._tool_manager.list_tools()]
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
    for tool in server._tool_manager.list_tools():
        tool.parameters = flat_schema(tool.parameters)


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
