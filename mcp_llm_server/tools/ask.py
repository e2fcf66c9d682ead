"""`ask_openai` and `ask_claude`: one prompt to one model, streamed, with its answer and how it went."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations

from ..aliases import ModelRef
from ..client_roots import ClientRoots, root_paths
from ..pipeline import CallRefused, ModelCall, model_call, refusal_result
from ..pipeline.call import model_of
from ..pipeline.failover import Answered, FailoverFailed, answer_first, refused_after, tried_before
from ..pipeline.targets import TargetInvalid, resolve_target
from ..providers.base import ProviderId, ReasoningEffort
from ..render import answer_result, error_result
from ..results import AskResult, TokenUsage
from ..sdk_adapter import app_state
from ..state import AppState
from .detached import DETACH_NOTE, detachable
from .params import (
    ConversationId,
    Files,
    MaxTokens,
    Model,
    Prompt,
    ReasoningEffortArg,
    System,
    TargetModel,
    Temperature,
    TimeoutS,
)

__all__ = ["ask", "fixed_provider", "named_target", "register_ask_tools"]

logger = logging.getLogger(__name__)


_ANNOTATIONS = ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=False)

_STREAMING_NOTE = (
    " The answer streams to you as progress notifications while it is written; transient upstream "
    "failures (rate limits, overload, 5xx, dropped connections) are retried within the time limit." + DETACH_NOTE
)


TargetsOf = Callable[[AppState], tuple[ModelRef, ...]]


def fixed_provider(provider_id: ProviderId, model: str | None) -> TargetsOf:
    """`model` (an alias of this provider's, or the default when None) of one provider: `ask_openai`/`ask_claude`."""

    def targets(state: AppState) -> tuple[ModelRef, ...]:
        return (ModelRef(provider_id, model_of(state, provider_id, model)),)

    return targets


def named_target(spec: str) -> TargetsOf:
    """What `ask`'s `model` names: `provider:model`, a provider or an alias (maybe several, in failover order)."""

    def targets(state: AppState) -> tuple[ModelRef, ...]:
        try:
            return resolve_target(spec, state)
        except TargetInvalid as exc:
            raise CallRefused("invalid_target", f"`model`: {exc}.") from None

    return targets


async def ask(
    ctx: Context[AppState],
    tool: str,
    targets_of: TargetsOf,
    *,
    prompt: str,
    system: str | None,
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
        refs = targets_of(state)
        async with model_call(
            ctx,
            tool=tool,
            timeout_s=timeout_s,
            conversation_id=conversation_id,
            system=system,
            files=files,
            client_roots=client_roots,
        ) as call:
            request = call.request(
                prompt,
                refs[0].model,
                max_tokens=max_tokens,
                temperature=temperature,
                reasoning_effort=reasoning_effort,
            )
            call.check_prompt_size(len(prompt) + len(request.system or ""))
            try:
                async with call.progress(_waiting_for(state, refs)) as progress:
                    answered = await answer_first(call, refs, request, progress)
            except FailoverFailed as failed:
                return _failure_result(call, failed)
            turn = call.context.new_turn(answered.ref.provider, prompt, answered.metered.outcome.completion)
            saved_to, save_note = await call.save([turn])
            return answer_result(state, _result(call, answered, saved_to, save_note))
    except CallRefused as refused:
        return refusal_result(state, refused)


def _view(state: AppState, spec: str) -> dict[str, str]:
    """What a `running` result of `ask` shows: the first model the call asks (the spec itself when it names none)."""
    try:
        first = resolve_target(spec, state)[0]
    except TargetInvalid:
        return {"provider": "", "model": spec}
    return {"provider": first.provider, "model": first.model}


def _waiting_for(state: AppState, refs: tuple[ModelRef, ...]) -> str:
    first = refs[0]
    label = f"{state.slots[first.provider].label} {first.model}"
    return label if len(refs) == 1 else f"{label} (then {', '.join(map(str, refs[1:]))})"


def _failure_result(call: ModelCall, failed: FailoverFailed) -> CallToolResult:
    failure = failed.error
    if isinstance(failure, CallRefused):
        raise refused_after(failure, failed.skipped)
    logger.warning("%s", failure.describe_briefly())
    message = failure.describe() + tried_before(failed.skipped)
    if failure.partial_text:
        message += f"\n\nPartial answer received before the failure:\n{failure.partial_text}"
    structured = failure.as_structured()
    structured["partial_text"] = failure.partial_text[: call.settings.max_output_chars]
    if failed.skipped:
        structured["skipped"] = [s.model_dump() for s in failed.skipped]
    if call.context.continued:
        structured["conversation_id"] = call.context.conversation_id
    return error_result(call.state, message, structured)


def _result(call: ModelCall, answered: Answered, saved_to: str | None, save_note: str | None) -> dict[str, object]:
    metered = answered.metered
    outcome = metered.outcome
    completion = outcome.completion
    notes = [*call.notes, *([save_note] if save_note else [])]
    if answered.skipped:
        tried = "; ".join(f"{s.target} ({s.reason})" for s in answered.skipped)
        notes.insert(0, f"Answered by {answered.ref} after skipping {tried}.")
    result = AskResult(
        text=completion.text,
        provider=answered.ref.provider,
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
        skipped=answered.skipped or None,
    )
    return result.model_dump(mode="json", exclude_none=False)


def register_ask_tools(server: MCPServer) -> None:
    _register_ask(server)
    _register_ask_openai(server)
    _register_ask_claude(server)


def _register_ask(server: MCPServer) -> None:
    @server.tool(
        name="ask",
        title="Ask any configured model",
        annotations=_ANNOTATIONS,
        description="Ask any model this server can reach: OpenAI, Anthropic, or a provider the operator named "
        "(a local Ollama or llama.cpp server, OpenRouter, Gemini...). `model` is `provider:model`, a provider "
        "alone (its default model), or an alias; an alias may name several models tried in order until one "
        "answers (the result names who answered and why others were skipped). `list_models` lists them all."
        + _STREAMING_NOTE,
    )
    async def ask_tool(
        ctx: Context[AppState],
        client_roots: ClientRoots,
        prompt: Prompt,
        model: TargetModel,
        system: System = None,
        max_tokens: MaxTokens = None,
        temperature: Temperature = None,
        timeout_s: TimeoutS = None,
        reasoning_effort: ReasoningEffortArg = None,
        conversation_id: ConversationId = None,
        files: Files = None,
    ) -> Annotated[CallToolResult, AskResult]:
        return await detachable(
            ctx,
            "ask",
            _view(app_state(ctx), model),
            lambda: ask(
                ctx,
                "ask",
                named_target(model),
                prompt=prompt,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                timeout_s=timeout_s,
                reasoning_effort=reasoning_effort,
                conversation_id=conversation_id,
                files=files,
                client_roots=root_paths(client_roots),
            ),
        )


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
        view = {"provider": "openai", "model": model or app_state(ctx).slots["openai"].default_model or ""}
        return await detachable(
            ctx,
            "ask_openai",
            view,
            lambda: ask(
                ctx,
                "ask_openai",
                fixed_provider("openai", model),
                prompt=prompt,
                system=system,
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
        view = {"provider": "anthropic", "model": model or app_state(ctx).slots["anthropic"].default_model or ""}
        return await detachable(
            ctx,
            "ask_claude",
            view,
            lambda: ask(
                ctx,
                "ask_claude",
                fixed_provider("anthropic", model),
                prompt=prompt,
                system=system,
                max_tokens=max_tokens,
                temperature=None,
                timeout_s=timeout_s,
                reasoning_effort=reasoning_effort,
                conversation_id=conversation_id,
                files=files,
                client_roots=root_paths(client_roots),
            ),
        )
