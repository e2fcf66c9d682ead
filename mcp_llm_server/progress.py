"""Relays streamed text to the MCP host as throttled progress notifications.

The first delta goes out at once, later ones at most once per interval (the newest text wins), the
last one is flushed when the stream ends, and status lines (retries) go out at once. Reasoning (an OpenAI
reasoning summary, Anthropic thinking) is relayed the same way in its own messages, marked `[reasoning] `.
When nothing has been sent for `heartbeat_s` (a model thinking silently, a slow first byte), a heartbeat
(`still waiting for OpenAI gpt-5.5 (12 s)…`) goes out, so hosts that reset their timeout on progress keep
waiting. `progress` rises by one per notification. Without a listener, `NullProgress` does nothing at no cost.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import anyio

__all__ = [
    "REASONING_MARK",
    "FanoutProgress",
    "FanoutRelay",
    "NullFanout",
    "NullProgress",
    "Progress",
    "ProgressRelay",
    "TailView",
    "fanout_relay",
    "plain_tail",
    "progress_relay",
]

SendProgress = Callable[[float, str], Awaitable[None]]
# How the last `chars` characters of a text are shown (the call pipeline's masks the server's secrets).
TailView = Callable[[str, int], str]


def plain_tail(text: str, chars: int) -> str:
    return text if len(text) <= chars else "…" + text[len(text) - chars :]


REASONING_MARK = "[reasoning] "


class Progress(Protocol):
    """What the call pipeline reports to; both implementations are cheap to call per delta."""

    listening: bool

    def text(self, delta: str) -> None: ...

    def reasoning(self, delta: str) -> None: ...

    async def status(self, message: str) -> None: ...

    def answered(self) -> None:
        """The answer is complete: no heartbeat says the call still waits for it."""


class NullProgress:
    listening = False

    def text(self, delta: str) -> None:
        pass

    def reasoning(self, delta: str) -> None:
        pass

    async def status(self, message: str) -> None:
        pass

    def answered(self) -> None:
        pass


class _Tail:
    """A growing text, of which a notification carries the last characters."""

    __slots__ = ("_chars", "_parts", "_sent_chars")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._chars = 0
        self._sent_chars = 0

    def add(self, delta: str) -> None:
        self._parts.append(delta)
        self._chars += len(delta)

    def take(self, tail_chars: int, view: TailView) -> str | None:
        """The tail of the text so far if it grew since last taken, else None."""
        if self._chars == self._sent_chars:
            return None
        self._sent_chars = self._chars
        text = "".join(self._parts)
        self._parts = [text]
        return view(text, tail_chars)


def _seconds(elapsed: float) -> str:
    return f"{elapsed:.1f} s" if elapsed < 10 else f"{elapsed:.0f} s"


class _Relay:
    """The throttle, heartbeat and numbering both relays share; `flush` and `_waiting_message` are theirs."""

    listening = True

    def __init__(
        self, send: SendProgress, *, interval_s: float, tail_chars: int, heartbeat_s: float, view: TailView
    ) -> None:
        self._send = send
        self._view = view
        self._interval_s = interval_s
        self._tail_chars = tail_chars
        self._heartbeat_s = heartbeat_s
        self._count = 0
        self._last_sent = -math.inf
        self._started = anyio.current_time()
        self._last_activity = self._started  # the last notification, or the start: when a heartbeat is due from
        self._wake = anyio.Event()
        self._lock = anyio.Lock()
        self._answered = False

    async def run(self) -> None:
        """Flush pending text, at most once per interval, and send heartbeats when silent, until cancelled."""
        while True:
            with anyio.move_on_after(self._until_heartbeat()):
                await self._wake.wait()
            if not self._wake.is_set():
                await self._heartbeat()
                continue
            self._wake = anyio.Event()
            wait = self._last_sent + self._interval_s - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            await self.flush()

    def answered(self) -> None:
        self._answered = True

    def _until_heartbeat(self) -> float | None:
        if self._heartbeat_s <= 0 or self._answered:
            return None
        return max(self._last_activity + self._heartbeat_s - anyio.current_time(), 0.0)

    async def _heartbeat(self) -> None:
        async with self._lock:
            now = anyio.current_time()
            if not self._answered and now - self._last_activity >= self._heartbeat_s:  # nothing went out meanwhile
                await self._emit(self._waiting_message(_seconds(now - self._started)))

    def _waiting_message(self, elapsed: str) -> str:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    async def _emit(self, message: str) -> None:
        self._count += 1
        self._last_sent = self._last_activity = anyio.current_time()
        await self._send(float(self._count), message)


class ProgressRelay(_Relay):
    def __init__(
        self,
        send: SendProgress,
        *,
        interval_s: float,
        tail_chars: int,
        prefix: str = "",
        heartbeat_s: float = 0.0,
        waiting_for: str = "the model",
        view: TailView = plain_tail,
    ) -> None:
        super().__init__(send, interval_s=interval_s, tail_chars=tail_chars, heartbeat_s=heartbeat_s, view=view)
        self._prefix = prefix
        self._waiting_for = waiting_for
        self._text = _Tail()
        self._reasoning = _Tail()

    def text(self, delta: str) -> None:
        self._text.add(delta)
        self._wake.set()

    def reasoning(self, delta: str) -> None:
        self._reasoning.add(delta)
        self._wake.set()

    async def status(self, message: str) -> None:
        async with self._lock:
            await self._emit(f"{self._prefix}{message}")

    async def flush(self) -> None:
        async with self._lock:
            reasoning = self._reasoning.take(self._tail_chars, self._view)
            if reasoning is not None:  # reasoning comes before the answer it leads to
                await self._emit(f"{self._prefix}{REASONING_MARK}{reasoning}")
            text = self._text.take(self._tail_chars, self._view)
            if text is not None:
                await self._emit(self._prefix + text)

    def _waiting_message(self, elapsed: str) -> str:
        return f"{self._prefix}still waiting for {self._waiting_for} ({elapsed})…"


async def _stop(lock: anyio.Lock, scope: anyio.CancelScope) -> None:
    """Cancel a relay's task, but never in the middle of a notification: cancelled there, it would be lost
    with its number taken (over Streamable HTTP a send waits until the response stream takes it)."""
    async with lock:
        scope.cancel()


class _Runnable(Protocol):
    _lock: anyio.Lock

    async def run(self) -> None: ...

    async def flush(self) -> None: ...


@asynccontextmanager
async def _running(relay: _Runnable) -> AsyncIterator[None]:
    """Run the relay's flusher for the duration of the block; flush its last text on a clean exit."""
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run)
        try:
            yield
        except Exception as exc:  # kept out of the task group, which would wrap it in an ExceptionGroup
            failure = exc
        finally:
            if failure is None:
                await _stop(relay._lock, tg.cancel_scope)
            else:
                tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    await relay.flush()


@asynccontextmanager
async def progress_relay(
    send: SendProgress | None,
    *,
    interval_s: float,
    tail_chars: int,
    prefix: str = "",
    heartbeat_s: float = 0.0,
    waiting_for: str = "the model",
    view: TailView = plain_tail,
) -> AsyncIterator[Progress]:
    """A relay running for the duration of the block (its last text flushed on a clean exit), or a no-op.

    `heartbeat_s` > 0: a heartbeat naming `waiting_for` after that long without a notification."""
    if send is None:
        yield NullProgress()
        return
    relay = ProgressRelay(
        send,
        interval_s=interval_s,
        tail_chars=tail_chars,
        prefix=prefix,
        heartbeat_s=heartbeat_s,
        waiting_for=waiting_for,
        view=view,
    )
    async with _running(relay):
        yield relay


# --- several streams through one relay (the fan-out tool) ---------------------------------------------------


class FanoutProgress(Protocol):
    """One progress stream for a call that runs several model calls at once."""

    listening: bool

    def channel(self, label: str) -> Progress: ...

    def done(self, label: str) -> None: ...

    async def status(self, message: str) -> None: ...

    async def flush(self) -> None: ...


class NullFanout:
    listening = False

    def channel(self, label: str) -> Progress:
        return NullProgress()

    def done(self, label: str) -> None:
        pass

    async def status(self, message: str) -> None:
        pass

    async def flush(self) -> None:
        pass


class _Channel:
    """One labelled stream of a `FanoutRelay`; what one model call reports to."""

    listening = True

    def __init__(self, relay: FanoutRelay, label: str) -> None:
        self._relay = relay
        self.label = label
        self.text_tail = _Tail()
        self.reasoning_tail = _Tail()
        self.finished = False

    def text(self, delta: str) -> None:
        self.text_tail.add(delta)
        self._relay.wake()

    def reasoning(self, delta: str) -> None:
        self.reasoning_tail.add(delta)
        self._relay.wake()

    async def status(self, message: str) -> None:
        await self._relay.status(f"[{self.label}] {message}")

    def answered(self) -> None:
        self._relay.done(self.label)


class FanoutRelay(_Relay):
    """Like `ProgressRelay`, for several labelled streams sharing one throttle, one heartbeat and one rising
    `progress`.

    Each flush sends one notification per stream whose text grew (`[label] …tail`, reasoning as
    `[label] [reasoning] …tail`); status lines go out at once; a heartbeat names the targets still running.
    """

    def __init__(
        self,
        send: SendProgress,
        *,
        interval_s: float,
        tail_chars: int,
        heartbeat_s: float = 0.0,
        view: TailView = plain_tail,
    ) -> None:
        super().__init__(send, interval_s=interval_s, tail_chars=tail_chars, heartbeat_s=heartbeat_s, view=view)
        self._channels: list[_Channel] = []

    def channel(self, label: str) -> Progress:
        channel = _Channel(self, label)
        self._channels.append(channel)
        return channel

    def done(self, label: str) -> None:
        for channel in self._channels:
            if channel.label == label:
                channel.finished = True

    def wake(self) -> None:
        self._wake.set()

    async def status(self, message: str) -> None:
        async with self._lock:
            await self._emit(message)

    async def flush(self) -> None:
        async with self._lock:
            for channel in self._channels:
                reasoning = channel.reasoning_tail.take(self._tail_chars, self._view)
                if reasoning is not None:
                    await self._emit(f"[{channel.label}] {REASONING_MARK}{reasoning}")
                text = channel.text_tail.take(self._tail_chars, self._view)
                if text is not None:
                    await self._emit(f"[{channel.label}] {text}")

    def _waiting_message(self, elapsed: str) -> str:
        running = [channel.label for channel in self._channels if not channel.finished]
        if not running:
            return f"still working ({elapsed})…"
        return f"still waiting for {', '.join(running)} ({elapsed})…"


@asynccontextmanager
async def fanout_relay(
    send: SendProgress | None,
    *,
    interval_s: float,
    tail_chars: int,
    heartbeat_s: float = 0.0,
    view: TailView = plain_tail,
) -> AsyncIterator[FanoutProgress]:
    """A fan-out relay running for the duration of the block (its last text flushed on a clean exit), or a no-op."""
    if send is None:
        yield NullFanout()
        return
    relay = FanoutRelay(send, interval_s=interval_s, tail_chars=tail_chars, heartbeat_s=heartbeat_s, view=view)
    async with _running(relay):
        yield relay
