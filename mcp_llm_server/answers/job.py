"""One model tool call as a job that can outlive its request: its partial text, its listener, its end.

The job's task runs the tool's body with the job as `current_job()`, so the call pipeline sends progress to whoever
listens now (the request that started it, then a `get_answer` waiting for it) and records the answer's text as it
streams, to show it while the call is still running.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Literal

import anyio
from mcp.types import CallToolResult

from ..progress import FanoutProgress, Progress, SendProgress
from ..render import cap_texts

__all__ = [
    "AnswerJob",
    "PartialText",
    "RecordingFanout",
    "RecordingProgress",
    "StopReason",
    "current_job",
    "new_answer_id",
]

StopReason = Literal["cancelled", "interrupted"]

_current: ContextVar[AnswerJob | None] = ContextVar("mcp_llm_server_answer_job", default=None)


def current_job() -> AnswerJob | None:
    """The job the running tool call belongs to (None outside one, e.g. with detaching off)."""
    return _current.get()


def new_answer_id() -> str:
    return "ans_" + secrets.token_urlsafe(18)


class PartialText:
    """One stream's answer text so far, at most `cap` characters of it (no more is ever shown while running)."""

    __slots__ = ("_cap", "_chars", "_job", "_parts")

    def __init__(self, job: AnswerJob, cap: int) -> None:
        self._job = job
        self._cap = cap
        self._parts: list[str] = []
        self._chars = 0

    def add(self, delta: str) -> None:
        if self._chars >= self._cap:
            return
        delta = delta[: self._cap - self._chars]
        self._parts.append(delta)
        self._chars += len(delta)
        self._job.changes += 1

    def text(self) -> str:
        joined = "".join(self._parts)
        self._parts = [joined]
        return joined


class AnswerJob:
    """What the server knows of one call while it runs, and its result once it ends."""

    def __init__(
        self,
        *,
        tool: str,
        caller: str,
        view: dict[str, object],
        listener: SendProgress | None,
        redact: Callable[[str], str],
        partial_cap: int,
    ) -> None:
        self.id = new_answer_id()
        self.tool = tool
        self.caller = caller
        self.view = view  # what the tool's `running` result is drawn from besides the partial text
        self.listener = listener
        self.started = anyio.current_time()
        self.started_wall = time.time()
        self.changes = 0  # rises with every recorded delta: whether the partial text needs writing again
        self.detached = False
        self.stored = anyio.Event()  # set once the store has its row (or could not take it)
        self.done = anyio.Event()
        self.settled = anyio.Event()  # set once the final result is stored (or could not be)
        self.result: CallToolResult | None = None
        self.stop_reason: StopReason | None = None
        self.charges: list[str] = []  # what a cancelled answer was charged, one sentence per upstream request
        self.scope = anyio.CancelScope()
        self._redact = redact
        self._partial_cap = partial_cap
        self._partials: dict[str, PartialText] = {}

    def enter(self) -> None:
        """Make this the current job of the calling task (the job's own task, running the tool's body)."""
        _current.set(self)

    def elapsed_s(self) -> float:
        return anyio.current_time() - self.started

    async def send(self, progress: float, message: str) -> None:
        listener = self.listener
        if listener is not None:
            await listener(progress, message)

    def listen(self, listener: SendProgress | None) -> None:
        self.listener = listener

    def unlisten(self, listener: SendProgress | None) -> None:
        if self.listener is listener:
            self.listener = None

    def open_partial(self, label: str) -> PartialText:
        """A fresh partial text for `label` (a later attempt under the same label replaces the earlier one's)."""
        partial = PartialText(self, self._partial_cap)
        self._partials[label] = partial
        self.changes += 1
        return partial

    def partials(self) -> dict[str, str]:
        """Each stream's text so far, with the server's secrets masked; together at most the output cap (several
        streams share it as the answers of a finished `ask_many` do)."""
        texts = {label: self._redact(partial.text()) for label, partial in self._partials.items()}
        return cap_texts(texts, self._partial_cap)

    def stop(self, reason: StopReason) -> None:
        """Cancel the call: its upstream stream is closed, what it consumed is charged, its result says why."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.scope.cancel()

    def finish(self, result: CallToolResult) -> None:
        self.result = result
        self.done.set()


class RecordingProgress:
    """A `Progress` that also records the answer's text into the job."""

    listening = True

    def __init__(self, inner: Progress, partial: PartialText) -> None:
        self._inner = inner
        self._partial = partial

    def text(self, delta: str) -> None:
        self._partial.add(delta)
        self._inner.text(delta)

    def reasoning(self, delta: str) -> None:
        self._inner.reasoning(delta)

    async def status(self, message: str) -> None:
        await self._inner.status(message)

    def answered(self) -> None:
        self._inner.answered()


class RecordingFanout:
    """A `FanoutProgress` whose channels record each target's text into the job."""

    listening = True

    def __init__(self, inner: FanoutProgress, job: AnswerJob) -> None:
        self._inner = inner
        self._job = job

    def channel(self, label: str) -> Progress:
        return RecordingProgress(self._inner.channel(label), self._job.open_partial(label))

    def done(self, label: str) -> None:
        self._inner.done(label)

    async def status(self, message: str) -> None:
        await self._inner.status(message)

    async def flush(self) -> None:
        await self._inner.flush()
