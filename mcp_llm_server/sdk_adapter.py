"""Everything this server reads from the MCP SDK beyond its public API, in one place.

- Whether the caller listens for progress. Over stdio and HTTP the request carries a progress token
  (`meta["progress_token"]`); the SDK's in-process dispatcher hands the caller's callback over directly and exposes it
  nowhere public, so `caller_listens` looks at its private dispatch context.
- `MCPServer`'s registered tools (their input schemas are rewritten, some removed), its low-level server (extra
  request handlers, serving stdio on our own stdin) and its default `prompts/get` handler.

tests/test_sdk_adapter.py fails loudly when any of these shapes changes.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context

from .callers import CALLER_SCOPE_KEY, LOCAL, Caller
from .progress import SendProgress
from .state import AppState

__all__ = [
    "OUTBOUND_PROGRESS_ATTRIBUTES",
    "app_state",
    "caller_identity",
    "caller_listens",
    "caller_of",
    "default_get_prompt",
    "lowlevel_server",
    "progress_sender",
    "registered_tools",
]

logger = logging.getLogger(__name__)

# The private attributes of the SDK's outbound request context (and its wrappers, via `_inner`) that say whether
# the caller passed a progress callback or token.
OUTBOUND_PROGRESS_ATTRIBUTES = ("_on_progress", "_progress_token")


def app_state(ctx: Context[AppState]) -> AppState:
    return ctx.request_context.lifespan_context


def caller_identity(ctx: Context[AppState]) -> Caller:
    """Who is calling (see `callers`): the local user over stdio; over HTTP the identity the gate authenticated."""
    request = getattr(ctx.request_context, "request", None)
    if request is None:
        return LOCAL
    settings = app_state(ctx).settings
    scope: dict[str, Any] = getattr(request, "scope", {})
    caller_id = scope.get(CALLER_SCOPE_KEY) or ("http:token" if settings.http_token is not None else "http:open")
    return Caller(caller_id, sees_all=not settings.callers_told_apart or caller_id == settings.admin_caller)


def caller_of(ctx: Context[AppState]) -> str:
    """The caller's id, recorded with what the call makes."""
    return caller_identity(ctx).id


def _outbound_shape(ctx: Context[AppState]) -> bool | None:
    """Whether the in-process dispatcher says the caller listens; None when its context has an unknown shape."""
    outbound: Any = getattr(ctx.request_context.session, "_request_outbound", None)
    known_shape = False
    while outbound is not None:
        for attribute in OUTBOUND_PROGRESS_ATTRIBUTES:
            if hasattr(outbound, attribute):
                known_shape = True
                if getattr(outbound, attribute) is not None:
                    return True
        outbound = getattr(outbound, "_inner", None)
    return False if known_shape else None


def caller_listens(ctx: Context[AppState]) -> bool:
    """Whether the caller asked for progress. An unknown SDK shape counts as yes: `report_progress` is a no-op
    without a listener, so that only costs the relay's work."""
    request = ctx.request_context
    if request.meta and request.meta.get("progress_token") is not None:
        return True
    listens = _outbound_shape(ctx)
    return True if listens is None else listens


def progress_sender(ctx: Context[AppState]) -> SendProgress | None:
    """A function that sends one progress notification, or None when the caller asked for none."""
    if not caller_listens(ctx):
        return None

    async def send(progress: float, message: str) -> None:
        try:
            await ctx.report_progress(progress, None, message)
        except Exception:  # a host that went away must not fail the call
            logger.debug("could not send a progress notification", exc_info=True)

    return send


def registered_tools(server: MCPServer) -> list[Any]:
    """The tools registered on `server` (the SDK's `Tool` objects, whose `parameters` is the input schema)."""
    return list(server._tool_manager.list_tools())


def lowlevel_server(server: MCPServer) -> Any:
    """The low-level server under `server`: `add_request_handler`, `run`, `create_initialization_options`."""
    return server._lowlevel_server


def default_get_prompt(server: MCPServer) -> Any:
    """`MCPServer`'s own `prompts/get` handler, `(ctx, params) -> GetPromptResult`."""
    return server._handle_get_prompt
