"""Builds the MCP server: its lifespan, its tools and the protocol handlers MCPServer lacks."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import mcp.types as types
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from . import __version__
from .arguments import argument_error
from .logs import MCP_TO_PYTHON_LEVEL
from .sdk_adapter import default_get_prompt, lowlevel_server, registered_tools
from .settings import Settings
from .state import AppState, app_lifespan
from .surface import apply_tool_toggles, flatten_input_schemas
from .tools.answers import register_answer_tools
from .tools.ask import register_ask_tools
from .tools.catalog import register_catalog
from .tools.conversations import register_conversation_tools
from .tools.extract import register_extract_tool
from .tools.fanout import register_fanout_tool
from .tools.prompts import register_prompts
from .tools.usage import register_usage_tools

__all__ = ["INSTRUCTIONS", "build_server"]

logger = logging.getLogger(__name__)

INSTRUCTIONS = """\
Tools to consult other language models: `ask_openai` (OpenAI, or an OpenAI-compatible server),
`ask_claude` (Anthropic), and `ask` (any provider this server has, `model` = `provider:model`, a provider or an
alias; an alias may name several models tried in order until one answers). Each takes a self-contained
`prompt` (the other model sees nothing of this conversation), optional `system`, `model`, `max_tokens` and
`timeout_s`, and returns the answer with the model used, token usage, latency and the upstream request id.
Answers stream as progress notifications.
Transient upstream failures are retried; other failures come back as errors that say what to do.
`extract_json` turns free text into a JSON value that validates against a JSON Schema you give (native
structured output, always validated, invalid answers sent back with the errors for another try).
`ask_many` sends one prompt to several models at once (`targets` such as `openai`, `ollama:qwen3`;
default: every configured provider) and returns the answers side by side; `list_models` shows each provider's
models, default model and the aliases `model` accepts (`fast`...). Answers over a size cap come back truncated.
Every ask result carries a `conversation_id`: pass it back to continue that conversation (its earlier turns are
sent to the model, whichever provider answered them); `list_conversations`, `get_conversation` and
`delete_conversation` manage them. `files` (paths) sends files' text with the prompt, read by the server.
Results carry `cost_usd`; `usage_report` shows today's and this month's spend. A call over a budget is refused.
A model call still working after MCP_LLM_DETACH_AFTER_S (50 s by default) returns `status: running` with an
`answer_id` and the text so far, and goes on in the server: call `get_answer` with that id for the whole result
(`cancel_answer` stops it)."""


def build_server(settings: Settings, *, clock: Callable[[], float] = time.time) -> MCPServer:
    """The server with the tools the settings expose; nothing is started and no SDK is imported yet.

    `clock` (wall time, seconds) decides the budget windows and the ledger's times; tests inject one.

    Raises `SettingsError` when MCP_LLM_TOOLS or MCP_LLM_DISABLED_TOOLS names a tool the server lacks.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[AppState]:
        async with app_lifespan(settings, clock=clock) as state:
            running.append(state)
            try:
                yield state
            finally:
                running.remove(state)

    running: list[AppState] = []  # the state of the running server, for static resources (they get no Context)

    server = _Server(
        "mcp-llm-server",
        title="LLM bridge (OpenAI and Anthropic)",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=settings.log_level,
    )
    register_ask_tools(server)
    register_extract_tool(server)
    register_fanout_tool(server)
    register_answer_tools(server)
    register_catalog(server, settings)
    register_conversation_tools(server)
    register_usage_tools(server, lambda: running[-1] if running else None)
    flatten_input_schemas(server)
    apply_tool_toggles(server, settings)  # after every registration, so it covers every tool
    register_prompts(server)  # after the toggles: a prompt is offered only with the tools it names
    _add_logging_handler(server)
    _add_prompt_handler(server)
    return server


class _Server(MCPServer[AppState]):
    """MCPServer, but arguments that fail a tool's input schema come back as `argument_error`'s result, for every
    tool: the SDK's `Tool.run` raises them as a `ToolError` caused by the `ValidationError`, and its handler would
    send pydantic's text as is."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[AppState, Any] | None = None
    ) -> types.CallToolResult | types.InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            tool = next((t for t in registered_tools(self) if t.name == name), None)
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError) or tool is None:
                raise
            fields = sorted({str(err["loc"][0]) for err in exc.__cause__.errors() if err["loc"]})
            logger.info("Tool %r rejected arguments: %r", name, fields)  # names only: the values are the caller's
            return argument_error(name, exc.__cause__, tool.fn_metadata.arg_model.model_json_schema())


def _add_logging_handler(server: MCPServer) -> None:
    """Accept `logging/setLevel` (2025-era hosts send it): it sets how much this server logs to stderr."""

    async def set_level(ctx: ServerRequestContext[AppState], params: types.SetLevelRequestParams) -> types.EmptyResult:
        logging.getLogger("mcp_llm_server").setLevel(MCP_TO_PYTHON_LEVEL.get(params.level, logging.INFO))
        return types.EmptyResult()

    lowlevel_server(server).add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)


def _add_prompt_handler(server: MCPServer) -> None:
    """`prompts/get` for a name the server lacks, or with missing or invalid arguments: an INVALID_PARAMS error
    saying which (the SDK logs a traceback and answers code 0)."""

    async def get_prompt(
        ctx: ServerRequestContext[AppState], params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        if params.name not in {prompt.name for prompt in await server.list_prompts()}:
            raise MCPError(types.INVALID_PARAMS, f"Unknown prompt: {params.name}")
        try:
            handled: types.GetPromptResult | types.InputRequiredResult = await default_get_prompt(server)(ctx, params)
        except ValueError as exc:  # the SDK's word for missing or invalid arguments (it would log a traceback)
            raise MCPError(types.INVALID_PARAMS, f"Prompt {params.name}: {exc}") from None
        return handled

    lowlevel_server(server).add_request_handler("prompts/get", types.GetPromptRequestParams, get_prompt)
