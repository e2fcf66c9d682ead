"""`ask_openai` and `ask_claude`: one prompt to one model, streamed, with its answer and how it went."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations

from ..client_roots import ClientRoots, root_paths
from ..errors import UpstreamFailure
from ..pipeline import CallRefused, Metered, ModelCall, model_call, refusal_result
from ..providers.base import ProviderId, ReasoningEffort
from ..render import answer_result, error_result
from ..results import AskResult, TokenUsage
from ..sdk_adapter import app_state
from ..state import AppState
from .detached import DETACH_NOTE, detachable
from .params import ConversationId, Files, MaxTokens, Model, Prompt, ReasoningEffortArg, System, Temperature, TimeoutS

__all__ = ["TOOL_NAMES", "ask", "register_ask_tools"]

logger = logging.getLogger(__name__)

TOOL_NAMES: dict[ProviderId, str] = {"openai": "ask_openai", "anthropic": "ask_claude"}

_ANNOTATIONS = ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=False)

_STREAMING_NOTE = (
    " The answer streams to you as progress notifications while it is written; transient upstream "
    "failures (rate limits, overload, 5xx, dropped connections) are retried within the time limit." + DETACH_NOTE
)


async def ask(
    ctx: Context[AppState],
    provider_id: ProviderId,
    *,
    prompt: str,
    system: str | None,
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    timeout_s: float | None,
    reasoning_effort: ReasoningEffort | None = None,
    conversation_id: str | None = None,
    files: list[str] | None = None,
    client_roots: Sequence[Path] = (),
) -> CallToolResult:
    state = app_state(ctx)
    try:
        async with model_call(
            ctx,
            tool=TOOL_NAMES[provider_id],
            timeout_s=timeout_s,
            conversation_id=conversation_id,
            system=system,
            files=files,
            client_roots=client_roots,
        ) as call:
            slot, _ = call.provider(provider_id)
            request = call.request(
                prompt,
                call.model(provider_id, model),
                max_tokens=max_tokens,
                temperature=temperature,
                reasoning_effort=reasoning_effort,
            )
            call.check_prompt_size(len(prompt) + len(request.system or ""))
            try:
                async with call.progress(f"{slot.label} {request.model}") as progress:
                    metered = await call.answer(provider_id, request, progress)
            except UpstreamFailure as failure:
                return _failure_result(call, failure)
            turn = call.context.new_turn(provider_id, prompt, metered.outcome.completion)
            saved_to, save_note = await call.save([turn])
            return answer_result(state, _result(call, provider_id, metered, saved_to, save_note))
    except CallRefused as refused:
        return refusal_result(state, refused)


def _failure_result(call: ModelCall, failure: UpstreamFailure) -> CallToolResult:
    logger.warning("%s", failure.describe_briefly())
    message = failure.describe()
    if failure.partial_text:
        message += f"\n\nPartial answer received before the failure:\n{failure.partial_text}"
    structured = failure.as_structured()
    structured["partial_text"] = failure.partial_text[: call.settings.max_output_chars]
    if call.context.continued:
        structured["conversation_id"] = call.context.conversation_id
    return error_result(call.state, message, structured)


def _result(
    call: ModelCall, provider_id: ProviderId, metered: Metered, saved_to: str | None, save_note: str | None
) -> dict[str, object]:
    outcome = metered.outcome
    completion = outcome.completion
    notes = [*call.notes, *([save_note] if save_note else [])]
    result = AskResult(
        text=completion.text,
        provider=provider_id,
        model=completion.model,
        stop_reason=completion.stop_reason,
        usage=TokenUsage.of(completion.usage),
        cost_usd=metered.cost.usd_float,
        cost_note=metered.cost.note,
        latency_ms=outcome.latency_ms,
        attempts=outcome.attempts,
        request_id=completion.request_id,
        conversation_id=saved_to,
        turns_omitted=call.context.turns_omitted,
        notes=notes or None,
    )
    return result.model_dump(mode="json")


def register_ask_tools(server: MCPServer) -> None:
    _register_ask_openai(server)
    _register_ask_claude(server)


def _register_ask_openai(server: MCPServer) -> None:
    @server.tool(
        name="ask_openai",
        title="Ask an OpenAI model",
        annotations=_ANNOTATIONS,
        description="Ask an OpenAI model (or the OpenAI-compatible server this MCP server is configured for) "
        "and return its answer with the model used, token usage, latency and the upstream request id. "
        "Use it for a second opinion, a review, or a task another model does better." + _STREAMING_NOTE,
    )
    async def ask_openai(
        ctx: Context[AppState],
        client_roots: ClientRoots,
        prompt: Prompt,
        system: System = None,
        model: Model = None,
        max_tokens: MaxTokens = None,
        temperature: Temperature = None,
        timeout_s: TimeoutS = None,
        reasoning_effort: ReasoningEffortArg = None,
        conversation_id: ConversationId = None,
        files: Files = None,
    ) -> Annotated[CallToolResult, AskResult]:
        view = {"provider": "openai", "model": model or app_state(ctx).slots["openai"].default_model}
        return await detachable(
            ctx,
            "ask_openai",
            view,
            lambda: ask(
                ctx,
                "openai",
                prompt=prompt,
                system=system,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                timeout_s=timeout_s,
                reasoning_effort=reasoning_effort,
                conversation_id=conversation_id,
                files=files,
                client_roots=root_paths(client_roots),
            ),
        )


def _register_ask_claude(server: MCPServer) -> None:
    @server.tool(
        name="ask_claude",
        title="Ask a Claude model",
        annotations=_ANNOTATIONS,
        description="Ask an Anthropic Claude model and return its answer with the model used, token usage, "
        "latency and the upstream request id. Use it for a second opinion, a review, or a task another "
        "model does better." + _STREAMING_NOTE,
    )
    async def ask_claude(
        ctx: Context[AppState],
        client_roots: ClientRoots,
        prompt: Prompt,
        system: System = None,
        model: Model = None,
        max_tokens: MaxTokens = None,
        timeout_s: TimeoutS = None,
        reasoning_effort: ReasoningEffortArg = None,
        conversation_id: ConversationId = None,
        files: Files = None,
    ) -> Annotated[CallToolResult, AskResult]:
        # No temperature: the Anthropic SDK 2.x Messages API no longer takes one.
        view = {"provider": "anthropic", "model": model or app_state(ctx).slots["anthropic"].default_model}
        return await detachable(
            ctx,
            "ask_claude",
            view,
            lambda: ask(
                ctx,
                "anthropic",
                prompt=prompt,
                system=system,
                model=model,
                max_tokens=max_tokens,
                temperature=None,
                timeout_s=timeout_s,
                reasoning_effort=reasoning_effort,
                conversation_id=conversation_id,
                files=files,
                client_roots=root_paths(client_roots),
            ),
        )
