"""Which providers this process found unreachable lately, so a failover list does not pay for them on every call.

A provider whose connection failed (after its retries) is passed over by failover lists for `hold_s`, with the
reason; the last target of a list is always asked, and a single-target call always tries. Any answer from the
provider clears it. Each process learns this for itself: replicas share nothing but the database, and a few
seconds of retries per replica is the price of that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DOWN_HOLD_S", "ProviderHealth"]

DOWN_HOLD_S = 30.0


@dataclass(frozen=True, slots=True)
class _Down:
    since: float
    until: float


class ProviderHealth:
    def __init__(self, hold_s: float = DOWN_HOLD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._hold_s = hold_s
        self._clock = clock
        self._down: dict[str, _Down] = {}

    def unreachable(self, provider: str) -> None:
        now = self._clock()
        self._down[provider] = _Down(now, now + self._hold_s)

    def answered(self, provider: str) -> None:
        self._down.pop(provider, None)

    def down_note(self, provider: str) -> str | None:
        """Why to pass `provider` over now (None: ask it)."""
        down = self._down.get(provider)
        now = self._clock()
        if down is None or now >= down.until:
            return None
        return (
            f"not asked: its connection failed {now - down.since:.0f} s ago; it is tried again after "
            f"{down.until - now:.0f} s"
        )
