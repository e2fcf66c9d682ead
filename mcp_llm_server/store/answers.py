"""Detached answers in the shared database: what any process on it needs to fetch or cancel one.

The process running a detached answer creates its row, rewrites its partial text and heartbeat about once a second
(learning in the same statement whether a cancel was asked for), and writes the finished result. Any process reads
the row, asks for a cancel, or marks an answer whose process is gone as interrupted. Rows expire with the
conversations (`max_age_s`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .db import Database

__all__ = ["AnswerStatus", "AnswerStore", "StoredAnswer"]

logger = logging.getLogger(__name__)

AnswerStatus = Literal["running", "complete", "cancelled", "interrupted"]


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    id: str
    tool: str
    caller: str
    status: AnswerStatus
    owner: str
    created_at: float
    heartbeat_at: float
    view: dict[str, Any]
    partials: dict[str, str]
    result: dict[str, Any] | None
    cancel_requested: bool


class AnswerStore:
    def __init__(self, db: Database, *, max_age_s: float | None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.clock = clock

    async def create(
        self, answer_id: str, *, tool: str, caller: str, owner: str, view: dict[str, Any], partials: dict[str, str]
    ) -> None:
        from ._tables import answers

        now = self.clock()
        async with self.db.begin() as conn:
            await conn.execute(
                answers.insert().values(
                    id=answer_id,
                    tool=tool,
                    caller=caller,
                    status="running",
                    owner=owner,
                    created_at=now,
                    heartbeat_at=now,
                    view=view,
                    partials=partials,
                    cancel_requested=False,
                )
            )
            if self.max_age_s is not None:
                await conn.execute(answers.delete().where(answers.c.created_at < now - self.max_age_s))

    async def beat(self, answer_id: str, partials: dict[str, str] | None) -> bool:
        """Record that the answer still runs (and its newer partial text); whether a cancel was asked for."""
        from sqlalchemy import update

        from ._tables import answers

        values: dict[str, Any] = {"heartbeat_at": self.clock()}
        if partials is not None:
            values["partials"] = partials
        async with self.db.begin() as conn:
            row = (
                await conn.execute(
                    update(answers)
                    .where(answers.c.id == answer_id, answers.c.status == "running")
                    .values(**values)
                    .returning(answers.c.cancel_requested)
                )
            ).first()
        return bool(row[0]) if row is not None else False

    async def finish(
        self, answer_id: str, status: AnswerStatus, result: dict[str, Any], partials: dict[str, str]
    ) -> None:
        from sqlalchemy import update

        from ._tables import answers

        now = self.clock()
        async with self.db.begin() as conn:
            await conn.execute(
                update(answers)
                .where(answers.c.id == answer_id)
                .values(status=status, result=result, partials=partials, finished_at=now, heartbeat_at=now)
            )

    async def get(self, answer_id: str, caller: str | None = None) -> StoredAnswer | None:
        """The answer, or None when there is none (or it has expired, or `caller` is given and it is another's)."""
        from sqlalchemy import select

        from ._tables import answers

        query = select(answers).where(answers.c.id == answer_id)
        if caller is not None:
            query = query.where(answers.c.caller == caller)
        if self.max_age_s is not None:
            query = query.where(answers.c.created_at >= self.clock() - self.max_age_s)
        async with self.db.begin() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        return StoredAnswer(
            id=row["id"],
            tool=row["tool"],
            caller=row["caller"],
            status=row["status"],
            owner=row["owner"],
            created_at=row["created_at"],
            heartbeat_at=row["heartbeat_at"],
            view=row["view"],
            partials=row["partials"],
            result=row["result"],
            cancel_requested=bool(row["cancel_requested"]),
        )

    async def request_cancel(self, answer_id: str) -> bool:
        """Ask the process running the answer to cancel it; False when it is not running."""
        from sqlalchemy import update

        from ._tables import answers

        async with self.db.begin() as conn:
            done = await conn.execute(
                update(answers)
                .where(answers.c.id == answer_id, answers.c.status == "running")
                .values(cancel_requested=True)
            )
        return bool(done.rowcount)

    async def mark_interrupted(self, answer_id: str, result: dict[str, Any]) -> bool:
        """Record that the answer's process is gone (only if it is still marked running); whether it was."""
        from sqlalchemy import update

        from ._tables import answers

        async with self.db.begin() as conn:
            done = await conn.execute(
                update(answers)
                .where(answers.c.id == answer_id, answers.c.status == "running")
                .values(status="interrupted", result=result, finished_at=self.clock())
            )
        return bool(done.rowcount)
