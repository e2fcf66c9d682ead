"""`detachable`: how every model tool runs, so that a call slower than `MCP_LLM_DETACH_AFTER_S` returns in time.

The tool's body runs as a job in the server's task group; its request waits for it up to the detach limit and
returns its result (`status: complete`), or a `running` result with an `answer_id` and the text so far while the
job goes on: cost reserved and settled, ledger row, conversation turn saved, exactly as when it did not detach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from ..answers import AnswerJob, TooManyDetached
from ..pipeline import CallRefused, refusal_result
from ..sdk_adapter import app_state, caller_of, progress_sender
from ..state import AppState
from .running import job_stopped_result, running_result, with_status

__all__ = ["DETACH_NOTE", "detachable"]

# Appended to every model tool's description: what the model sees decides whether it fetches the rest.
DETACH_NOTE = (
    " A call still running after the server's detach limit returns `status: running` with an `answer_id` and the "
    "text so far: call get_answer with that id for the whole result."
)


async def detachable(
    ctx: Context[AppState], tool: str, view: dict[str, Any], body: Callable[[], Awaitable[CallToolResult]]
) -> CallToolResult:
    """Run `body` (the tool's whole call) so that it returns by the detach limit; `view` is what its `running`
    result is drawn from besides the text so far (provider, model...)."""
    state = app_state(ctx)
    detacher = state.detacher
    if not detacher.enabled:
        return with_status(tool, await body(), None)
    job = AnswerJob(
        tool=tool,
        caller=caller_of(ctx),
        view=view,
        listener=progress_sender(ctx),
        redact=state.redact,
        partial_cap=state.settings.max_output_chars,
    )
    try:
        detacher.start(job, body, lambda stopped: job_stopped_result(state, stopped))
    except TooManyDetached as exc:
        return refusal_result(state, _too_many(exc, detacher.max_detached))
    if await detacher.wait(job):
        assert job.result is not None
        return with_status(tool, job.result, None)  # finished before the detach limit: no id to fetch it by
    return running_result(state, tool, view, job.partials(), job.elapsed_s(), job.id)


def _too_many(exc: TooManyDetached, limit: int) -> CallRefused:
    return CallRefused(
        "too_many_detached",
        f"{exc.running} calls are already running on in this server after returning `running` (at most {limit}, "
        "MCP_LLM_MAX_DETACHED), so this one was not started. Wait for them with get_answer, or stop one with "
        "cancel_answer, then call again.",
        {"running": exc.running, "limit": limit, "retryable": True},
    )
