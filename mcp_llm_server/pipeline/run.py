"""One model answer: a provider slot, retries inside the call's deadline, a stall limit, a cap on what is collected,
progress for every delta."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.lowlevel

from ..adaptive_limit import AdaptiveLimiter
from ..errors import UpstreamFailure
from ..progress import Progress
from ..providers.base import Completion, LLMRequest, Provider, media_refusal_hint
from ..resilience import run_with_retries
from .deadline import Deadline
from .policy import CallLimits, answer_char_cap

__all__ = ["CallOutcome", "Consumed", "run_call"]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    completion: Completion
    attempts: int
    latency_ms: float


@dataclass(slots=True)
class Consumed:
    """What an answer cut short (cancelled) had consumed: whether a request went out, and what streamed back."""

    requests: int = 0
    text: str = ""
    reasoning_chars: int = 0


# An upstream faster than the server reads can keep a stream's task busy without ever suspending (the socket
# always has data): every this many deltas the task yields, so other calls, pings and deadlines get their turn.
YIELD_EVERY_DELTAS = 32


class _CollectingSink:
    """Collects the current attempt's answer, at most `cap` characters of it, and forwards every delta (answer or
    reasoning) to the progress relay. More than `cap` ends the stream: the upstream is sending more than the
    tokens asked for can hold (an endless or runaway stream)."""

    def __init__(self, progress: Progress, cap: int, label: str) -> None:
        self._progress = progress
        self._cap = cap
        self._label = label
        self._deltas = 0
        self.parts: list[str] = []
        self.chars = 0
        self.reasoning_chars = 0

    async def _share_the_loop(self) -> None:
        self._deltas += 1
        if self._deltas % YIELD_EVERY_DELTAS == 0:
            await anyio.lowlevel.checkpoint()

    def reset(self) -> None:
        self.parts.clear()
        self.chars = 0

    async def text(self, delta: str) -> None:
        await self._share_the_loop()
        if self.chars + len(delta) > self._cap:
            self.parts.append(delta[: self._cap - self.chars])
            self.chars = self._cap
            raise UpstreamFailure(
                self._label,
                "too_long",
                detail=f"the answer passed {self._cap:,} characters, more than the tokens asked for can hold, "
                "so the stream was cut",
                hint="The provider sent far more than asked for; call again, or with a smaller max_tokens.",
            )
        self.parts.append(delta)
        self.chars += len(delta)
        self._progress.text(delta)

    async def reasoning(self, delta: str) -> None:
        # Not part of the answer: a failure after reasoning alone is still retried.
        await self._share_the_loop()
        self.reasoning_chars += len(delta)
        self._progress.reasoning(delta)


def _deadline_failure(provider: Provider, limiter: AdaptiveLimiter, limit_s: float, waiting: bool) -> str:
    detail = f"no complete answer within the call's {limit_s:g} s limit"
    if not waiting:
        return detail
    # The limit ran out before the request could even be sent.
    hold = limiter.hold_remaining()
    if hold > 0:
        return detail + (
            f"; it was waiting to send it: {provider.label} asked (retry-after) that no request be sent for "
            f"another {hold:.1f} s"
        )
    return detail + (
        f"; it was still waiting for a free slot (all {limiter.limit} concurrent {provider.label} requests this "
        f"server allows now were in use; the limit adapts to the provider's rate limits, up to {limiter.ceiling})"
    )


async def run_call(
    provider: Provider,
    request: LLMRequest,
    *,
    limiter: AdaptiveLimiter,
    limits: CallLimits,
    deadline: Deadline,
    progress: Progress,
    consumed: Consumed | None = None,
) -> CallOutcome:
    """Stream one answer; raise `UpstreamFailure` (with attempts and any partial text) when it cannot be had.

    Retries happen only before the first delta was forwarded: after that a failure ends the call. Cancelled, it
    fills `consumed` with what the answer had consumed.
    """
    started = anyio.current_time()
    sink = _CollectingSink(progress, answer_char_cap(request), provider.label)
    attempts_made = 0
    waiting_for_slot = False

    async def attempt(number: int) -> Completion:
        nonlocal attempts_made, waiting_for_slot
        attempts_made = number
        sink.reset()
        waiting_for_slot = True
        async with limiter.slot(retry=number > 1):
            waiting_for_slot = False
            if consumed is not None:
                consumed.requests = number
            try:
                return await provider.stream(request, sink, stall_s=limits.stall_s)
            except UpstreamFailure as failure:
                if failure.kind == "bad_request" and not failure.hint:
                    failure.hint = media_refusal_hint(request)
                if sink.parts:
                    failure.retryable = False
                    failure.partial_text = "".join(sink.parts)
                raise

    async def announce_retry(failure: UpstreamFailure, next_attempt: int, delay_s: float) -> None:
        await progress.status(
            f"{failure.describe_briefly()}; retrying in {delay_s:.1f} s "
            f"(attempt {next_attempt} of {limits.policy.max_attempts})"
        )

    try:
        with anyio.fail_after(deadline.remaining()):
            completion, attempts = await run_with_retries(
                attempt, limits.policy, deadline=deadline.ends_at, on_retry=announce_retry
            )
    except anyio.get_cancelled_exc_class():
        if consumed is not None:
            consumed.text = "".join(sink.parts)
            consumed.reasoning_chars = sink.reasoning_chars
        raise
    except TimeoutError:
        hint = "Too many calls are running at once: call again in a little while, or with a larger timeout_s."
        raise UpstreamFailure(
            provider.label,
            "deadline",
            detail=_deadline_failure(provider, limiter, deadline.limit_s, waiting_for_slot),
            attempts=attempts_made - 1 if waiting_for_slot else attempts_made,
            partial_text="".join(sink.parts),
            hint=hint if waiting_for_slot else "",
        ) from None
    progress.answered()
    latency_ms = (anyio.current_time() - started) * 1000.0
    return CallOutcome(completion=completion, attempts=attempts, latency_ms=round(latency_ms, 1))
