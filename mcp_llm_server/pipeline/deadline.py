"""One deadline per tool call: it starts when the call arrives and bounds every step, not only the model's answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

__all__ = ["Deadline", "DeadlineExceeded"]


class DeadlineExceeded(Exception):
    """The call's time limit ran out during a step other than the model's answer (which reports its own)."""

    def __init__(self, limit_s: float, doing: str) -> None:
        self.limit_s = limit_s
        self.doing = doing
        super().__init__(
            f"The call's {limit_s:g} s time limit ran out while {doing}. Call again with a larger timeout_s "
            "(or, if another call holds the same conversation, once it has finished)."
        )


@dataclass(frozen=True, slots=True)
class Deadline:
    limit_s: float
    ends_at: float  # anyio's clock

    @classmethod
    def start(cls, limit_s: float) -> Deadline:
        return cls(limit_s, anyio.current_time() + limit_s)

    def remaining(self) -> float:
        return max(self.ends_at - anyio.current_time(), 0.0)

    @contextmanager
    def bound(self, doing: str) -> Iterator[None]:
        """Run the block within the deadline; raise `DeadlineExceeded` naming `doing` when it runs out."""
        with anyio.CancelScope(deadline=self.ends_at) as scope:
            yield
        if scope.cancelled_caught:
            raise DeadlineExceeded(self.limit_s, doing)
