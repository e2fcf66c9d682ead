"""Conversations: their turns, stored durably; expiry by age and a size cap, applied when a turn is written.

Two calls on one conversation never lose a turn: callers hold `lock(id)` (in-process) around reading the history,
asking the model and appending; across processes, `append` increments the conversation's turn counter and inserts
the turn in one transaction (the row's write lock orders writers; the (conversation, index) key refuses a
duplicate), so a turn written elsewhere meanwhile is never overwritten.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from .db import Database, StoreError

__all__ = [
    "Conversation",
    "ConversationStore",
    "ConversationSummary",
    "NewTurn",
    "StoredFile",
    "StoredTurn",
    "new_conversation_id",
]

logger = logging.getLogger(__name__)

_TITLE_CHARS = 80
_APPEND_TRIES = 5


def new_conversation_id() -> str:
    """Short, random, URL-safe (72 bits)."""
    return secrets.token_urlsafe(9)


def make_title(prompt: str) -> str:
    title = " ".join(prompt.split())
    return title if len(title) <= _TITLE_CHARS else title[: _TITLE_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class StoredFile:
    path: str
    sha256: str
    text: str  # "" for an image or PDF: its bytes are not stored
    media_type: str | None = None  # an image's or PDF's; None for a text file (and rows written before media)


@dataclass(frozen=True, slots=True)
class NewTurn:
    """A turn to append: what was asked and what came back."""

    provider: str
    model: str
    system: str | None
    prompt: str
    answer: str
    files: tuple[StoredFile, ...] = ()
    stop_reason: str | None = None
    usage: dict[str, int | None] = field(default_factory=dict)

    def size_chars(self) -> int:
        return len(self.prompt) + len(self.answer) + len(self.system or "") + sum(len(f.text) for f in self.files)


@dataclass(frozen=True, slots=True)
class StoredTurn:
    index: int
    created_at: float
    turn: NewTurn


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    id: str
    title: str
    created_at: float
    updated_at: float
    turn_count: int
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    size_chars: int
    providers: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Conversation:
    summary: ConversationSummary
    turns: tuple[StoredTurn, ...]


_PRUNE_EVERY_S = 60.0
_UNSAVED_KEPT = 256
APPEAR_WAIT_S = 1.0  # a first turn another process is still writing is waited for this long at most
_APPEAR_POLL_S = 0.1


def missing_conversation(conversation_id: str, unsaved: str | None) -> str:
    """Why there is no such conversation, in one sentence (`unsaved`: why this process could not save it)."""
    if unsaved is not None:
        return f"No conversation `{conversation_id}`: the answer that started it could not be saved ({unsaved})."
    return f"No conversation `{conversation_id}` (it may have expired or been deleted)."


def conversation_key(conversation_id: str) -> str:
    """What a conversation's deferred writes are filed under (`WriteBehind`)."""
    return f"conversation:{conversation_id}"


class ConversationStore:
    def __init__(
        self,
        db: Database,
        *,
        max_age_s: float | None,
        max_chars: int | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.max_age_s = max_age_s
        self.max_chars = max_chars
        self._clock = clock
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}
        self._unsaved: dict[str, str] = {}  # conversation id -> why its latest turn could not be saved
        # Pruning costs a transaction and a scan; reads already hide expired rows, so deleting them can wait
        # up to _PRUNE_EVERY_S, and the size cap is re-checked only when this process's running estimate of
        # the total (refreshed from the database at least as often) says it may be exceeded.
        self._last_age_prune = -math.inf
        self._last_size_check = -math.inf
        self._size_estimate = 0

    # --- serialising the calls on one conversation (in this process) ---------------------------------------

    @asynccontextmanager
    async def lock(self, conversation_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(conversation_id, (anyio.Lock(), 0))
        self._locks[conversation_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)

    # --- reading -----------------------------------------------------------------------------------------------

    def _cutoff(self) -> float | None:
        return None if self.max_age_s is None else self._clock() - self.max_age_s

    async def get_appearing(self, conversation_id: str, owner: str | None = None) -> Conversation | None:
        """`get`, waiting up to `APPEAR_WAIT_S` for a conversation not there yet: another server process on the
        database may have answered its first turn moments ago and still be writing it (after its answer went out).
        Only a missing conversation waits; `unsaved` ones (this process failed to write them) do not."""
        until = anyio.current_time() + APPEAR_WAIT_S
        while True:
            found = await self.get(conversation_id, owner)
            if found is not None or self.unsaved(conversation_id) is not None or anyio.current_time() >= until:
                return found
            await anyio.sleep(_APPEAR_POLL_S)

    async def get(self, conversation_id: str, owner: str | None = None) -> Conversation | None:
        """The conversation with every turn, oldest first; None when there is none (or it has expired, or `owner`
        is given and it is someone else's)."""
        from sqlalchemy import select

        from ._tables import conversations, turns

        await self.db.behind.settled(conversation_key(conversation_id))  # its last turn may still be being written
        async with self.db.begin() as conn:
            query = select(conversations).where(conversations.c.id == conversation_id)
            if owner is not None:
                query = query.where(conversations.c.owner == owner)
            cutoff = self._cutoff()
            if cutoff is not None:
                query = query.where(conversations.c.updated_at >= cutoff)
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                return None
            turn_rows = (
                (
                    await conn.execute(
                        select(turns).where(turns.c.conversation_id == conversation_id).order_by(turns.c.turn_index)
                    )
                )
                .mappings()
                .all()
            )
        stored = tuple(_stored_turn(r) for r in turn_rows)
        providers = tuple(dict.fromkeys(t.turn.provider for t in stored))
        models = tuple(dict.fromkeys(t.turn.model for t in stored))
        return Conversation(summary=_summary(row, providers, models), turns=stored)

    async def list_recent(self, limit: int = 50, owner: str | None = None) -> list[ConversationSummary]:
        """The most recently updated conversations first (only `owner`'s when given)."""
        from sqlalchemy import select

        from ._tables import conversations, turns

        await self.db.behind.settled()
        async with self.db.begin() as conn:
            query = select(conversations).order_by(conversations.c.updated_at.desc()).limit(limit)
            if owner is not None:
                query = query.where(conversations.c.owner == owner)
            cutoff = self._cutoff()
            if cutoff is not None:
                query = query.where(conversations.c.updated_at >= cutoff)
            rows = (await conn.execute(query)).mappings().all()
            ids = [row["id"] for row in rows]
            used: dict[str, tuple[dict[str, None], dict[str, None]]] = {i: ({}, {}) for i in ids}
            if ids:
                pairs = await conn.execute(
                    select(turns.c.conversation_id, turns.c.provider, turns.c.model)
                    .where(turns.c.conversation_id.in_(ids))
                    .order_by(turns.c.conversation_id, turns.c.turn_index)
                )
                for conversation_id, provider, model in pairs:
                    used[conversation_id][0][provider] = None
                    used[conversation_id][1][model] = None
        return [_summary(row, tuple(used[row["id"]][0]), tuple(used[row["id"]][1])) for row in rows]

    # --- writing -----------------------------------------------------------------------------------------------

    async def append_behind(self, conversation_id: str, turns: Sequence[NewTurn], owner: str) -> str | None:
        """Append `turns` after the answer has gone out (see `behind`): reads of this conversation wait for them.
        Returns why they could not be saved when that is known now (the write ran inline), else None; a failure
        known later is logged and told to whoever next asks for the conversation (`unsaved`)."""
        self._unsaved.pop(conversation_id, None)

        async def write() -> str | None:
            try:
                for turn in turns:
                    await self.append(conversation_id, turn, owner)
                return None
            except Exception as exc:  # StoreError, or anything a broken database raises
                why = str(exc) if isinstance(exc, StoreError) else type(exc).__name__
                logger.warning("could not save a turn of conversation %s: %s", conversation_id, why)
                self._unsaved[conversation_id] = why
                while len(self._unsaved) > _UNSAVED_KEPT:
                    del self._unsaved[next(iter(self._unsaved))]
                return why

        return await self.db.behind.write((conversation_key(conversation_id),), write)

    def unsaved(self, conversation_id: str) -> str | None:
        """Why this process could not save the conversation's latest turn, if it could not."""
        return self._unsaved.get(conversation_id)

    async def append(self, conversation_id: str, turn: NewTurn, owner: str | None = None) -> int:
        """Add `turn` at the end of the conversation (created by its first turn, owned by `owner`); returns the
        turn's index."""
        for attempt in range(_APPEND_TRIES):
            try:
                index = await self._append_once(conversation_id, turn, owner)
            except StoreError as exc:  # another process created the conversation or took the index: go again
                if exc.kind != "conflict":
                    raise
                if attempt == _APPEND_TRIES - 1:
                    raise StoreError(
                        f"Could not add a turn to conversation {conversation_id}: it kept changing.", kind="conflict"
                    ) from None
                logger.debug("turn of %s collided with a concurrent write; retrying", conversation_id)
                continue
            self._size_estimate += turn.size_chars()
            try:
                await self._prune(keep=conversation_id)
            except StoreError as exc:  # the turn is saved; housekeeping can wait for the next write
                logger.warning("could not remove expired or excess conversations: %s", exc)
            return index
        raise AssertionError("unreachable")

    async def _append_once(self, conversation_id: str, turn: NewTurn, owner: str | None) -> int:
        from sqlalchemy import insert, select, update

        from ._tables import conversations, turns

        now = self._clock()
        usage = turn.usage
        size = turn.size_chars()
        async with self.db.begin() as conn:
            # The UPDATE first: it takes the row's write lock, so the count read next is this writer's alone.
            counter = conversations.c
            bumped = await conn.execute(
                update(conversations)
                .where(counter.id == conversation_id)
                .values(
                    turn_count=counter.turn_count + 1,
                    updated_at=now,
                    input_tokens=counter.input_tokens + (usage.get("input_tokens") or 0),
                    output_tokens=counter.output_tokens + (usage.get("output_tokens") or 0),
                    cached_input_tokens=counter.cached_input_tokens + (usage.get("cached_input_tokens") or 0),
                    size_chars=counter.size_chars + size,
                )
            )
            if bumped.rowcount == 0:
                await conn.execute(
                    insert(conversations).values(
                        id=conversation_id,
                        title=make_title(turn.prompt),
                        created_at=now,
                        updated_at=now,
                        turn_count=1,
                        input_tokens=usage.get("input_tokens") or 0,
                        output_tokens=usage.get("output_tokens") or 0,
                        cached_input_tokens=usage.get("cached_input_tokens") or 0,
                        size_chars=size,
                        owner=owner,
                    )
                )
                index = 0
            else:
                count = (
                    await conn.execute(select(counter.turn_count).where(counter.id == conversation_id))
                ).scalar_one()
                index = count - 1
            await conn.execute(
                insert(turns).values(
                    conversation_id=conversation_id,
                    turn_index=index,
                    provider=turn.provider,
                    model=turn.model,
                    system=turn.system,
                    prompt=turn.prompt,
                    files=[_file_row(f) for f in turn.files],
                    answer=turn.answer,
                    stop_reason=turn.stop_reason,
                    usage=dict(usage),
                    created_at=now,
                )
            )
        return index

    async def delete(self, conversation_id: str, owner: str | None = None) -> bool:
        """Delete the conversation and its turns; False when there was none (or, `owner` given, not theirs)."""
        from sqlalchemy import delete

        from ._tables import conversations, turns

        await self.db.behind.settled(conversation_key(conversation_id))
        async with self.db.begin() as conn:
            # The conversation's row first: it locks the row, and an owner that does not match deletes nothing.
            query = delete(conversations).where(conversations.c.id == conversation_id)
            if owner is not None:
                query = query.where(conversations.c.owner == owner)
            result = await conn.execute(query)
            if result.rowcount:
                await conn.execute(delete(turns).where(turns.c.conversation_id == conversation_id))
        return bool(result.rowcount)

    async def _prune(self, *, keep: str) -> int:
        """Delete expired conversations, then the least recently updated ones while the total is over the cap."""
        from sqlalchemy import delete, func, select

        from ._tables import conversations, turns

        now = self._clock()
        cutoff = self._cutoff() if now - self._last_age_prune >= _PRUNE_EVERY_S else None
        check_size = self.max_chars is not None and (
            self._size_estimate > self.max_chars or now - self._last_size_check >= _PRUNE_EVERY_S
        )
        if cutoff is None and not check_size:
            return 0
        doomed: list[str] = []
        async with self.db.begin() as conn:
            if cutoff is not None:
                self._last_age_prune = now
                query = select(conversations.c.id).where(conversations.c.updated_at < cutoff)
                doomed += [row[0] for row in await conn.execute(query)]
            if check_size and self.max_chars is not None:
                self._last_size_check = now
                total = (await conn.execute(select(func.coalesce(func.sum(conversations.c.size_chars), 0)))).scalar()
                self._size_estimate = int(total or 0)
                excess = int(total or 0) - self.max_chars
                if excess > 0:
                    query = (
                        select(conversations.c.id, conversations.c.size_chars)
                        .where(conversations.c.id != keep)
                        .order_by(conversations.c.updated_at)
                    )
                    for conversation_id, size in await conn.execute(query):
                        if excess <= 0:
                            break
                        if conversation_id not in doomed:
                            doomed.append(conversation_id)
                            excess -= size
                            self._size_estimate -= size
            if doomed:
                await conn.execute(delete(turns).where(turns.c.conversation_id.in_(doomed)))
                await conn.execute(delete(conversations).where(conversations.c.id.in_(doomed)))
        if doomed:
            logger.info("removed %d expired or excess conversation(s)", len(doomed))
        return len(doomed)


def _summary(row: Any, providers: tuple[str, ...], models: tuple[str, ...]) -> ConversationSummary:
    return ConversationSummary(
        id=row["id"],
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        turn_count=row["turn_count"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cached_input_tokens=row["cached_input_tokens"],
        size_chars=row["size_chars"],
        providers=providers,
        models=models,
    )


def _file_row(file: StoredFile) -> dict[str, str]:
    row = {"path": file.path, "sha256": file.sha256, "text": file.text}
    return row if file.media_type is None else {**row, "media_type": file.media_type}


def _stored_turn(row: Any) -> StoredTurn:
    files = tuple(
        StoredFile(f["path"], f.get("sha256", ""), f.get("text", ""), f.get("media_type")) for f in row["files"] or []
    )
    turn = NewTurn(
        provider=row["provider"],
        model=row["model"],
        system=row["system"],
        prompt=row["prompt"],
        answer=row["answer"],
        files=files,
        stop_reason=row["stop_reason"],
        usage=dict(row["usage"] or {}),
    )
    return StoredTurn(index=row["turn_index"], created_at=row["created_at"], turn=turn)
