"""`ask_openai` and `ask_claude`: one prompt to one model, streamed, with its answer and how it went."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations

from ..aliases import AliasMismatch, model_for
from ..calls import run_call
from ..client_roots import ClientRoots, root_paths
from ..errors import ProviderNotConfigured, UpstreamFailure
from ..metering import BudgetExceeded, caller_of, metered_call, refusal_structured
from ..progress import progress_relay
from ..providers.base import LLMRequest, ProviderId, ReasoningEffort
from ..results import AskResult, TokenUsage
from ..state import AppState
from .common import answer_result, app_state, error_result, progress_sender
from .context import CallContext, ContextRefused, prepare_context
from .params import ConversationId, Files, MaxTokens, Model, Prompt, ReasoningEffortArg, System, Temperature, TimeoutS

__all__ = ["ask", "register_ask_tools"]

logger = logging.getLogger(__name__)

_ANNOTATIONS = ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=False)

_STREAMING_NOTE = (
    " The answer streams to you as progress notifications while it is written; transient upstream "
    "failures (rate limits, overload, 5xx, dropped connections) are retried within the time limit."
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
    """One call: its files read and its conversation's history loaded (its lock held until the turn is saved)."""
    state = app_state(ctx)
    try:
        async with prepare_context(
            state,
            conversation_id=conversation_id,
            system=system,
            files=files,
            timeout_s=timeout_s,
            client_roots=client_roots,
        ) as call:
            return await _ask(
                ctx,
                provider_id,
                call,
                prompt=prompt,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                timeout_s=timeout_s,
                reasoning_effort=reasoning_effort,
            )
    except ContextRefused as exc:
        return error_result(state, str(exc), {"error": {"kind": "refused", "message": str(exc)}})


async def _ask(
    ctx: Context[AppState],
    provider_id: ProviderId,
    call: CallContext,
    *,
    prompt: str,
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    timeout_s: float | None,
    reasoning_effort: ReasoningEffort | None,
) -> CallToolResult:
    system = call.system
    state = app_state(ctx)
    slot = state.slots[provider_id]
    try:
        provider = slot.require()
    except ProviderNotConfigured as exc:
        return error_result(state, str(exc))
    try:
        model = model_for(state.settings.model_aliases, provider_id, model, slot.default_model)
    except AliasMismatch as exc:
        return error_result(state, str(exc))
    limit = state.settings.max_prompt_chars
    if len(prompt) + len(system or "") > limit:
        return error_result(
            state,
            f"The prompt is {len(prompt) + len(system or ''):,} characters; this server accepts at most "
            f"{limit:,} (MCP_LLM_MAX_PROMPT_CHARS). Shorten it or send the essential part.",
        )
    request = LLMRequest(
        prompt=prompt,
        model=model,
        max_tokens=max_tokens or state.settings.max_tokens,
        system=system,
        temperature=temperature,
        reasoning_effort=reasoning_effort,
        history=call.history,
        files=call.files,
    )
    settings = state.settings
    try:
        async with progress_relay(
            progress_sender(ctx),
            interval_s=settings.progress_interval_s,
            tail_chars=settings.progress_tail_chars,
            heartbeat_s=settings.heartbeat_s,
            waiting_for=f"{slot.label} {request.model}",
        ) as progress:
            metered = await metered_call(
                state,
                provider_id,
                request,
                lambda: run_call(
                    provider, request, limiter=slot.limiter, limits=state.limits(timeout_s), progress=progress
                ),
                tool="ask_openai" if provider_id == "openai" else "ask_claude",
                conversation_id=call.conversation_id,
                caller=caller_of(ctx),
            )
    except BudgetExceeded as refused:
        return error_result(state, str(refused), refusal_structured(refused))
    except UpstreamFailure as failure:
        logger.warning("%s call to %s failed: %s", slot.label, request.model, failure.describe_briefly())
        message = failure.describe()
        if failure.partial_text:
            message += f"\n\nPartial answer received before the failure:\n{failure.partial_text}"
        structured = failure.as_structured()
        if call.continued:
            structured["conversation_id"] = call.conversation_id
        return error_result(state, message, structured)
    outcome = metered.outcome
    completion = outcome.completion
    saved_to = await call.save(state, [call.new_turn(provider_id, prompt, completion)])
    result = AskResult(
        text=completion.text,
        provider=provider_id,
        model=completion.model,
        stop_reason=completion.stop_reason,
        usage=TokenUsage(
            input_tokens=completion.usage.input_tokens,
            output_tokens=completion.usage.output_tokens,
            reasoning_tokens=completion.usage.reasoning_tokens,
            cached_input_tokens=completion.usage.cached_input_tokens,
        ),
        cost_usd=metered.cost.usd_float,
        cost_note=metered.cost.note,
        latency_ms=outcome.latency_ms,
        attempts=outcome.attempts,
        request_id=completion.request_id,
        conversation_id=saved_to,
        turns_omitted=call.turns_omitted,
    )
    return answer_result(state, result.model_dump(mode="json"))


def register_ask_tools(server: MCPServer) -> None:
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
        return await ask(
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
        )

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
        return await ask(
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
        )
