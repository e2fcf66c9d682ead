"""Retries that fit inside a deadline: which failures to retry, how long to wait, when to give up.

tenacity runs the loop; the SDK clients are built with `max_retries=0` so attempts never multiply.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from .errors import UpstreamFailure

__all__ = ["RetryPolicy", "parse_retry_after", "retry_status", "run_with_retries"]

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def retry_status(status: int, headers: Mapping[str, str] | None = None) -> bool:
    """The providers' own rule: 408, 409, 429 and 5xx (529 included), unless `x-should-retry` says otherwise."""
    if headers is not None:
        should = headers.get("x-should-retry")
        if should == "true":
            return True
        if should == "false":
            return False
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(raw)
    if parsed is None:
        return None
    return max(email.utils.mktime_tz(parsed) - time.time(), 0.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 60.0

    def backoff(self, retries_done: int) -> float:
        """Exponential backoff with jitter, as the OpenAI SDK does it: min(initial * 2^n, max) * (0.75..1)."""
        base = min(self.backoff_initial_s * (2.0**retries_done), self.backoff_max_s)
        return base * (1.0 - 0.25 * random.random())


class _DeadlineBackoff:
    """tenacity `stop` and `wait` in one: decides the next delay once and stops if it cannot fit."""

    def __init__(self, policy: RetryPolicy, deadline: float) -> None:
        self._policy = policy
        self._deadline = deadline
        self._next_delay = 0.0
        self._stopping = False
        self._decided_for = 0

    def stop(self, state: RetryCallState) -> bool:
        self._decide(state)
        return self._stopping

    def wait(self, state: RetryCallState) -> float:
        self._decide(state)
        return self._next_delay

    def _decide(self, state: RetryCallState) -> None:
        # tenacity calls `wait` before `stop` (and before_sleep calls `wait` again): decide once per attempt.
        if self._decided_for != state.attempt_number:
            self._decided_for = state.attempt_number
            self._next_delay = 0.0
            self._stopping = self._should_stop(state)

    def _should_stop(self, state: RetryCallState) -> bool:
        failure = _failure_of(state)
        if state.attempt_number >= self._policy.max_attempts:
            return True
        if failure is not None and failure.retry_after_s is not None:
            delay = failure.retry_after_s
            if delay > self._policy.retry_after_max_s:
                failure.gave_up = (
                    f"; the provider asked to wait {delay:g} s, more than the "
                    f"{self._policy.retry_after_max_s:g} s this server waits"
                )
                return True
        else:
            delay = self._policy.backoff(state.attempt_number - 1)
        remaining = self._deadline - anyio.current_time()
        if delay >= remaining:
            if failure is not None:
                failure.gave_up = f"; the next attempt (in {delay:.1f} s) would not fit in the call's deadline"
            return True
        self._next_delay = delay
        return False


def _failure_of(state: RetryCallState) -> UpstreamFailure | None:
    if state.outcome is None:
        return None
    exc = state.outcome.exception()
    return exc if isinstance(exc, UpstreamFailure) else None


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamFailure) and exc.retryable


async def run_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float,
    on_retry: Callable[[UpstreamFailure, int, float], Awaitable[None]] | None = None,
) -> tuple[T, int]:
    """Run `attempt(n)` until it succeeds, a failure is final, or retrying cannot fit before `deadline`.

    `deadline` is on anyio's clock. Returns the result and the number of attempts made; a final
    `UpstreamFailure` is re-raised with its `attempts` set.
    """
    schedule = _DeadlineBackoff(policy, deadline)

    async def before_sleep(state: RetryCallState) -> None:
        failure = _failure_of(state)
        if on_retry is not None and failure is not None:
            await on_retry(failure, state.attempt_number + 1, schedule.wait(state))

    retrying = AsyncRetrying(
        retry=retry_if_exception(_is_retryable),
        stop=schedule.stop,
        wait=schedule.wait,
        sleep=anyio.sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt_state in retrying:
            with attempt_state:
                attempts = attempt_state.retry_state.attempt_number
                result = await attempt(attempts)
    except UpstreamFailure as failure:
        failure.attempts = attempts
        raise
    return result, attempts
