"""Runs model tool calls as jobs that detach from their request, and keeps detached ones in the store.

Every model tool call runs in the server's own task group (opened for the server's life), not in its request's
task: the request waits for it up to `MCP_LLM_DETACH_AFTER_S`, then returns, and the call goes on. A detached
call's row is written when it detaches, its partial text and heartbeat about once a second (`BEAT_S`), and its
result when it ends; the same write tells it whether another process asked for a cancel. At shutdown the running
calls are stopped and stored as interrupted, what they consumed charged.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp.types import CallToolResult

from ..progress import SendProgress
from ..store import AnswerStatus, AnswerStore, StoreError
from .job import AnswerJob

__all__ = ["BEAT_S", "HOST", "OWNER", "STORE_WAIT_S", "Detacher", "TooManyDetached", "dump_result", "load_result"]

logger = logging.getLogger(__name__)


def _host() -> str:
    """This machine and pid namespace, as an answer's owner names them: a pid means something only in its own
    namespace, and two containers can share a host name (host networking), each server pid 1 of its own."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:")  # "pid:[4026531836]"
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux
        return socket.gethostname()
    return f"{socket.gethostname()}/{boot[:8]}{namespace}"


HOST = _host()
# This process, as the owner of the answers it runs: its host and pid tell a restart apart from a live process.
OWNER = f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}"
BEAT_S = 1.0  # a running detached answer's partial text and heartbeat are written this often at most
STORE_WAIT_S = 0.25  # a detaching request waits this long at most for its row (so another process finds it)
_FINAL_WRITE_S = 10.0  # a finished answer's row is written even during shutdown, this long at most
_FINAL_PAUSES_S = (0.2, 1.0, 3.0)  # ...and tried again after these pauses when the database is momentarily away
_SHUTDOWN_GRACE_S = 15.0
UNSTORED_KEPT = 64  # finished answers kept in memory when the store cannot take them, at most
DEFAULT_WAIT_S = 50.0  # get_answer's longest wait when this server never detaches (answers from other processes)

Body = Callable[[], Awaitable[CallToolResult]]
StoppedResult = Callable[[AnswerJob], CallToolResult]


class TooManyDetached(Exception):
    def __init__(self, running: int) -> None:
        super().__init__(running)
        self.running = running


def dump_result(result: CallToolResult) -> dict[str, Any]:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def load_result(data: dict[str, Any]) -> CallToolResult:
    return CallToolResult.model_validate(data)


class Detacher:
    def __init__(self, store: AnswerStore, *, detach_after_s: float, max_detached: int) -> None:
        self.store = store
        self.detach_after_s = detach_after_s
        self.max_detached = max_detached
        self._jobs: dict[str, AnswerJob] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The task group calls run in, for the server's life; at its end running calls are interrupted."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                with anyio.move_on_after(_SHUTDOWN_GRACE_S, shield=True):
                    await self._interrupt_all()
                tg.cancel_scope.cancel()

    @property
    def wait_limit_s(self) -> float:
        """The longest a get_answer waits: the detach limit, so that it too returns before the host's timeout."""
        return self.detach_after_s if self.detach_after_s > 0 else DEFAULT_WAIT_S

    @property
    def enabled(self) -> bool:
        return self._tg is not None and self.detach_after_s > 0

    def detached_running(self) -> int:
        return sum(1 for job in self._jobs.values() if job.detached and not job.done.is_set())

    def local(self, answer_id: str) -> AnswerJob | None:
        """The job, when this process runs it (or ran it and could not store its result)."""
        return self._jobs.get(answer_id)

    def start(self, job: AnswerJob, body: Body, stopped: StoppedResult) -> None:
        """Run `body` as `job` in the server's task group; raises `TooManyDetached` when no more may detach."""
        if self._tg is None:
            raise RuntimeError("the detacher is not running")
        running = self.detached_running()
        if running >= self.max_detached:
            raise TooManyDetached(running)
        self._jobs[job.id] = job
        self._tg.start_soon(self._run, job, body, stopped)

    async def wait(self, job: AnswerJob) -> bool:
        """Wait for the job until the detach limit; True when it finished, False when it detached.

        A request cancelled before then (the host gave up) stops the call."""
        try:
            with anyio.move_on_after(self.detach_after_s):
                await job.done.wait()
            if not job.done.is_set() and (self.detached_running() >= self.max_detached or self._tg is None):
                await job.done.wait()  # no room to detach (or shutting down): the call stays with its request
        except anyio.get_cancelled_exc_class():
            job.stop("cancelled")
            raise
        if job.done.is_set() or self._tg is None:
            return True
        job.detached = True
        job.listen(None)
        self._tg.start_soon(self._persist, job)
        with anyio.move_on_after(STORE_WAIT_S):
            await job.stored.wait()
        return False

    async def wait_for(self, job: AnswerJob, wait_s: float, listener: SendProgress | None) -> None:
        """Wait up to `wait_s` for a detached job to finish, its progress sent to `listener` meanwhile."""
        job.listen(listener)
        try:
            with anyio.move_on_after(wait_s):
                await job.done.wait()
        finally:
            job.unlisten(listener)

    async def cancel(self, job: AnswerJob, wait_s: float) -> None:
        """Stop the job and wait (up to `wait_s`) until it has ended and its result is stored."""
        job.stop("cancelled")
        with anyio.move_on_after(wait_s):
            await job.settled.wait()

    def _forget(self, job: AnswerJob) -> None:
        self._jobs.pop(job.id, None)

    async def _run(self, job: AnswerJob, body: Body, stopped: StoppedResult) -> None:
        job.enter()
        result: CallToolResult | None = None
        try:
            with job.scope:
                result = await body()
        except anyio.get_cancelled_exc_class():  # the server itself is going (a signal cancels every task at once)
            job.stop("interrupted")
            raise
        except Exception:  # the tools render their own failures: this is a bug, and must not end the server
            logger.exception("%s failed unexpectedly", job.tool)
        finally:
            job.finish(result if result is not None and job.stop_reason is None else stopped(job))
            if not job.detached:
                self._forget(job)
                job.settled.set()

    async def _persist(self, job: AnswerJob) -> None:
        """Write the detached job's row, its partial text about once a second, and its result at the end (also when
        the server is going, within a bound)."""
        created = False
        try:
            created = await self._create(job)
            job.stored.set()
            if created:
                await self._beat_until_done(job)
            await job.done.wait()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(_FINAL_WRITE_S):
                await job.done.wait()
                await self._store_final(job, created)
            job.settled.set()

    async def _beat_until_done(self, job: AnswerJob) -> None:
        changes = job.changes
        while not job.done.is_set():
            with anyio.move_on_after(BEAT_S):
                await job.done.wait()
            if job.done.is_set():
                return
            partials = job.partials() if job.changes != changes else None
            changes = job.changes
            try:
                if await self.store.beat(job.id, partials):
                    logger.info("answer %s: cancel asked for from another process", job.id)
                    job.stop("cancelled")
            except StoreError as exc:
                logger.warning("could not record the progress of answer %s: %s", job.id, exc)

    async def _create(self, job: AnswerJob) -> bool:
        try:
            await self._insert(job)
        except StoreError as exc:
            logger.warning("answer %s could not be stored (only this process can return it): %s", job.id, exc)
            return False
        return True

    async def _insert(self, job: AnswerJob) -> None:
        await self.store.create(
            job.id, tool=job.tool, caller=job.caller, owner=OWNER, view=job.view, partials=job.partials()
        )

    async def _store_final(self, job: AnswerJob, created: bool) -> None:
        assert job.result is not None
        status: AnswerStatus = job.stop_reason or "complete"
        for pause in (*_FINAL_PAUSES_S, None):
            try:
                if not created:
                    await self._insert(job)
                    created = True
                await self.store.finish(job.id, status, dump_result(job.result), job.partials())
            except StoreError as exc:
                if not exc.transient or pause is None:
                    logger.warning("the result of answer %s could not be stored (kept in memory): %s", job.id, exc)
                    self._bound_unstored()
                    return
                await anyio.sleep(pause)
            else:
                self._forget(job)  # the store has it now
                return

    def _bound_unstored(self) -> None:
        """Finished answers the store could not take stay in memory for get_answer, the newest few only."""
        unstored = [job for job in self._jobs.values() if job.done.is_set()]
        for job in unstored[: max(len(unstored) - UNSTORED_KEPT, 0)]:
            self._forget(job)

    async def _interrupt_all(self) -> None:
        jobs = [job for job in self._jobs.values() if not job.done.is_set()]
        for job in jobs:
            job.stop("interrupted")
        for job in jobs:
            await job.settled.wait()
