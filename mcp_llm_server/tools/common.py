"""Helpers every tool uses: reaching the shared state, results, errors and progress."""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent

from ..progress import SendProgress
from ..state import AppState

__all__ = ["app_state", "error_result", "progress_sender", "success_result"]

logger = logging.getLogger(__name__)


def app_state(ctx: Context[AppState]) -> AppState:
    return ctx.request_context.lifespan_context


def success_result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


def error_result(state: AppState, message: str, structured: dict[str, Any] | None = None) -> CallToolResult:
    """An `isError` result; its text is what the host's model reads, so it says what happened and what to do."""
    message = state.redact(message)
    return CallToolResult(
        content=[TextContent(type="text", text=message)],
        structured_content=_redacted(state, structured) if structured is not None else None,
        is_error=True,
    )


def _redacted(state: AppState, value: Any) -> Any:
    """`value` with every string in it passed through the redactor (upstream error texts may echo a key)."""
    if isinstance(value, str):
        return state.redact(value)
    if isinstance(value, dict):
        return {key: _redacted(state, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(state, item) for item in value]
    return value


def _caller_listens(ctx: Context[AppState]) -> bool:
    request = ctx.request_context
    if request.meta and request.meta.get("progress_token") is not None:
        return True
    # The in-process dispatcher hands the caller's callback over directly, with no token in `meta`; the SDK
    # exposes neither, so look at its dispatch context (possibly wrapped). If its shape is unknown, assume
    # a listener: `report_progress` is a no-op without one, so that only costs the relay's work.
    outbound = getattr(request.session, "_request_outbound", None)
    known_shape = False
    while outbound is not None:
        for attribute in ("_on_progress", "_progress_token"):
            if hasattr(outbound, attribute):
                known_shape = True
                if getattr(outbound, attribute) is not None:
                    return True
        outbound = getattr(outbound, "_inner", None)
    return not known_shape


def progress_sender(ctx: Context[AppState]) -> SendProgress | None:
    """A function that sends one progress notification, or None when the caller asked for none."""
    if not _caller_listens(ctx):
        return None

    async def send(progress: float, message: str) -> None:
        try:
            await ctx.report_progress(progress, None, message)
        except Exception:  # a host that went away must not fail the call
            logger.debug("could not send a progress notification", exc_info=True)

    return send
