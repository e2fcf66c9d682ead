"""One model call, done properly: a concurrency slot, retries inside a deadline, a stall limit, progress."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from .errors import UpstreamFailure
from .progress import Progress
from .providers.base import Completion, LLMRequest, Provider
from .resilience import RetryPolicy, run_with_retries

__all__ = ["CallLimits", "CallOutcome", "run_call"]


@dataclass(frozen=True, slots=True)
class CallLimits:
    timeout_s: float
    stall_s: float
    policy: RetryPolicy


@dataclass(frozen=True, slots=True)
class CallOutcome:
    completion: Completion
    attempts: int
    latency_ms: float


class _ForwardingSink:
    """Collects the answer of the current attempt; forwards each delta (answer or reasoning) to the progress relay."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.parts: list[str] = []

    async def text(self, delta: str) -> None:
        self.parts.append(delta)
        self._progress.text(delta)

    async def reasoning(self, delta: str) -> None:
        # Not part of the answer: a failure after reasoning alone is still retried.
        self._progress.reasoning(delta)


async def run_call(
    provider: Provider,
    request: LLMRequest,
    *,
    limiter: anyio.CapacityLimiter,
    limits: CallLimits,
    progress: Progress,
) -> CallOutcome:
    """Stream one answer; raise `UpstreamFailure` (with attempts and any partial text) when it cannot be had.

    Retries happen only before the first delta was forwarded: after that a failure ends the call.
    """
    started = anyio.current_time()
    deadline = started + limits.timeout_s
    sink = _ForwardingSink(progress)
    attempts_made = 0
    waiting_for_slot = False

    async def attempt(number: int) -> Completion:
        nonlocal attempts_made, waiting_for_slot
        attempts_made = number
        sink.parts.clear()
        waiting_for_slot = True
        async with limiter:
            waiting_for_slot = False
            try:
                return await provider.stream(request, sink, stall_s=limits.stall_s)
            except UpstreamFailure as failure:
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
        with anyio.fail_after(max(deadline - anyio.current_time(), 0.0)):
            completion, attempts = await run_with_retries(
                attempt, limits.policy, deadline=deadline, on_retry=announce_retry
            )
    except TimeoutError:
        detail = f"no complete answer within the call's {limits.timeout_s:g} s limit"
        hint = ""
        if waiting_for_slot:  # the limit ran out before the request could even be sent
            detail += (
                f"; it was still waiting for a free slot (all {limiter.total_tokens:g} concurrent "
                f"{provider.label} requests this server allows were in use)"
            )
            hint = "Too many calls are running at once: call again in a little while, or with a larger timeout_s."
        raise UpstreamFailure(
            provider.label,
            "deadline",
            detail=detail,
            attempts=attempts_made - 1 if waiting_for_slot else attempts_made,
            partial_text="".join(sink.parts),
            hint=hint,
        ) from None
    latency_ms = (anyio.current_time() - started) * 1000.0
    return CallOutcome(completion=completion, attempts=attempts, latency_ms=round(latency_ms, 1))
