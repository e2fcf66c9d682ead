"""The one path of every model tool: its deadline, context, provider, budget, answer, progress and saved turns.

A tool opens a `ModelCall` with `model_call(...)` (the deadline starts then), asks it for answers, saves the turns
and renders the result; every refusal on the way is a `CallRefused` with a `kind`, rendered by `refusal_result`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult

from ..aliases import AliasMismatch, model_for
from ..answers import AnswerJob, RecordingFanout, RecordingProgress, current_job
from ..errors import ProviderNotConfigured, UpstreamFailure
from ..progress import FanoutProgress, Progress, SendProgress, fanout_relay, progress_relay
from ..providers.base import LLMRequest, Provider, ProviderId
from ..render import error_result
from ..sdk_adapter import app_state, caller_identity, progress_sender
from ..settings import Settings
from ..state import AppState, ProviderSlot
from ..store import CALLER_SCOPE_PREFIX, BudgetExceeded, NewTurn, Reservation, StoreError
from .context import CallContext, ContextRefused, prepare_context
from .deadline import Deadline, DeadlineExceeded
from .metering import Meter, Metered, refusal_details, shared_refusal
from .policy import CallLimits, budget_caps, call_limits
from .run import Consumed, run_call
from .targets import TargetInvalid, default_model

__all__ = ["CallRefused", "ModelCall", "deadline_refusal", "model_call", "model_of", "refusal_result"]

logger = logging.getLogger(__name__)

# A reservation outlives its call by this much before another process may count it as abandoned.
LEASE_MARGIN_S = 60.0
# A paid answer is saved even when the deadline has run out; this long at most.
SAVE_GRACE_S = 10.0


class CallRefused(Exception):
    """The call cannot go (on): `kind` names why for programs, the message says what to do for models."""

    def __init__(self, kind: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = {"kind": kind, "message": message, **(details or {})}


def deadline_refusal(exc: DeadlineExceeded) -> CallRefused:
    return CallRefused("deadline", str(exc), {"doing": exc.doing, "timeout_s": exc.limit_s, "retryable": True})


def refusal_result(state: AppState, refused: CallRefused) -> CallToolResult:
    return error_result(state, str(refused), {"error": refused.details})


def model_of(state: AppState, provider_id: ProviderId, model: str | None) -> str:
    """The concrete model a call to one provider asks: its default, an alias of its own, or `model` as given.
    Raises `CallRefused` for an alias of another provider (or a failover alias), or no default model."""
    try:
        if model is None:
            return default_model(state.slots[provider_id])
        return model_for(state.settings.model_aliases, provider_id, model, model)
    except AliasMismatch as exc:
        raise CallRefused("alias_mismatch", str(exc)) from None
    except TargetInvalid as exc:
        raise CallRefused("invalid_target", str(exc)) from None


@dataclass
class ModelCall:
    state: AppState
    tool: str
    deadline: Deadline
    limits: CallLimits
    context: CallContext
    caller: str
    send: SendProgress | None
    saves_turns: bool = True  # False: the ledger rows name no conversation (extract_json keeps none)
    job: AnswerJob | None = None  # set when the call runs as a job that may detach from its request
    caller_sees_all: bool = True  # False: other callers' spending is not this caller's to see
    notes: list[str] = field(default_factory=list)  # what went wrong around the answers (their cost not recorded)

    @property
    def settings(self) -> Settings:
        return self.state.settings

    def provider(self, provider_id: ProviderId) -> tuple[ProviderSlot, Provider]:
        slot = self.state.slots[provider_id]
        try:
            return slot, slot.require()
        except ProviderNotConfigured as exc:
            raise CallRefused("not_configured", str(exc), {"variable": exc.variable}) from None

    def check_prompt_size(self, chars: int, what: str = "The prompt") -> None:
        limit = self.settings.max_prompt_chars
        if chars > limit:
            raise CallRefused(
                "prompt_too_long",
                f"{what} is {chars:,} characters; this server accepts at most {limit:,} "
                "(MCP_LLM_MAX_PROMPT_CHARS). Shorten it or send the essential part.",
                {"chars": chars, "limit": limit},
            )

    def request(self, prompt: str, model: str, **fields: Any) -> LLMRequest:
        """A request carrying this call's system text, history and files (fields may override them)."""
        base = LLMRequest(
            prompt=prompt,
            model=model,
            max_tokens=self.settings.max_tokens,
            system=self.context.system,
            history=self.context.history,
            files=self.context.files,
        )
        return replace(base, **{k: v for k, v in fields.items() if v is not None})

    async def answer(self, provider_id: ProviderId, request: LLMRequest, progress: Progress) -> Metered:
        """One metered answer within the call's deadline; raises `CallRefused` (budget) or `UpstreamFailure`."""
        slot, provider = self.provider(provider_id)
        conversation_id = self.context.conversation_id if self.saves_turns else None
        meter = Meter(self.state.spend, self.state.pricing, self.tool, self.caller, conversation_id)

        try:
            with self.deadline.bound("reserving the call's cost against the budget"):
                reservation = await meter.reserve(
                    provider_id,
                    request,
                    budget_caps(self.settings, provider_id, self.caller),
                    lease_s=self.deadline.remaining() + LEASE_MARGIN_S,
                )
        except BudgetExceeded as refused:
            if not self.caller_sees_all and not refused.cap.scope.startswith(CALLER_SCOPE_PREFIX):
                raise CallRefused("budget_exceeded", *shared_refusal(refused)) from None
            raise CallRefused("budget_exceeded", str(refused), refusal_details(refused)) from None
        except StoreError as exc:  # a budget is set but cannot be checked: nothing is sent unchecked
            raise CallRefused(
                "budget_unavailable",
                f"The budget could not be checked, so no request was sent: {exc}",
                {"store_kind": exc.kind, "retryable": exc.transient},
            ) from None
        except DeadlineExceeded as exc:
            raise deadline_refusal(exc) from None
        consumed = Consumed()
        started = anyio.current_time()
        try:
            outcome = await run_call(
                provider,
                request,
                limiter=slot.limiter,
                limits=self.limits,
                deadline=self.deadline,
                progress=progress,
                consumed=consumed,
            )
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()) and consumed.requests:
                await self._charge_cut_short(meter, reservation, provider_id, request, consumed, started)
            else:
                await meter.release(reservation)
            if isinstance(exc, UpstreamFailure):
                exc.partial_text = self.state.redact(exc.partial_text)
            raise
        # The server's own secrets never go out or into the store, even when a model echoes one.
        outcome.completion.text = self.state.redact(outcome.completion.text)
        metered = await meter.settle(reservation, provider_id, request, outcome)
        if metered.note and metered.note not in self.notes:
            self.notes.append(metered.note)
        return metered

    async def _charge_cut_short(
        self,
        meter: Meter,
        reservation: Reservation,
        provider_id: ProviderId,
        request: LLMRequest,
        consumed: Consumed,
        started: float,
    ) -> None:
        """A cancelled answer still cost what it consumed: charge an estimate (ledger row, budgets), and tell the
        job, whose result reports it."""
        latency_ms = round((anyio.current_time() - started) * 1000.0, 1)
        metered = await meter.settle_consumed(reservation, provider_id, request, consumed, latency_ms)
        if self.job is None:
            return
        usage = metered.outcome.completion.usage
        cost = f"${metered.cost.usd_float:.6f}" if metered.cost.usd_float is not None else "an unknown price"
        self.job.charges.append(
            f"{self.state.slots[provider_id].label} {request.model}: about {usage.input_tokens:,} input and "
            f"{usage.output_tokens:,} output tokens (estimated: the stream was closed before the provider reported "
            f"usage), {cost}" + (f"; {metered.note}" if metered.note else "")
        )

    def _relay_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            "interval_s": s.progress_interval_s,
            "tail_chars": s.progress_tail_chars,
            "heartbeat_s": s.heartbeat_s,
            "view": self.state.redact.tail,  # the server's secrets never stream out, even mid-answer
        }

    def progress(self, waiting_for: str, prefix: str = "") -> AbstractAsyncContextManager[Progress]:
        """The progress relay of one answer (a no-op when the caller listens for none and the call cannot detach);
        a job records the answer's text too, labelled `waiting_for`."""
        relay = progress_relay(self.send, prefix=prefix, waiting_for=waiting_for, **self._relay_options())
        return relay if self.job is None else _recording(relay, self.job, waiting_for)

    def fanout_progress(self) -> AbstractAsyncContextManager[FanoutProgress]:
        """One progress relay for several answers at once (`ask_many`); a job records each target's text."""
        relay = fanout_relay(self.send, **self._relay_options())
        return relay if self.job is None else _recording_fanout(relay, self.job)

    async def save(self, turns: Sequence[NewTurn]) -> tuple[str | None, str | None]:
        """Save the turns (a paid answer is saved even past the deadline, within a grace); the conversation id
        (None when not saved) and a note saying why not."""
        with anyio.move_on_after(max(self.deadline.remaining(), SAVE_GRACE_S), shield=True) as scope:
            saved = await self.context.save(self.state, turns)
        if scope.cancelled_caught:
            return None, "This answer could not be saved in time (the database did not answer); it is complete here."
        return saved


@asynccontextmanager
async def _recording(
    relay: AbstractAsyncContextManager[Progress], job: AnswerJob, label: str
) -> AsyncIterator[Progress]:
    async with relay as progress:
        yield RecordingProgress(progress, job.open_partial(label))


@asynccontextmanager
async def _recording_fanout(
    relay: AbstractAsyncContextManager[FanoutProgress], job: AnswerJob
) -> AsyncIterator[FanoutProgress]:
    async with relay as progress:
        yield RecordingFanout(progress, job)


@asynccontextmanager
async def model_call(
    ctx: Context[AppState],
    *,
    tool: str,
    timeout_s: float | None,
    conversation_id: str | None = None,
    system: str | None = None,
    files: list[str] | None = None,
    client_roots: Sequence[Path] = (),
    saves_turns: bool = True,
) -> AsyncIterator[ModelCall]:
    """Start the call's deadline, read its files and history (holding its conversation's lock) and yield it.

    Raises `CallRefused` for every refusal before or during the call, the deadline's included."""
    state = app_state(ctx)
    limits = call_limits(state.settings, timeout_s)
    deadline = Deadline.start(limits.timeout_s)
    job = current_job()
    # A job's progress goes to whoever listens now: the request that started it, later a get_answer waiting for it.
    send = job.send if job is not None else progress_sender(ctx)
    caller = caller_identity(ctx)
    try:
        async with prepare_context(
            state,
            deadline,
            caller,
            conversation_id=conversation_id,
            system=system,
            files=files,
            client_roots=client_roots,
        ) as context:
            yield ModelCall(
                state,
                tool,
                deadline,
                limits,
                context,
                caller.id,
                send,
                saves_turns=saves_turns,
                job=job,
                caller_sees_all=caller.sees_all,
            )
    except ContextRefused as exc:
        raise CallRefused("refused", str(exc)) from None
    except DeadlineExceeded as exc:
        raise deadline_refusal(exc) from None
    except CallRefused:
        raise
    except Exception as exc:  # a bug: still a result that says what happened, never the SDK's generic error
        logger.exception("%s failed unexpectedly", tool)
        raise CallRefused(
            "internal",
            f"{tool} failed unexpectedly ({type(exc).__name__}: {exc}). This is a bug in the server, not in your "
            "arguments; calling again may work. The server's log has the details.",
        ) from None
