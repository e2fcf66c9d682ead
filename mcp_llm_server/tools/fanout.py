"""`ask_many`: one prompt to several models at once, every answer side by side.

Each target is one `run_call` holding its provider's shared limiter, so a fan-out competes fairly with every
other call for the provider's slots and never overruns `MCP_LLM_<PROVIDER>_CONCURRENCY`. One target's
failure stays in its own entry; the call is an error only when every target failed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field

from ..aliases import ModelRef
from ..client_roots import ClientRoots, root_paths
from ..pipeline import CallRefused, ModelCall, model_call, refusal_result
from ..pipeline.failover import FailoverFailed, answer_first
from ..pipeline.targets import TargetInvalid, resolve_target
from ..pricing import NANOS_PER_USD, nanos_to_usd
from ..progress import FanoutProgress
from ..providers.base import LLMRequest, ReasoningEffort
from ..render import cap_answers, error_result, success_result
from ..results import AskManyResult, SkippedTarget, TargetAnswer, TargetError, TokenUsage
from ..sdk_adapter import app_state
from ..state import AppState
from ..store import NewTurn
from .detached import DETACH_NOTE, detachable
from .judging import JUDGE_SYSTEM, MAX_STANCE_CHARS, check_stances, judge_prompt, stance_requests
from .params import ConversationId, Files, MaxTokens, Prompt, ReasoningEffortArg, System, TimeoutS

__all__ = ["MAX_TARGETS", "Target", "parse_targets", "register_fanout_tool"]

logger = logging.getLogger(__name__)

MAX_TARGETS = 8

Targets = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=200)]] | None,
    Field(
        min_length=1,
        max_length=MAX_TARGETS,
        description="Who to ask, each `provider` (its default model), `provider:model` with the model "
        "as the provider spells it, e.g. `openai`, `openai:gpt-5.5`, `anthropic:claude-sonnet-5-5` "
        "(`claude` is accepted for `anthropic`), or a model alias alone (`list_models` shows them). At most "
        f"{MAX_TARGETS}; repeating a target asks it again (independent samples). Omit to ask every configured "
        "provider's default model.",
    ),
]


JudgeArg = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=200,
        description="A model to judge the answers, written like a target (`anthropic`, `openai:gpt-5.5`, an "
        "alias). It sees the question and the answers labelled A, B, C…, not which model wrote which. Omit for "
        "no judge.",
    ),
]
Stances = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_STANCE_CHARS)]] | None,
    Field(
        min_length=1,
        max_length=MAX_TARGETS,
        description="One stance per target, in the targets' order, added to that target's system text: `for`, "
        "`against`, `neutral`, or your own words. Omit for none.",
    ),
]


@dataclass(frozen=True, slots=True)
class Target:
    refs: tuple[ModelRef, ...]  # the models to ask, in failover order (usually one)
    label: str  # `provider:model` or the failover alias, with ` #n` for the n-th repeat of the same target

    @property
    def provider(self) -> str:
        return self.refs[0].provider

    @property
    def model(self) -> str:
        return self.refs[0].model


def _default_targets(state: AppState) -> list[tuple[str, tuple[ModelRef, ...]]]:
    """Every configured provider's default model (named providers without one are left out)."""
    chosen: list[tuple[str, tuple[ModelRef, ...]]] = [
        (f"{slot.id}:{slot.default_model}", (ModelRef(slot.id, slot.default_model),))
        for slot in state.slots.values()
        if slot.adapter is not None and slot.default_model is not None
    ]
    if not chosen:
        variables = " and ".join(slot.missing_variable for slot in state.slots.values() if slot.missing_variable)
        raise CallRefused(
            "not_configured",
            f"No provider is configured: set {variables} in the server's environment and restart it.",
        )
    return chosen


def parse_targets(specs: list[str] | None, state: AppState) -> list[Target]:
    """The targets to ask; raises `CallRefused` naming every malformed one (nothing is sent upstream then)."""
    if specs is None:
        chosen = _default_targets(state)
    else:
        chosen = []
        problems = []
        for spec in specs:
            try:
                refs = resolve_target(spec, state)
            except TargetInvalid as exc:
                problems.append(f"`{spec}`: {exc}")
                continue
            chosen.append((str(refs[0]) if len(refs) == 1 else spec.strip().lower(), refs))
        if problems:
            raise CallRefused(
                "invalid_targets",
                "Invalid targets: "
                + "; ".join(problems)
                + ". Each target is `provider`, `provider:model` or an alias, e.g. `openai` or "
                "`anthropic:claude-sonnet-5-5`.",
                {"problems": problems},
            )
    seen: dict[str, int] = {}
    targets = []
    for base, refs in chosen:
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base} #{seen[base]}"
        targets.append(Target(refs, label))
    return targets


def _failed(
    target: Target, started: float, error: TargetError, attempts: int, skipped: list[SkippedTarget] | None = None
) -> TargetAnswer:
    return TargetAnswer(
        target=target.label,
        provider=target.provider,
        model=target.model,
        text=None,
        stop_reason=None,
        usage=None,
        latency_ms=round((anyio.current_time() - started) * 1000.0, 1),
        attempts=attempts,
        request_id=error.request_id,
        error=error,
        skipped=skipped or None,
    )


def _target_error(kind: str, message: str, **fields: Any) -> TargetError:
    values: dict[str, Any] = {"status": None, "request_id": None, "retryable": False, "partial_text": ""}
    return TargetError(kind=kind, message=message, **{**values, **fields})


async def _ask_target(call: ModelCall, target: Target, request: LLMRequest, progress: FanoutProgress) -> TargetAnswer:
    """One target's answer, or its error; never raises (except for cancellation)."""
    started = anyio.current_time()
    try:
        answered = await answer_first(call, target.refs, request, progress.channel(target.label))
    except FailoverFailed as failed:
        error, attempts = _failover_error(call, target, failed)
        return _failed(target, started, error, attempts, failed.skipped)
    except Exception as exc:  # a bug in one target must not take the others down
        logger.exception("%s failed unexpectedly", target.label)
        message = call.state.redact(f"{target.label}: unexpected error ({type(exc).__name__}: {exc}).")
        return _failed(target, started, _target_error("internal", message), attempts=0)
    metered = answered.metered
    outcome = metered.outcome
    completion = outcome.completion
    return TargetAnswer(
        target=target.label,
        provider=answered.ref.provider,
        model=completion.model,
        text=completion.text,
        stop_reason=completion.stop_reason,
        usage=TokenUsage.of(completion.usage),
        cost_usd=metered.cost.usd_float,
        cost_note=metered.cost.note,
        latency_ms=outcome.latency_ms,
        attempts=outcome.attempts,
        request_id=completion.request_id,
        error=None,
        skipped=answered.skipped or None,
    )


def _failover_error(call: ModelCall, target: Target, failed: FailoverFailed) -> tuple[TargetError, int]:
    """The error of a target no model of which answered, and the upstream requests it took."""
    failure = failed.error
    if isinstance(failure, CallRefused):
        return _target_error(failure.kind, str(failure)), 0
    logger.warning("%s failed: %s", target.label, failure.describe_briefly())
    error = _target_error(
        failure.kind,
        call.state.redact(failure.describe()),
        status=failure.status,
        request_id=failure.request_id,
        retryable=failure.retryable,
        partial_text=failure.partial_text,
    )
    return error, failure.attempts


def _render(result: AskManyResult) -> str:
    """The answers as Markdown sections, in target order: what the host's model reads."""
    total = len(result.answers)
    lines = [f"{result.succeeded} of {total} targets answered ({result.latency_ms / 1000:.1f} s)."]
    for answer in result.answers:
        if answer.error is None:
            usage = answer.usage
            tokens = f", {usage.input_tokens}→{usage.output_tokens} tokens" if usage and usage.output_tokens else ""
            lines.append(f"\n## {answer.target} (model {answer.model}, {answer.latency_ms / 1000:.1f} s{tokens})\n")
            lines.append(answer.text or "")
            if answer.truncation_note:
                lines.append(f"\n{answer.truncation_note}")
        else:
            lines.append(f"\n## {answer.target}: failed ({answer.error.kind})\n")
            lines.append(answer.error.message)
            if answer.error.partial_text:
                lines.append(f"\nPartial answer received before the failure:\n{answer.error.partial_text}")
            if answer.truncation_note:
                lines.append(f"\n{answer.truncation_note}")
    if result.judgment is not None:
        lines.append(_render_judgment(result.judgment, result.labels or {}))
    return "\n".join(lines)


def _render_judgment(judgment: TargetAnswer, labels: dict[str, str]) -> str:
    key = ", ".join(f"{label} = {target}" for label, target in labels.items())
    if judgment.error is not None:
        return f"\n## Synthesis: the judge failed ({judgment.error.kind})\n\n{judgment.error.message}"
    judge = judgment.target.removeprefix("judge ")
    note = f"\n\n{judgment.truncation_note}" if judgment.truncation_note else ""
    return f"\n## Synthesis by the judge ({judge}; it saw the answers as {key})\n\n{judgment.text or ''}{note}"


async def _fan_out(
    call: ModelCall, targets: list[Target], requests: list[LLMRequest], progress: FanoutProgress
) -> list[TargetAnswer]:
    answers: list[TargetAnswer | None] = [None] * len(targets)
    finished = 0

    async def one(index: int, target: Target) -> None:
        nonlocal finished
        answer = await _ask_target(call, target, requests[index], progress)
        answers[index] = answer
        progress.done(target.label)  # heartbeats name only the targets still running
        finished += 1
        line = f"{finished}/{len(targets)} targets finished"
        how = f"failed ({answer.error.kind})" if answer.error else f"answered in {answer.latency_ms / 1000:.1f} s"
        await progress.flush()  # the target's last text goes before its "finished" line
        await progress.status(f"[{target.label}] {how}; {line}")

    await progress.status(f"Asking {len(targets)} targets at once: {', '.join(t.label for t in targets)}")
    async with anyio.create_task_group() as tg:
        for index, target in enumerate(targets):
            tg.start_soon(one, index, target)
    return [answer for answer in answers if answer is not None]


def _judge_target(spec: str | None, state: AppState) -> Target | None:
    if spec is None:
        return None
    try:
        (target,) = parse_targets([spec], state)
    except CallRefused as refused:
        raise CallRefused("invalid_judge", f"The judge: {refused}", refused.details) from None
    return replace(target, label=f"judge {target.label}")


async def _judge(
    call: ModelCall,
    judge: Target,
    question: str,
    answers: list[TargetAnswer],
    max_tokens: int | None,
    progress: FanoutProgress,
) -> tuple[TargetAnswer, dict[str, str]]:
    """The judge's synthesis of the answers (labelled, never named), or its error; the answers stand either way."""
    text, labels = judge_prompt(question, answers)
    if not any(answer.error is None for answer in answers):
        nothing = _target_error("nothing_to_judge", "Every target failed, so there was nothing to judge.")
        return _failed(judge, anyio.current_time(), nothing, attempts=0), labels
    try:
        call.check_prompt_size(len(text) + len(JUDGE_SYSTEM), "The answers to judge")
    except CallRefused as refused:
        return _failed(judge, anyio.current_time(), _target_error(refused.kind, str(refused)), attempts=0), labels
    # The judge sees the question and the answers alone: not the conversation's history, nor the files.
    request = replace(call.request(text, judge.model, max_tokens=max_tokens), system=JUDGE_SYSTEM, history=(), files=())
    await progress.status(f"Judging {len(answers)} answers with {judge.label.removeprefix('judge ')}")
    judged = await _ask_target(call, judge, request, progress)
    progress.done(judge.label)
    await progress.flush()
    return judged, labels


def _total_cost(answers: list[TargetAnswer]) -> dict[str, Any]:
    """The answers' cost together (summed in nano-dollars, exact); null with a note when one is unpriced."""
    unpriced = [a.target for a in answers if a.error is None and a.cost_usd is None]
    if unpriced:
        return {"cost_usd": None, "cost_note": f"no price known for {', '.join(unpriced)} (see each cost_note)"}
    nanos = sum(round(a.cost_usd * NANOS_PER_USD) for a in answers if a.cost_usd is not None)
    return {"cost_usd": nanos_to_usd(nanos), "cost_note": None}


def _turn(call: ModelCall, prompt: str, answer: TargetAnswer) -> NewTurn:
    usage = answer.usage
    return NewTurn(
        provider=answer.provider,
        model=answer.model,
        system=call.context.system,
        prompt=prompt,
        answer=answer.text or "",
        files=call.context.stored_files(),
        stop_reason=answer.stop_reason,
        usage=usage.model_dump() if usage is not None else {},
    )


async def _ask_many(
    ctx: Context[AppState],
    *,
    prompt: str,
    targets: list[str] | None,
    system: str | None,
    max_tokens: int | None,
    timeout_s: float | None,
    reasoning_effort: ReasoningEffort | None = None,
    conversation_id: str | None = None,
    files: list[str] | None = None,
    client_roots: Sequence[Path] = (),
    judge: str | None = None,
    stances: list[str] | None = None,
) -> CallToolResult:
    state = app_state(ctx)
    try:
        parsed = parse_targets(targets, state)
        check_stances(stances, len(parsed))
        judge_target = _judge_target(judge, state)
        async with model_call(
            ctx,
            tool="ask_many",
            timeout_s=timeout_s,
            conversation_id=conversation_id,
            system=system,
            files=files,
            client_roots=client_roots,
        ) as call:
            call.check_prompt_size(len(prompt) + len(call.context.system or ""))
            request = call.request(prompt, "", max_tokens=max_tokens, reasoning_effort=reasoning_effort)
            requests = stance_requests(request, [target.model for target in parsed], stances)
            started = anyio.current_time()
            async with call.fanout_progress() as progress:
                answers = await _fan_out(call, parsed, requests, progress)
                judged = None
                if judge_target is not None:
                    judged = await _judge(call, judge_target, prompt, answers, max_tokens, progress)
            # One turn per answer, in target order (failed targets add none).
            saved_to, save_note = await call.save([_turn(call, prompt, a) for a in answers if a.error is None])
            return _result(call, answers, started, saved_to, save_note, judged)
    except CallRefused as refused:
        return refusal_result(state, refused)


def _result(
    call: ModelCall,
    answers: list[TargetAnswer],
    started: float,
    saved_to: str | None,
    save_note: str | None,
    judged: tuple[TargetAnswer, dict[str, str]] | None,
) -> CallToolResult:
    failed = sum(1 for answer in answers if answer.error is not None)
    notes = [*call.notes, *([save_note] if save_note else [])]
    judgment, labels = judged if judged is not None else (None, None)
    result = AskManyResult(
        judgment=judgment,
        labels=labels,
        answers=answers,
        succeeded=len(answers) - failed,
        failed=failed,
        latency_ms=round((anyio.current_time() - started) * 1000.0, 1),
        conversation_id=saved_to,
        turns_omitted=call.context.turns_omitted,
        notes=notes or None,
        **_total_cost([*answers, *([judgment] if judgment is not None else [])]),
    )
    # The conversation the answers were saved to, where the whole of a truncated one stays readable.
    capped = [*result.answers, *([result.judgment] if result.judgment is not None else [])]
    cap_answers(capped, call.settings.max_output_chars, result.conversation_id)
    structured = result.model_dump(mode="json")
    if result.succeeded == 0:
        return error_result(call.state, "Every target failed.\n\n" + _render(result), structured, conforms=True)
    return success_result(_render(result), structured)


def register_fanout_tool(server: MCPServer) -> None:
    @server.tool(
        name="ask_many",
        title="Ask several models at once",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=False),
        description="Send one prompt to several models at once (OpenAI and Anthropic, any mix, up to "
        f"{MAX_TARGETS}) and return every answer side by side, each with its model, token usage, latency "
        "and attempts. Use it to compare models or collect independent opinions. A target that fails (unknown "
        "model, rate limit, timeout) carries its error and does not affect the others; the call fails only if "
        "every target failed. Answers stream as progress notifications prefixed with their target. With `judge`, "
        "a judge model then receives the answers labelled A, B, C… (not by model) and writes a synthesis: where "
        "they agree and differ, which it trusts and why (`judgment`; a failed judge leaves the answers). `stances` "
        "gives each target a stance to argue (`for`, `against`, `neutral` or your own words). "
        "`timeout_s` bounds the whole fan-out." + DETACH_NOTE,
    )
    async def ask_many(
        ctx: Context[AppState],
        client_roots: ClientRoots,
        prompt: Prompt,
        targets: Targets = None,
        system: System = None,
        max_tokens: MaxTokens = None,
        timeout_s: TimeoutS = None,
        reasoning_effort: ReasoningEffortArg = None,
        conversation_id: ConversationId = None,
        files: Files = None,
        judge: JudgeArg = None,
        stances: Stances = None,
    ) -> Annotated[CallToolResult, AskManyResult]:
        return await detachable(
            ctx,
            "ask_many",
            {"targets": targets, "judge": judge},
            lambda: _ask_many(
                ctx,
                prompt=prompt,
                targets=targets,
                system=system,
                max_tokens=max_tokens,
                timeout_s=timeout_s,
                reasoning_effort=reasoning_effort,
                conversation_id=conversation_id,
                files=files,
                client_roots=root_paths(client_roots),
                judge=judge,
                stances=stances,
            ),
        )
