"""Writes that need not hold up an answer: a call's conversation turn and its ledger row.

An answer is complete once the model has written it; recording it (one or two transactions, about 5 ms of a
short call's 13) happens after the result has gone out, in the server's task group. What reads those rows waits
for the writes it depends on first, so this process never sees its own writes missing: a conversation's next
turn waits for the previous one's write (`settled(key)`), the usage report for every pending ledger row
(`settled()`). The writes run one at a time, in the order they were made, as they would have inline: a
conversation pruned for size loses the one answered least recently, whatever the database's lock order. The
server's shutdown waits for pending writes before the database closes.

A write runs at once, inline, instead (so the caller's result can say what failed) while the database has not
proved itself: before its first write succeeded, and after a deferred write failed until an inline one succeeds
again. Also without a running queue (a store used on its own, or the server shutting down).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["ALL", "Write", "WriteBehind"]

logger = logging.getLogger(__name__)

ALL = ""  # the key every pending write is also filed under
WRITE_BOUND_S = 60.0  # a write the database never answers is given up after this (and logged), not waited on forever
SHUTDOWN_DRAIN_S = 5.0


_QUEUED_MAX = 10_000  # beyond this many pending writes, a new one waits for room (the database is far behind)

Write = Callable[[], Awaitable[str | None]]  # None: written; else why it failed (the write has logged it)


class WriteBehind:
    def __init__(self) -> None:
        self._queue: MemoryObjectSendStream[tuple[Write, anyio.Event, tuple[str, ...]]] | None = None
        self._pending: dict[str, set[anyio.Event]] = {}
        self._trusted = False  # a write succeeded, and none deferred has failed since
        self._give_up_at = math.inf  # set at shutdown: what is still queued then gets SHUTDOWN_DRAIN_S in all
        self._running: set[anyio.CancelScope] = set()  # the writes under way, whose bound shutdown shortens

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run deferred writes until the block ends; on the way out, wait for those still pending."""
        send, receive = anyio.create_memory_object_stream[tuple[Write, anyio.Event, tuple[str, ...]]](_QUEUED_MAX)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain, receive)
            self._queue = send
            try:
                yield
            finally:
                self._queue = None
                self._give_up_at = anyio.current_time() + SHUTDOWN_DRAIN_S
                for scope in self._running:  # a write under way gets no more than the rest
                    scope.deadline = min(scope.deadline, self._give_up_at)
                send.close()  # the drain ends once it has written what is queued

    async def _drain(self, receive: MemoryObjectReceiveStream[tuple[Write, anyio.Event, tuple[str, ...]]]) -> None:
        with anyio.CancelScope(shield=True):  # a shutdown waits for the queue (each write is bounded)
            async with receive:
                async for write, done, filed in receive:
                    await self._run(write, done, filed)

    async def write(self, keys: tuple[str, ...], write: Write) -> str | None:
        """Queue `write` (filed under `keys`), or run it now (see the module's docstring). The write handles its
        own failures and returns why it failed, or None; one that raises is logged and counts as failed. Returns
        the failure when the write ran now, else None (a later one is the write's to tell)."""
        if self._queue is None or not self._trusted:
            await self.settled()  # in order: after what is queued
            failure = await self._attempt(write)
            self._trusted = failure is None
            return failure
        done = anyio.Event()
        filed = (ALL, *keys)
        for key in filed:
            self._pending.setdefault(key, set()).add(done)
        try:
            await self._queue.send((write, done, filed))  # waits only when the queue is full
        except anyio.ClosedResourceError:  # the server began shutting down meanwhile
            return await self._run(write, done, filed)
        except BaseException:
            self._forget(done, filed)
            raise
        return None

    async def _run(self, write: Write, done: anyio.Event, filed: tuple[str, ...]) -> str | None:
        try:
            failure = await self._attempt(write)
            if failure is not None:
                self._trusted = False
            return failure
        finally:
            self._forget(done, filed)

    async def _attempt(self, write: Write) -> str | None:
        try:
            with anyio.CancelScope(deadline=min(anyio.current_time() + WRITE_BOUND_S, self._give_up_at)) as scope:
                self._running.add(scope)
                try:
                    failure = await write()
                finally:
                    self._running.discard(scope)
        except Exception as exc:
            logger.exception("a write failed")
            return f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            logger.warning("a write was given up: the database did not answer in time")
            return "the database did not answer in time"
        return failure

    def _forget(self, done: anyio.Event, filed: tuple[str, ...]) -> None:
        for key in filed:
            events = self._pending.get(key)
            if events is not None:
                events.discard(done)
                if not events:
                    del self._pending[key]
        done.set()

    async def settled(self, key: str = ALL) -> None:
        """Wait for the writes pending now under `key` (by default every one)."""
        for event in list(self._pending.get(key, ())):
            await event.wait()

    def pending(self, key: str = ALL) -> int:
        return len(self._pending.get(key, ()))
