"""The one place the server reads the MCP SDK's private request context: fails loudly when the SDK changes it."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SettingsFactory
from mcp import Client
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from mcp_llm_server import sdk_adapter

pytestmark = pytest.mark.anyio


def _probe_server() -> tuple[MCPServer, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    server = MCPServer("probe")

    @server.tool()
    async def probe(ctx: Context[Any]) -> str:
        outbound = getattr(ctx.request_context.session, "_request_outbound", None)
        seen.append(
            {
                "listens": sdk_adapter.caller_listens(ctx),
                "known_shape": sdk_adapter._outbound_shape(ctx) is not None,
                "has_outbound": outbound is not None,
            }
        )
        return "ok"

    return server, seen


async def test_in_memory_progress_listener_is_detected_through_the_sdk_internals() -> None:
    """With a progress callback the in-process dispatcher's context says so; without one it says not. If the SDK
    renames `_request_outbound` or the attributes in OUTBOUND_PROGRESS_ATTRIBUTES, this fails (and the server would
    fall back to relaying progress to nobody)."""
    server, seen = _probe_server()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        pass

    async with Client(server, raise_exceptions=True) as client:
        await client.call_tool("probe", {}, progress_callback=on_progress)
        await client.call_tool("probe", {})
    assert seen[0] == {"listens": True, "known_shape": True, "has_outbound": True}
    assert seen[1] == {"listens": False, "known_shape": True, "has_outbound": True}


async def test_caller_of_in_memory_is_stdio(make_settings: SettingsFactory) -> None:
    """No HTTP request behind an in-memory or stdio call: the caller is `stdio` (the ledger's caller column)."""
    server, _ = _probe_server()
    calls: list[str] = []

    @server.tool()
    async def who(ctx: Context[Any]) -> str:
        calls.append("stdio" if getattr(ctx.request_context, "request", None) is None else "http")
        return "ok"

    async with Client(server, raise_exceptions=True) as client:
        await client.call_tool("who", {})
    assert calls == ["stdio"]


def test_the_server_internals_the_adapter_reads_are_there() -> None:
    """`MCPServer`'s tool manager, low-level server and default prompts/get handler, which the server uses to rewrite
    input schemas, add request handlers and serve stdio on its own stdin."""
    server = MCPServer("probe")

    @server.tool()
    def echo(text: str) -> str:
        return text

    tools = sdk_adapter.registered_tools(server)
    assert [tool.name for tool in tools] == ["echo"] and isinstance(tools[0].parameters, dict)
    lowlevel = sdk_adapter.lowlevel_server(server)
    for method in ("add_request_handler", "run", "create_initialization_options"):
        assert callable(getattr(lowlevel, method)), method
    assert callable(sdk_adapter.default_get_prompt(server))
