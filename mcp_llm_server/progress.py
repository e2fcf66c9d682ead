"""Relays streamed text to the MCP host as throttled progress notifications.

The first delta goes out at once, later ones at most once per interval (the newest text wins), the
last one is flushed when the stream ends, and status lines (retries) go out at once. `progress`
rises by one per notification. Without a listener, `NullProgress` does nothing at no cost.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import anyio

__all__ = [
    "FanoutProgress",
    "FanoutRelay",
    "NullFanout",
    "NullProgress",
    "Progress",
    "ProgressRelay",
    "fanout_relay",
    "progress_relay",
]

SendProgress = Callable[[float, str], Awaitable[None]]


class Progress(Protocol):
    """What the call pipeline reports to; both implementations are cheap to call per delta."""

    listening: bool

    def text(self, delta: str) -> None: ...

    async def status(self, message: str) -> None: ...


class NullProgress:
    listening = False

    def text(self, delta: str) -> None:
        pass

    async def status(self, message: str) -> None:
        pass


class ProgressRelay:
    listening = True

    def __init__(self, send: SendProgress, *, interval_s: float, tail_chars: int, prefix: str = "") -> None:
        self._send = send
        self._interval_s = interval_s
        self._tail_chars = tail_chars
        self._prefix = prefix
        self._parts: list[str] = []
        self._chars = 0
        self._sent_chars = 0
        self._count = 0
        self._last_sent = -math.inf
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    def text(self, delta: str) -> None:
        self._parts.append(delta)
        self._chars += len(delta)
        self._wake.set()

    async def status(self, message: str) -> None:
        async with self._lock:
            await self._emit(f"{self._prefix}{message}")

    async def run(self) -> None:
        """Flush pending text, at most once per interval, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            wait = self._last_sent + self._interval_s - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if self._chars == self._sent_chars:
                return
            self._sent_chars = self._chars
            await self._emit(self._prefix + self._tail())

    def _tail(self) -> str:
        text = "".join(self._parts)
        self._parts = [text]
        if len(text) <= self._tail_chars:
            return text
        return "…" + text[len(text) - self._tail_chars :]

    async def _emit(self, message: str) -> None:
        self._count += 1
        self._last_sent = anyio.current_time()
        await self._send(float(self._count), message)


async def _stop(lock: anyio.Lock, scope: anyio.CancelScope) -> None:
    """Cancel a relay's task, but never in the middle of a notification: cancelled there, it would be lost
    with its number taken (over Streamable HTTP a send waits until the response stream takes it)."""
    async with lock:
        scope.cancel()


@asynccontextmanager
async def progress_relay(
    send: SendProgress | None, *, interval_s: float, tail_chars: int, prefix: str = ""
) -> AsyncIterator[Progress]:
    """A relay running for the duration of the block (its last text flushed on a clean exit), or a no-op."""
    if send is None:
        yield NullProgress()
        return
    relay = ProgressRelay(send, interval_s=interval_s, tail_chars=tail_chars, prefix=prefix)
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run)
        try:
            yield relay
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


# --- several streams through one relay (the fan-out tool) ---------------------------------------------------


class FanoutProgress(Protocol):
    """One progress stream for a call that runs several model calls at once."""

    listening: bool

    def channel(self, label: str) -> Progress: ...

    async def status(self, message: str) -> None: ...

    async def flush(self) -> None: ...


class NullFanout:
    listening = False

    def channel(self, label: str) -> Progress:
        return NullProgress()

    async def status(self, message: str) -> None:
        pass

    async def flush(self) -> None:
        pass


class _Channel:
    """One labelled text stream of a `FanoutRelay`; what one model call reports to."""

    listening = True

    def __init__(self, relay: FanoutRelay, label: str) -> None:
        self._relay = relay
        self.label = label
        self._parts: list[str] = []
        self._chars = 0
        self._sent_chars = 0

    def text(self, delta: str) -> None:
        self._parts.append(delta)
        self._chars += len(delta)
        self._relay.wake()

    async def status(self, message: str) -> None:
        await self._relay.status(f"[{self.label}] {message}")

    def take_tail(self, tail_chars: int) -> str | None:
        """The tail of the text so far if it grew since last taken, else None."""
        if self._chars == self._sent_chars:
            return None
        self._sent_chars = self._chars
        text = "".join(self._parts)
        self._parts = [text]
        if len(text) <= tail_chars:
            return text
        return "…" + text[len(text) - tail_chars :]


class FanoutRelay:
    """Like `ProgressRelay`, for several labelled streams sharing one throttle and one rising `progress`.

    Each flush sends one notification per stream whose text grew (`[label] …tail`); status lines go out at once.
    """

    listening = True

    def __init__(self, send: SendProgress, *, interval_s: float, tail_chars: int) -> None:
        self._send = send
        self._interval_s = interval_s
        self._tail_chars = tail_chars
        self._channels: list[_Channel] = []
        self._count = 0
        self._last_sent = -math.inf
        self._wake = anyio.Event()
        self._lock = anyio.Lock()

    def channel(self, label: str) -> Progress:
        channel = _Channel(self, label)
        self._channels.append(channel)
        return channel

    def wake(self) -> None:
        self._wake.set()

    async def status(self, message: str) -> None:
        async with self._lock:
            await self._emit(message)

    async def run(self) -> None:
        """Flush pending text, at most once per interval, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            wait = self._last_sent + self._interval_s - anyio.current_time()
            if wait > 0:
                await anyio.sleep(wait)
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            for channel in self._channels:
                tail = channel.take_tail(self._tail_chars)
                if tail is not None:
                    await self._emit(f"[{channel.label}] {tail}")

    async def _emit(self, message: str) -> None:
        self._count += 1
        self._last_sent = anyio.current_time()
        await self._send(float(self._count), message)


@asynccontextmanager
async def fanout_relay(
    send: SendProgress | None, *, interval_s: float, tail_chars: int
) -> AsyncIterator[FanoutProgress]:
    """A fan-out relay running for the duration of the block (its last text flushed on a clean exit), or a no-op."""
    if send is None:
        yield NullFanout()
        return
    relay = FanoutRelay(send, interval_s=interval_s, tail_chars=tail_chars)
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.run)
        try:
            yield relay
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
