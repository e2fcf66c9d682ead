"""`get_answer` and `cancel_answer`: a detached call's result, fetched or stopped later, from any server process
on the same database."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from ..answers import AnswerJob, dump_result, load_result
from ..answers.remote import POLL_S, owner_gone
from ..callers import Caller
from ..pipeline import CallRefused, refusal_result
from ..progress import SendProgress, plain_tail
from ..render import ERROR_META_KEY, success_result
from ..sdk_adapter import app_state, caller_identity, progress_sender
from ..state import AppState
from ..store import StoredAnswer, StoreError
from .running import ANSWER_META_KEY, running_result, stopped_result, with_status

__all__ = ["CancelResult", "register_answer_tools"]

CANCEL_WAIT_S = 15.0  # how long cancel_answer waits for the call to end and its cost to be settled
# An id with no row yet is waited for this long at most (a mistyped one should not hold the caller long).
APPEAR_WAIT_S = 5.0
# ...and at least this long, whatever `wait_s`: the process that returned the id writes its row after a cold
# database open (0.2-0.6 s measured after its `running` result went out, on a 2-core machine).
ROW_LAG_S = 2.0

AnswerId = Annotated[
    str, Field(min_length=1, max_length=100, description="The `answer_id` of a result whose status was `running`.")
]
WaitS = Annotated[
    float | None,
    Field(
        ge=0,
        le=3600,
        description="How long to wait for the answer, in seconds: at most the server's detach limit "
        "(MCP_LLM_DETACH_AFTER_S), which is also the default. 0 returns at once with the text so far.",
    ),
]


CancelStatus = Literal["cancelled", "complete", "interrupted", "running"]


class CancelResult(BaseModel):
    answer_id: str
    status: CancelStatus = Field(
        description="`cancelled`: stopped now. `complete` or `interrupted`: it had already ended, nothing was "
        "cancelled. `running`: the cancel was asked for, and the process running it has not confirmed yet."
    )
    message: str = Field(description="What happened, and what was charged.")
    charges: list[str] = Field(default_factory=list, description="What the cancelled call had consumed, charged.")
    partial_text: str = Field(default="", description="The answer text written before it was cancelled.")


def _refused(state: AppState, kind: str, message: str, **details: Any) -> CallToolResult:
    return refusal_result(state, CallRefused(kind, message, details or None))


def _unknown(state: AppState, answer_id: str) -> CallToolResult:
    days = state.settings.conversation_max_age_days
    kept = f"answers are kept {days:g} days (MCP_LLM_CONVERSATION_MAX_AGE_DAYS)" if days > 0 else "answers are kept"
    return _refused(
        state,
        "unknown_answer",
        f'No answer has the id "{answer_id}" on this server: check the id (copy it from the `running` result); '
        f"{kept}, and a server on another database cannot see it. If the id came back moments ago from another "
        "server process, it may not be stored yet (its database was busy): call get_answer again in a few seconds.",
        retryable=True,
    )


async def _interrupt(state: AppState, stored: StoredAnswer) -> StoredAnswer | None:
    """Record that the process running `stored` is gone; the answer as it now stands."""
    result = stopped_result(
        state,
        tool=stored.tool,
        answer_id=stored.id,
        why="interrupted",
        elapsed_s=stored.heartbeat_at - stored.created_at,
        partials=stored.partials,
        charges=[],
    )
    await state.detacher.store.mark_interrupted(stored.id, dump_result(result))
    return await state.detacher.store.get(stored.id)


async def _poll(
    state: AppState, stored: StoredAnswer, wait_s: float, listener: SendProgress | None = None
) -> StoredAnswer | None:
    """Read an answer another process runs until it ends or `wait_s` passes; its newer text sent to `listener`."""
    until = anyio.current_time() + wait_s
    sent = 0
    while True:
        if owner_gone(stored.owner, stored.heartbeat_at, time.time()):
            return await _interrupt(state, stored)
        left = until - anyio.current_time()
        if left <= 0:
            return stored
        await anyio.sleep(min(POLL_S, left))
        fresh = await state.detacher.store.get(stored.id)
        if fresh is None or fresh.status != "running":
            return fresh
        if listener is not None and fresh.partials != stored.partials:
            sent += 1
            text = state.redact("\n\n".join(fresh.partials.values()))
            await listener(float(sent), plain_tail(text, state.settings.progress_tail_chars))
        stored = fresh


def _local(state: AppState, answer_id: str, caller: Caller) -> AnswerJob | None:
    """The job when this process runs it and it is the caller's (another's behaves as if it did not exist)."""
    job = state.detacher.local(answer_id)
    return job if job is not None and caller.owns(job.caller) else None


async def _appearing(state: AppState, answer_id: str, wait_s: float, caller: Caller) -> StoredAnswer | None:
    """The answer's row, waited for up to `wait_s` when there is none yet: the process that returned its id may not
    have written it yet (its first write waits on a busy database, or a cold open)."""
    until = anyio.current_time() + max(min(wait_s, APPEAR_WAIT_S), ROW_LAG_S)
    while True:
        stored = await state.detacher.store.get(answer_id, caller.scope)
        left = until - anyio.current_time()
        if stored is not None or left <= 0:
            return stored
        await anyio.sleep(min(POLL_S, left))


def _from_store(state: AppState, stored: StoredAnswer) -> CallToolResult:
    if stored.status == "running" or stored.result is None:
        elapsed = time.time() - stored.created_at
        return running_result(state, stored.tool, stored.view, stored.partials, elapsed, stored.id)
    return with_status(stored.tool, load_result(stored.result), stored.id)


def _from_job(state: AppState, job: AnswerJob) -> CallToolResult:
    if job.result is None:
        return running_result(state, job.tool, job.view, job.partials(), job.elapsed_s(), job.id)
    return with_status(job.tool, job.result, job.id)


async def get_answer(ctx: Context[AppState], answer_id: str, wait_s: float | None) -> CallToolResult:
    state = app_state(ctx)
    detacher = state.detacher
    wait = detacher.wait_limit_s if wait_s is None else min(wait_s, detacher.wait_limit_s)
    caller = caller_identity(ctx)
    job = _local(state, answer_id, caller)
    if job is not None:
        if not job.done.is_set():
            await detacher.wait_for(job, wait, progress_sender(ctx))
        return _from_job(state, job)
    try:
        stored = await _appearing(state, answer_id, wait, caller)
        if stored is not None and stored.status == "running":
            stored = await _poll(state, stored, wait, progress_sender(ctx))
    except StoreError as exc:
        return _refused(state, "store_unavailable", f"The answer could not be read: {exc}", retryable=exc.transient)
    if stored is None:
        return _unknown(state, answer_id)
    return _from_store(state, stored)


_NOT_CONFIRMED = (
    "The cancel was asked for; the server process running this answer has not confirmed it yet (it checks about "
    "once a second). get_answer shows when it has stopped."
)


def _cancel_report(answer_id: str, result: CallToolResult | None, asked: bool) -> CancelResult:
    """What cancel_answer says of the call's result after the cancel (None: it has not ended yet)."""
    if result is None:
        return CancelResult(answer_id=answer_id, status="running", message=_NOT_CONFIRMED)
    meta = result.meta or {}
    ended = meta.get(ANSWER_META_KEY, {}).get("status")
    if ended == "cancelled" and asked:
        details = meta.get(ERROR_META_KEY, {}).get("error", {})
        return CancelResult(
            answer_id=answer_id,
            status="cancelled",
            message=details.get("message", "Cancelled."),
            charges=details.get("charges", []),
            partial_text=details.get("partial_text", ""),
        )
    status: CancelStatus = "interrupted" if ended == "interrupted" else "complete"
    message = f"The answer had already ended ({status}): nothing was cancelled. get_answer returns it."
    return CancelResult(answer_id=answer_id, status=status, message=message)


def _report(answer_id: str, result: CallToolResult | None, asked: bool) -> CallToolResult:
    report = _cancel_report(answer_id, result, asked)
    return success_result(report.message, report.model_dump(mode="json"))


async def cancel_answer(ctx: Context[AppState], answer_id: str) -> CallToolResult:
    state = app_state(ctx)
    detacher = state.detacher
    caller = caller_identity(ctx)
    job = _local(state, answer_id, caller)
    if job is not None:
        running = not job.done.is_set()
        if running:
            await detacher.cancel(job, CANCEL_WAIT_S)
        return _report(answer_id, job.result, asked=running)
    try:
        stored = await _appearing(state, answer_id, ROW_LAG_S, caller)
        asked = stored is not None and stored.status == "running"
        if stored is not None and asked:
            await detacher.store.request_cancel(answer_id)
            stored = await _poll(state, stored, CANCEL_WAIT_S)
    except StoreError as exc:
        return _refused(
            state, "store_unavailable", f"The cancel could not be asked for: {exc}", retryable=exc.transient
        )
    if stored is None:
        return _unknown(state, answer_id)
    result = None if stored.status == "running" or stored.result is None else load_result(stored.result)
    return _report(answer_id, result, asked)


def register_answer_tools(server: MCPServer) -> None:
    @server.tool(
        name="get_answer",
        title="Get a detached answer",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True),
        description="Wait for the answer of a model call that returned `status: running` (it outlived this "
        "server's detach limit, MCP_LLM_DETACH_AFTER_S, and went on in the server). Returns the whole result, in "
        "the shape of the tool that started the call, once it is complete; otherwise `running` again with the "
        "newer text so far (call again). Progress streams while it waits.",
    )
    async def get_answer_tool(ctx: Context[AppState], answer_id: AnswerId, wait_s: WaitS = None) -> CallToolResult:
        return await get_answer(ctx, answer_id, wait_s)

    @server.tool(
        name="cancel_answer",
        title="Cancel a detached answer",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False),
        description="Stop a model call that returned `status: running`: its upstream stream is closed at once, "
        "what it had consumed is charged (and said), and its partial text is returned.",
    )
    async def cancel_answer_tool(
        ctx: Context[AppState], answer_id: AnswerId
    ) -> Annotated[CallToolResult, CancelResult]:
        return await cancel_answer(ctx, answer_id)
