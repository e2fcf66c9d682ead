"""The roots the MCP client offers, as directories `files` may be read from when MCP_LLM_FILE_ROOTS is unset.

A tool takes them as a parameter `client_roots: ClientRoots`: the SDK fills it by running `offered_roots` before
the tool body and never shows it in the tool's input schema. On 2026-07-28 connections (no server-to-client
requests) the SDK answers the call with an `InputRequiredResult` asking `roots/list`, and the client calls again
with its roots; on older connections `roots/list` is sent mid-call, with a bounded wait. The roots are asked only
when the call names files, no roots are configured, the client declares the `roots` capability, and the client is
local: over HTTP a client's roots name directories on its own machine, and a remote client must not open the
server's file system by offering `/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

import anyio
from mcp import MCPError
from mcp.server.mcpserver import Context, ListRoots, Resolve
from mcp.shared.message import ServerMessageMetadata
from mcp.types import ListRootsRequest, ListRootsResult
from mcp_types.version import is_version_at_least

from .state import AppState

__all__ = ["ROOTS_WAIT_S", "ClientRoots", "offered_roots", "root_paths"]

logger = logging.getLogger(__name__)

ROOTS_WAIT_S = 5.0  # how long an older client gets to answer roots/list mid-call
_NO_ROOTS = ListRootsResult(roots=[])


def _wants_roots(ctx: Context[AppState], files: list[str] | None) -> bool:
    if not files or ctx.headers is not None:  # nothing to read, or a client over HTTP
        return False
    state: AppState = ctx.request_context.lifespan_context
    if state.file_limits.roots:  # the operator's roots decide
        return False
    capabilities = ctx.client_capabilities
    return capabilities is not None and capabilities.roots is not None


async def offered_roots(ctx: Context[AppState], files: list[str] | None = None) -> ListRootsResult | ListRoots:
    """The resolver behind `ClientRoots`: the client's roots, or none (never an error, never an unbounded wait)."""
    if not _wants_roots(ctx, files):
        return _NO_ROOTS
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, "2026-07-28"):
        return ListRoots()  # no server-to-client requests: the SDK asks through an InputRequiredResult
    if not ctx.session.can_send_request:
        return _NO_ROOTS
    request = ListRootsRequest()
    metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
    with anyio.move_on_after(ROOTS_WAIT_S):
        try:
            result: ListRootsResult = await ctx.session.send_request(request, ListRootsResult, metadata=metadata)
            return result
        except MCPError as exc:
            logger.info("the client did not list its roots: %s", exc)
            return _NO_ROOTS
    logger.info("the client did not list its roots within %.0f s", ROOTS_WAIT_S)
    return _NO_ROOTS


ClientRoots = Annotated[ListRootsResult, Resolve(offered_roots)]


def root_paths(result: ListRootsResult) -> tuple[Path, ...]:
    """The local directories among the offered roots (`file://` URIs on this host), in the client's order."""
    paths = []
    for root in result.roots:
        parts = urlsplit(str(root.uri))
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            continue
        path = Path(unquote(parts.path))
        if path.is_absolute() and "\x00" not in str(path):
            paths.append(path)
    return tuple(paths)
