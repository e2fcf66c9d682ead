"""How many requests one provider gets at once: a limit that adapts to the provider's 429/529 answers.

TCP's congestion control (RFC 5681) applied to requests instead of segments, as Netflix's concurrency-limits does
for services:

- A success grows the limit by 1 while no overload was seen yet (slow start: the limit doubles per round of
  requests), afterwards by 1 per limit's worth of successes (additive increase). It grows only while at least half
  the limit is in use (RFC 7661's rule): a limit nobody fills proves nothing.
- A 429 or 529 (`rate_limited`, `overloaded`) shrinks it to 0.9x the requests open when the refusal came back (or
  the limit, if fewer; TCP too uses the data in flight, not the window), never below 1. 0.9 is concurrency-limits'
  default ratio: a provider's cap on open requests is passed by one request, and halving would leave half the
  allowance idle. Each further refusal of a request sent before that shrink takes 1 more off (a cap on open
  requests refuses just the requests beyond it: a burst of 16 against a cap of 10 gets 6 refusals, and ends at 9);
  refusals of requests sent earlier still change nothing.
- A `retry-after` holds back every new request to the provider until then (one shared "not before"): requests
  waiting for a slot, retries included, are sent only after it, and then only as many as the shrunk limit allows.
- It never exceeds the ceiling (`MCP_LLM_OPENAI_CONCURRENCY` / `MCP_LLM_ANTHROPIC_CONCURRENCY`).

Waiters are served first come, first served, except that a retry goes first: it has waited its turn once.
A shrink below the number of open requests cancels nothing: they finish, and new ones wait until fewer are open.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeGuard

import anyio
import anyio.lowlevel

from .errors import UpstreamFailure

__all__ = ["BACKOFF_RATIO", "DEFAULT_INITIAL_CONCURRENCY", "AdaptiveLimiter", "is_overload"]

BACKOFF_RATIO = 0.9
# Above the 8 targets of one ask_many and a host's usual burst of parallel calls, so they go out in one wave; low
# enough that a burst against an unknown provider limit costs few refused requests before the first 429 shrinks it.
DEFAULT_INITIAL_CONCURRENCY = 16


def is_overload(exc: BaseException | None) -> TypeGuard[UpstreamFailure]:
    """A provider saying it has too much from us: 429 (rate limited), 529 or 503 (overloaded)."""
    return isinstance(exc, UpstreamFailure) and exc.kind in ("rate_limited", "overloaded")


@dataclass(eq=False)
class _Grant:
    """One request's slot, and the limit's epoch when it was sent."""

    epoch: int = 0
    granted: bool = False
    event: anyio.Event = field(default_factory=anyio.Event)


class AdaptiveLimiter:
    """The requests open to one provider at once; `async with limiter.slot(): ...` around each request."""

    def __init__(self, *, initial: int, ceiling: int, max_hold_s: float = 60.0) -> None:
        if not 1 <= initial <= ceiling:
            raise ValueError(f"the initial limit ({initial}) must be between 1 and the ceiling ({ceiling})")
        self.ceiling = ceiling
        self.max_hold_s = max_hold_s
        self._window = float(initial)
        self._threshold = float(ceiling)  # slow start until the first overload
        self._epoch = 0
        self._open = 0
        self._queue: deque[_Grant] = deque()
        self._not_before = -math.inf  # on anyio's clock

    @property
    def limit(self) -> int:
        """Requests that may be open now."""
        return max(1, int(self._window))

    @property
    def open(self) -> int:
        return self._open

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def hold_remaining(self) -> float:
        """Seconds until new requests may be sent again after a `retry-after` (0 when none holds them)."""
        return max(0.0, self._not_before - anyio.current_time())

    def slot(self, *, retry: bool = False) -> _Slot:
        """One request's slot: waits for it on entry, reports the request's outcome on exit."""
        return _Slot(self, retry)

    # --- acquiring ---------------------------------------------------------------------------------------

    async def _acquire(self, retry: bool) -> _Grant:
        await anyio.lowlevel.checkpoint_if_cancelled()
        grant = _Grant()
        if not self._queue and self._may_send():
            self._take(grant)
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return grant
        if retry:
            self._queue.appendleft(grant)
        else:
            self._queue.append(grant)
        try:
            while not grant.granted:
                grant.event = anyio.Event()
                hold = self._not_before - anyio.current_time()
                with anyio.move_on_after(hold if hold > 0 else math.inf):
                    await grant.event.wait()
                if not grant.granted:  # the hold ended (or moved): whoever notices first sends the next ones
                    self._grant_waiters()
        except BaseException:
            if grant.granted:  # granted, then cancelled before it could be used: hand the slot on
                self._open -= 1
                self._grant_waiters()
            else:
                self._queue.remove(grant)
            raise
        return grant

    def _may_send(self) -> bool:
        return self._open < self.limit and anyio.current_time() >= self._not_before

    def _take(self, grant: _Grant) -> None:
        self._open += 1
        grant.epoch = self._epoch
        grant.granted = True

    def _grant_waiters(self) -> None:
        while self._queue and self._may_send():
            grant = self._queue.popleft()
            self._take(grant)
            grant.event.set()

    # --- outcomes ----------------------------------------------------------------------------------------

    def _release(self, grant: _Grant, exc: BaseException | None) -> None:
        open_before = self._open
        self._open -= 1
        if exc is None:
            self._grow(open_before)
        elif is_overload(exc):
            self._back_off(grant, open_before, exc.retry_after_s)
        self._grant_waiters()

    def _grow(self, open_before: int) -> None:
        if open_before * 2 < self._window:
            return
        step = 1.0 if self._window < self._threshold else 1.0 / self._window
        self._window = min(self._window + step, float(self.ceiling))

    def _back_off(self, grant: _Grant, open_before: int, retry_after_s: float | None) -> None:
        if retry_after_s:
            self._hold(retry_after_s)
        if grant.epoch == self._epoch:  # the first refusal of a request sent at the current limit
            self._window = max(1.0, min(self._window, float(open_before)) * BACKOFF_RATIO)
            self._epoch += 1
        elif grant.epoch == self._epoch - 1:  # another one sent at the limit just shrunk: one more too many
            self._window = max(1.0, self._window - 1.0)
        self._threshold = min(self._threshold, self._window)

    def _hold(self, seconds: float) -> None:
        until = anyio.current_time() + min(seconds, self.max_hold_s)
        if until > self._not_before:
            self._not_before = until
            for waiter in self._queue:  # wake them to time the new hold
                waiter.event.set()


class _Slot:
    def __init__(self, limiter: AdaptiveLimiter, retry: bool) -> None:
        self._limiter = limiter
        self._retry = retry
        self._grant: _Grant | None = None

    async def __aenter__(self) -> None:
        self._grant = await self._limiter._acquire(self._retry)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._grant is not None
        self._limiter._release(self._grant, exc)
