"""What a detached call's results look like: `running` (the answer so far), `complete`, stopped (cancelled or
interrupted), each in the shape of the tool that started the call, so its output schema holds for all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.types import CallToolResult

from ..answers import AnswerJob
from ..render import cap_texts, error_result, success_result
from ..results import AskManyResult, AskResult, TargetAnswer, TokenUsage
from ..state import AppState

__all__ = [
    "ANSWER_META_KEY",
    "RunningView",
    "running_result",
    "stopped_result",
    "with_status",
]

ANSWER_META_KEY = "mcp-llm-server/answer"
# The tools whose output schema carries `status` and `answer_id` (extract_json's structured content is the
# caller's own value: there they are in `_meta` only, as for every tool).
_STATUS_IN_STRUCTURED = frozenset({"ask", "ask_openai", "ask_claude", "ask_many"})


def with_status(tool: str, result: CallToolResult, answer_id: str | None) -> CallToolResult:
    """A finished call's result, marked `complete` (with its answer id when it had detached); a stopped call's
    result keeps its own status."""
    if result.meta and ANSWER_META_KEY in result.meta:
        return result
    meta = {**(result.meta or {}), ANSWER_META_KEY: {"status": "complete", "answer_id": answer_id}}
    structured = result.structured_content
    if tool in _STATUS_IN_STRUCTURED and isinstance(structured, dict):
        structured = {**structured, "status": "complete", "answer_id": answer_id}
    return result.model_copy(update={"meta": meta, "structured_content": structured})


def _next_step(answer_id: str, wait_s: float) -> str:
    return (
        f'Call get_answer with answer_id "{answer_id}" to wait for the rest (it waits up to {wait_s:g} s per call and '
        "returns the whole result when it is ready); call cancel_answer with it to stop the call."
    )


RunningView = Callable[[dict[str, Any], dict[str, str], float], dict[str, Any]]


def _ask_view(view: dict[str, Any], partials: dict[str, str], elapsed_s: float) -> dict[str, Any]:
    return AskResult(
        text=next(iter(partials.values()), ""),
        provider=str(view.get("provider", "")),
        model=str(view.get("model", "")),
        stop_reason=None,
        usage=TokenUsage(input_tokens=None, output_tokens=None),
        latency_ms=round(elapsed_s * 1000.0, 1),
        attempts=0,
        request_id=None,
    ).model_dump(mode="json")


def _many_view(view: dict[str, Any], partials: dict[str, str], elapsed_s: float) -> dict[str, Any]:
    answers = []
    for label, text in partials.items():
        provider, _, model = label.partition(":")
        answers.append(
            TargetAnswer(
                target=label,
                provider=provider,
                model=model.split(" #")[0],
                text=text,
                stop_reason=None,
                usage=None,
                latency_ms=round(elapsed_s * 1000.0, 1),
                attempts=0,
                request_id=None,
                error=None,
            )
        )
    result = AskManyResult(answers=answers, succeeded=0, failed=0, latency_ms=round(elapsed_s * 1000.0, 1))
    return result.model_dump(mode="json")


def _extract_view(view: dict[str, Any], partials: dict[str, str], elapsed_s: float) -> dict[str, Any]:
    return {"partial_text": next(iter(partials.values()), ""), **view}


_VIEWS: dict[str, RunningView] = {
    "ask": _ask_view,
    "ask_openai": _ask_view,
    "ask_claude": _ask_view,
    "ask_many": _many_view,
    "extract_json": _extract_view,
}


def _partial_section(partials: dict[str, str]) -> str:
    if not any(partials.values()):
        return "No answer text has arrived yet."
    if len(partials) == 1:
        (text,) = partials.values()
        return f"The answer so far ({len(text):,} characters):\n\n{text}"
    sections = [f"## {label} (so far)\n\n{text}" for label, text in partials.items()]
    return "The answers so far:\n\n" + "\n\n".join(sections)


def running_result(
    state: AppState, tool: str, view: dict[str, Any], partials: dict[str, str], elapsed_s: float, answer_id: str
) -> CallToolResult:
    """The result of a call that goes on in the server: not an error, `status: running`, the text so far."""
    partials = cap_texts({k: state.redact(v) for k, v in partials.items()}, state.settings.max_output_chars)
    wait_s = state.detacher.wait_limit_s
    next_step = _next_step(answer_id, wait_s)
    elapsed_s = round(elapsed_s, 1)
    structured = _VIEWS[tool](view, partials, elapsed_s)
    structured.update(status="running", answer_id=answer_id, elapsed_s=elapsed_s, next_step=next_step)
    text = (
        f"{tool} is still running after {elapsed_s:.0f} s. It goes on in the server, and this result came back "
        f'before your host\'s time limit cuts the call off (answer_id "{answer_id}"). {next_step}\n\n'
        + _partial_section(partials)
    )
    result = success_result(text, structured)
    running = {"status": "running", "answer_id": answer_id, "elapsed_s": elapsed_s}
    return result.model_copy(update={"meta": {ANSWER_META_KEY: running}})


_STOPPED = {
    "cancelled": "was cancelled at your request",
    "interrupted": "was interrupted: the server process running it stopped (a restart, a shutdown or a crash)",
}


def stopped_result(
    state: AppState,
    *,
    tool: str,
    answer_id: str,
    why: str | None,
    elapsed_s: float,
    partials: dict[str, str],
    charges: list[str],
) -> CallToolResult:
    """The result of a call that ended without its answer: cancelled, interrupted, or a bug in the server."""
    kind = why or "internal"
    what = _STOPPED.get(kind, "failed unexpectedly (a bug in the server; the server's log has the details)")
    lines = [f"{tool} (answer_id {answer_id}) {what} after {elapsed_s:.0f} s, before its answer was complete."]
    if kind == "cancelled":
        lines.append("The upstream stream was closed at once.")
    if charges:
        lines.append("What it had consumed was charged: " + "; ".join(charges) + ".")
    elif kind == "interrupted":
        lines.append("What it had consumed may not be in the ledger: its process ended before it could record it.")
    elif kind == "cancelled":
        lines.append("Nothing was charged: no request had gone out yet.")
    lines.append(f"Call {tool} again for a whole answer.")
    partials = cap_texts(partials, state.settings.max_output_chars)
    text = " ".join(lines) + "\n\n" + _partial_section(partials)
    details = {
        "kind": kind,
        "message": " ".join(lines),
        "answer_id": answer_id,
        "elapsed_s": round(elapsed_s, 1),
        "charges": charges,
        "partial_text": "\n\n".join(partials.values()),
        "retryable": True,
    }
    result = error_result(state, text, {"error": details})
    stopped = {"status": kind, "answer_id": answer_id}
    return result.model_copy(update={"meta": {**(result.meta or {}), ANSWER_META_KEY: stopped}})


def job_stopped_result(state: AppState, job: AnswerJob) -> CallToolResult:
    return stopped_result(
        state,
        tool=job.tool,
        answer_id=job.id,
        why=job.stop_reason,
        elapsed_s=job.elapsed_s(),
        partials=job.partials(),
        charges=job.charges,
    )
