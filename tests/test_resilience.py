"""The retry policy on its own: Retry-After parsing, which statuses are retried, and retries inside a deadline."""

from __future__ import annotations

import email.utils
import itertools
import time

import anyio
import pytest

from mcp_llm_server.errors import UpstreamFailure
from mcp_llm_server.resilience import RetryPolicy, parse_retry_after, retry_status, run_with_retries

# A policy whose backoff is a few milliseconds, so the loop runs fast; tests set what they exercise.
QUICK = RetryPolicy(max_attempts=4, backoff_initial_s=0.001, backoff_max_s=0.004, retry_after_max_s=60.0)


def _failure(*, retryable: bool = True, retry_after_s: float | None = None) -> UpstreamFailure:
    return UpstreamFailure("OpenAI", "rate_limited", status=429, retryable=retryable, retry_after_s=retry_after_s)


class Script:
    """An attempt function that raises the scripted failures in order, then returns "ok"; it records its calls."""

    def __init__(self, *failures: UpstreamFailure) -> None:
        self._failures = list(failures)
        self.calls: list[int] = []
        self.called_at: list[float] = []

    async def __call__(self, number: int) -> str:
        self.calls.append(number)
        self.called_at.append(anyio.current_time())
        if self._failures:
            raise self._failures.pop(0)
        return "ok"


class Retries:
    """Records every `on_retry` announcement."""

    def __init__(self) -> None:
        self.seen: list[tuple[UpstreamFailure, int, float]] = []

    async def __call__(self, failure: UpstreamFailure, next_attempt: int, delay_s: float) -> None:
        self.seen.append((failure, next_attempt, delay_s))


def _deadline(seconds: float) -> float:
    return anyio.current_time() + seconds


# --- parse_retry_after -----------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [None, {}, {"content-type": "application/json"}, {"retry-after": ""}])
def test_parse_retry_after_absent(headers: dict[str, str] | None) -> None:
    """No Retry-After header (or an empty one) means no server-requested wait."""
    assert parse_retry_after(headers) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.3"}, 0.3),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after-ms": "300"}, 0.3),
        ({"retry-after-ms": "1500.5"}, 1.5005),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "4"}, 4.0),
    ],
)
def test_parse_retry_after_seconds_and_milliseconds(headers: dict[str, str], expected: float) -> None:
    """`retry-after-ms` wins over `retry-after`; numbers are seconds (ms for the -ms header), never negative."""
    assert parse_retry_after(headers) == pytest.approx(expected)


def test_parse_retry_after_http_date() -> None:
    """An HTTP-date Retry-After is the time left until that date; a date in the past means no wait."""
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    wait = parse_retry_after({"retry-after": future})
    assert wait is not None and 27.0 <= wait <= 31.0
    assert parse_retry_after({"retry-after": past}) == 0.0


def test_parse_retry_after_garbage() -> None:
    """A Retry-After that is neither a number nor a date is ignored."""
    assert parse_retry_after({"retry-after": "whenever you like"}) is None


# --- retry_status ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retry_status_transient(status: int) -> None:
    """408, 409, 429 and every 5xx (Anthropic's 529 included) are worth another attempt."""
    assert retry_status(status) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_retry_status_final(status: int) -> None:
    """Client errors other than 408/409/429 are final."""
    assert retry_status(status) is False


def test_retry_status_x_should_retry_overrides() -> None:
    """The providers' `x-should-retry` header overrides the status rule both ways."""
    assert retry_status(400, {"x-should-retry": "true"}) is True
    assert retry_status(503, {"x-should-retry": "false"}) is False
    assert retry_status(503, {"x-should-retry": "maybe"}) is True


# --- RetryPolicy.backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_cap() -> None:
    """Backoff is min(initial * 2^n, max) scaled by a jitter factor in [0.75, 1]."""
    policy = RetryPolicy(backoff_initial_s=0.5, backoff_max_s=8.0)
    for retries_done, base in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        for _ in range(20):
            assert 0.75 * base <= policy.backoff(retries_done) <= base


# --- run_with_retries ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_success_first_time() -> None:
    """A first attempt that succeeds is returned with attempts=1 and no retry announced."""
    attempt, retries = Script(), Retries()
    assert await run_with_retries(attempt, QUICK, deadline=_deadline(5), on_retry=retries) == ("ok", 1)
    assert attempt.calls == [1]
    assert retries.seen == []


@pytest.mark.anyio
async def test_retryable_failures_then_success() -> None:
    """Retryable failures are retried; the attempt number counts up and each retry is announced first."""
    first, second = _failure(), _failure()
    attempt, retries = Script(first, second), Retries()
    assert await run_with_retries(attempt, QUICK, deadline=_deadline(5), on_retry=retries) == ("ok", 3)
    assert attempt.calls == [1, 2, 3]
    assert [(f, n) for f, n, _ in retries.seen] == [(first, 2), (second, 3)]
    assert all(0 < delay <= QUICK.backoff_max_s for _, _, delay in retries.seen)


@pytest.mark.anyio
async def test_final_failure_not_retried() -> None:
    """A non-retryable failure is raised at once, with attempts=1."""
    attempt = Script(_failure(retryable=False))
    with pytest.raises(UpstreamFailure) as caught:
        await run_with_retries(attempt, QUICK, deadline=_deadline(5))
    assert attempt.calls == [1]
    assert caught.value.attempts == 1


@pytest.mark.anyio
async def test_stops_at_max_attempts() -> None:
    """Retryable failures stop after max_attempts, the last failure is raised with that many attempts."""
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.001, backoff_max_s=0.002)
    failures = [_failure() for _ in range(10)]
    attempt, retries = Script(*failures), Retries()
    with pytest.raises(UpstreamFailure) as caught:
        await run_with_retries(attempt, policy, deadline=_deadline(5), on_retry=retries)
    assert attempt.calls == [1, 2, 3]
    assert caught.value is failures[2]
    assert caught.value.attempts == 3
    assert len(retries.seen) == 2


@pytest.mark.anyio
async def test_retry_after_is_the_wait() -> None:
    """A failure's Retry-After is the delay announced and actually waited before the next attempt."""
    attempt, retries = Script(_failure(retry_after_s=0.2)), Retries()
    assert await run_with_retries(attempt, QUICK, deadline=_deadline(5), on_retry=retries) == ("ok", 2)
    assert [delay for _, _, delay in retries.seen] == [0.2]
    assert attempt.called_at[1] - attempt.called_at[0] >= 0.2


@pytest.mark.anyio
async def test_backoff_is_waited() -> None:
    """Without Retry-After the jittered backoff is both announced and actually waited, on every retry."""
    policy = RetryPolicy(max_attempts=3, backoff_initial_s=0.1, backoff_max_s=0.1)
    attempt, retries = Script(_failure(), _failure()), Retries()
    assert await run_with_retries(attempt, policy, deadline=_deadline(5), on_retry=retries) == ("ok", 3)
    delays = [delay for _, _, delay in retries.seen]
    assert len(delays) == 2 and all(0.075 <= d <= 0.1 for d in delays)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempt.called_at)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True))


@pytest.mark.anyio
async def test_retry_after_longer_than_cap_gives_up_at_once() -> None:
    """A Retry-After above retry_after_max_s is not waited: the failure is raised after 1 attempt, saying why."""
    policy = RetryPolicy(max_attempts=4, backoff_initial_s=0.001, retry_after_max_s=5.0)
    attempt = Script(_failure(retry_after_s=30.0))
    started = anyio.current_time()
    with pytest.raises(UpstreamFailure) as caught:
        await run_with_retries(attempt, policy, deadline=_deadline(120))
    assert anyio.current_time() - started < 2.0
    assert attempt.calls == [1]
    assert caught.value.attempts == 1
    assert "30 s" in caught.value.gave_up and "5 s this server waits" in caught.value.gave_up
    assert "Not retried; the provider asked to wait 30 s" in caught.value.describe()


@pytest.mark.anyio
async def test_retry_after_beyond_deadline_gives_up_at_once() -> None:
    """A Retry-After that would end after the deadline is not waited: 1 attempt, and the message says so."""
    attempt = Script(_failure(retry_after_s=10.0))
    started = anyio.current_time()
    with pytest.raises(UpstreamFailure) as caught:
        await run_with_retries(attempt, QUICK, deadline=_deadline(2.0))
    assert anyio.current_time() - started < 1.5
    assert attempt.calls == [1]
    assert caught.value.attempts == 1
    assert "would not fit in the call's deadline" in caught.value.describe()


@pytest.mark.anyio
async def test_backoff_beyond_deadline_gives_up() -> None:
    """When even the computed backoff no longer fits before the deadline, retrying stops with the last failure."""
    policy = RetryPolicy(max_attempts=10, backoff_initial_s=0.2, backoff_max_s=0.2)
    attempt = Script(*[_failure() for _ in range(10)])
    with pytest.raises(UpstreamFailure) as caught:
        await run_with_retries(attempt, policy, deadline=_deadline(0.5))
    # Waits of 0.15..0.2 s: at most three fit in 0.5 s, and the loop never runs past the deadline by a backoff.
    assert 1 <= len(attempt.calls) <= 4
    assert caught.value.attempts == len(attempt.calls)
    assert "would not fit in the call's deadline" in caught.value.gave_up


@pytest.mark.anyio
async def test_deadline_already_passed() -> None:
    """With the deadline already past, the first failure is final even though it is retryable."""
    attempt = Script(_failure())
    with pytest.raises(UpstreamFailure) as caught:
        await run_with_retries(attempt, QUICK, deadline=anyio.current_time() - 1)
    assert attempt.calls == [1]
    assert caught.value.attempts == 1


@pytest.mark.anyio
async def test_non_upstream_exception_propagates() -> None:
    """An exception that is not an UpstreamFailure (a bug) is neither retried nor wrapped."""
    calls: list[int] = []

    async def attempt(number: int) -> str:
        calls.append(number)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await run_with_retries(attempt, QUICK, deadline=_deadline(5))
    assert calls == [1]
