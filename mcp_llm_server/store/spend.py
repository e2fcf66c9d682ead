"""The spend ledger and the budgets, in the shared database (SQLite or PostgreSQL, one code path).

A reservation holds a call's worst-case cost in every budget window that applies (global and its provider's, today's
and this month's), all in one transaction: per window, an upsert locks the window's row (SQLite's database write
lock; PostgreSQL's row lock), and one conditional `INSERT … SELECT … WHERE spent + live holds + this call <= cap` adds
the hold (a live hold: one whose lease has not ended). The lock orders the reservations of every process; a window
that does not fit rolls the whole transaction back.

Each hold has a lease (`expires_at`): after it a hold counts for nothing, so a process killed mid-call (or a
settlement that could not be written) frees its reservation by itself. Settlement adds the actual cost to the
windows' settled spend, deletes the hold (and the ended holds of its windows) and writes the ledger row, in one
transaction, tried again briefly when the database is momentarily unavailable; when it still fails it raises
`SettlementFailed`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from .db import Database, StoreError

__all__ = [
    "CALLER_SCOPE_PREFIX",
    "BudgetCap",
    "BudgetExceeded",
    "LedgerEntry",
    "Reservation",
    "SettlementFailed",
    "SpendStore",
    "period_bounds",
]

logger = logging.getLogger(__name__)

# Settlement on a transient failure (locked, connection lost, unreachable): tried again after these pauses, while
# less than _SETTLE_RETRY_WITHIN_S has passed since the first attempt. A SQLite lock already waited the busy timeout
# (10 s by default) within the attempt, so it is not waited on again.
_SETTLE_PAUSES_S = (0.1, 0.4)
_SETTLE_RETRY_WITHIN_S = 3.0

# A caller's own budget windows: `caller:<caller id>`.
CALLER_SCOPE_PREFIX = "caller:"


@dataclass(frozen=True, slots=True)
class BudgetCap:
    scope: str  # "global", "openai", "anthropic", "caller:<caller id>"
    period: str  # "day" or "month"
    cap_nanos: int
    variable: str  # the setting that sets it, for messages


@dataclass(frozen=True, slots=True)
class Reservation:
    windows: tuple[tuple[str, str], ...]  # (scope, period key)
    nanos: int
    hold_id: str = ""  # the rows of budget_holds that are this reservation
    expires_at: float = 0.0  # when its lease ends (the store's clock): it no longer counts after that


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    provider: str
    model: str
    input_tokens: int | None
    cached_input_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    cost_nanos: int | None
    conversation_id: str | None
    tool: str
    caller: str


class BudgetExceeded(Exception):
    """A call's reservation does not fit a cap; the message says which, what is spent and when it resets."""

    def __init__(self, message: str, *, cap: BudgetCap, spent_nanos: int, resets_at: dt.datetime) -> None:
        super().__init__(message)
        self.cap = cap
        self.spent_nanos = spent_nanos
        self.resets_at = resets_at


class SettlementFailed(StoreError):
    """`settle` could not record the call: the ledger row is missing. The message says so, and what became of the
    reservation: `budget_counted` when the actual cost was still counted against the budgets (the ledger row
    alone was refused); otherwise the reservation is released when its lease ends and the cost is not counted.
    """

    def __init__(self, message: str, *, cause: StoreError, budget_counted: bool) -> None:
        super().__init__(message, kind=cause.kind)
        self.budget_counted = budget_counted


def period_bounds(period: str, now: float) -> tuple[str, dt.datetime]:
    """The window key (`day:2026-11-24`, `month:2026-11`, UTC) holding `now`, and when the next one starts."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"day:{start:%Y-%m-%d}", start + dt.timedelta(days=1)
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    )
    return f"month:{start:%Y-%m}", following


def _usd(nanos: int) -> str:
    return f"${nanos / 1e9:,.4f}"


def _utc(moment: float) -> str:
    return f"{dt.datetime.fromtimestamp(moment, dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


class SpendStore:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        settle_pauses_s: Sequence[float] = _SETTLE_PAUSES_S,
        settle_retry_within_s: float = _SETTLE_RETRY_WITHIN_S,
    ) -> None:
        self.db = db
        self.clock = clock  # wall time: the budget windows, and the leases (replicas' clocks should agree)
        self.unrecorded = 0  # answers whose cost this process could not record (their write failed)
        self._settle_pauses_s = tuple(settle_pauses_s)
        self._settle_retry_within_s = settle_retry_within_s

    async def reserve(self, caps: Sequence[BudgetCap], nanos: int, *, lease_s: float) -> Reservation:
        """Hold `nanos` in every window of `caps` for `lease_s` seconds, or in none (raising `BudgetExceeded`)
        when one would overflow. Holds whose lease has ended do not count. Raises `StoreError` when the database
        cannot be used.

        `lease_s` must outlast the call (its deadline plus a margin): a call settled after its lease ended still
        counts its actual cost, but meanwhile others may have reserved what it held.
        """
        if not caps:
            return Reservation((), 0)
        if not lease_s > 0 or math.isinf(lease_s):
            raise ValueError(f"lease_s must be a positive number of seconds, not {lease_s!r}")
        now = self.clock()
        reservation = Reservation(
            tuple((cap.scope, period_bounds(cap.period, now)[0]) for cap in caps),
            nanos,
            secrets.token_hex(16),
            now + lease_s,
        )
        async with self.db.begin() as conn:
            for cap, (scope, key) in zip(caps, reservation.windows, strict=True):
                if not await self._hold(conn, scope, key, cap.cap_nanos, reservation, now):
                    raise await self._refusal(conn, cap, key, nanos, now)
        return reservation

    async def _hold(
        self, conn: Any, scope: str, key: str, cap_nanos: int, reservation: Reservation, now: float
    ) -> bool:
        """Lock the window and add this hold if it fits with the others whose lease has not ended; whether it did."""
        from sqlalchemy import func, insert, literal, select

        from ._tables import budget_holds as h
        from ._tables import budget_spend as b

        upsert = _upsert(conn.dialect.name)(b).values(scope=scope, period=key, spent_nanos=0)
        if conn.dialect.name == "postgresql":  # DO UPDATE (to the same value) locks an existing row there
            upsert = upsert.on_conflict_do_update(
                index_elements=[b.c.scope, b.c.period], set_={"spent_nanos": b.c.spent_nanos}
            )
        else:  # SQLite: any write statement takes the database's write lock, and DO NOTHING writes no page
            upsert = upsert.on_conflict_do_nothing()
        await conn.execute(upsert)
        live = (h.c.scope == scope, h.c.period == key, h.c.expires_at > now)
        held = select(func.coalesce(func.sum(h.c.nanos), 0)).where(*live).scalar_subquery()
        row = select(
            literal(reservation.hold_id, h.c.hold_id.type),
            literal(scope, h.c.scope.type),
            literal(key, h.c.period.type),
            literal(reservation.nanos, h.c.nanos.type),
            literal(reservation.expires_at, h.c.expires_at.type),
        ).where(b.c.scope == scope, b.c.period == key, b.c.spent_nanos + held + reservation.nanos <= cap_nanos)
        added = await conn.execute(insert(h).from_select(["hold_id", "scope", "period", "nanos", "expires_at"], row))
        return bool(added.rowcount)

    async def _refusal(self, conn: Any, cap: BudgetCap, key: str, nanos: int, now: float) -> BudgetExceeded:
        spent = await _spent_or_held(conn, cap.scope, key, now)
        _, resets_at = period_bounds(cap.period, now)
        return BudgetExceeded(
            f"Refused by {_budget_named(cap)} ({cap.variable} = {_usd(cap.cap_nanos)}): {_usd(spent)} is already "
            f"spent or reserved, and this call could cost up to {_usd(nanos)} (its input estimate plus max_tokens of "
            f"output). The budget resets at {resets_at:%Y-%m-%d %H:%M} UTC. No request was sent; ask "
            "with a lower max_tokens or a cheaper model, or wait for the reset.",
            cap=cap,
            spent_nanos=spent,
            resets_at=resets_at,
        )

    async def settle(self, reservation: Reservation, actual_nanos: int, entry: LedgerEntry | None) -> None:
        """Replace the reservation by the actual cost and record the ledger row, in one transaction.

        `settle(reservation, 0, None)` releases a reservation. Retried briefly on a transient failure. When it still
        fails, raises `SettlementFailed` (a `StoreError`) saying that the cost could not be recorded; a refused
        ledger row is then dropped and the cost still counted against the budgets if possible, and otherwise the
        reservation is released when its lease ends.
        """
        if not reservation.windows and entry is None:
            return
        try:
            await self._settle_retrying(reservation, actual_nanos, entry)
            return
        except StoreError as exc:
            failure = exc
        counted = False
        if entry is not None and reservation.windows and not failure.transient:
            try:  # the ledger row alone was refused: the budgets still count the cost, and the hold goes
                await self._settle_once(reservation, actual_nanos, None)
                counted = True
            except StoreError as again:
                logger.debug("settling without the ledger row failed too: %s", again)
        raise SettlementFailed(
            _settle_failure(failure, reservation, entry, counted), cause=failure, budget_counted=counted
        )

    async def _settle_retrying(self, reservation: Reservation, actual_nanos: int, entry: LedgerEntry | None) -> None:
        await _retrying(
            lambda: self._settle_once(reservation, actual_nanos, entry),
            self._settle_pauses_s,
            self._settle_retry_within_s,
        )

    async def _settle_once(self, reservation: Reservation, actual_nanos: int, entry: LedgerEntry | None) -> None:
        from sqlalchemy import and_, delete, insert, or_, update

        from ._tables import budget_holds as h
        from ._tables import budget_spend as b
        from ._tables import ledger

        async with self.db.begin() as conn:
            if actual_nanos:
                for scope, key in reservation.windows:  # in the order reserve locked them: no deadlock
                    await conn.execute(
                        update(b)
                        .where(b.c.scope == scope, b.c.period == key)
                        .values(spent_nanos=b.c.spent_nanos + actual_nanos)
                    )
            if reservation.windows:  # this hold, and in passing those of its windows whose lease has ended
                now = self.clock()
                ended = [and_(h.c.scope == s, h.c.period == k, h.c.expires_at <= now) for s, k in reservation.windows]
                await conn.execute(delete(h).where(or_(h.c.hold_id == reservation.hold_id, *ended)))
            if entry is not None:
                await conn.execute(
                    insert(ledger).values(created_at=self.clock(), **asdict(entry))  # its fields are the columns
                )

    async def spent(self, scope: str, period: str) -> int:
        """Spent or reserved (by a hold whose lease has not ended) in the current window of `scope` and `period`."""
        await self.db.behind.settled()  # settlements still being written
        now = self.clock()
        key, _ = period_bounds(period, now)
        async with self.db.begin() as conn:
            return await _spent_or_held(conn, scope, key, now)

    async def report(self, top: int = 10, caller: str | None = None) -> dict[str, Any]:
        """Today's and this month's spend and tokens by provider and model; the most expensive conversations.

        `caller`: only that caller's ledger rows. None: every row, and each window broken down by caller too
        (`by_caller`)."""
        await self.db.behind.settled()  # ledger rows still being written
        now = self.clock()
        out: dict[str, Any] = {}
        async with self.db.begin() as conn:
            for period in ("day", "month"):
                window = await _window_report(conn, period, now, caller)
                if caller is None:
                    window["by_caller"] = await _by_caller(conn, period, now)
                out["today" if period == "day" else "this_month"] = window
            since = _month_start(now).timestamp()
            out["top_conversations_this_month"] = await _top_conversations(conn, since, top, caller)
        return out


def _window_rows(period: str, now: float, caller: str | None) -> list[Any]:
    """The conditions picking the ledger rows of the current window of `period` (and of `caller`, when given)."""
    from ._tables import ledger as led

    _, resets_at = period_bounds(period, now)
    start = (resets_at - dt.timedelta(days=1)) if period == "day" else _month_start(now)
    rows = [led.c.created_at >= start.timestamp(), led.c.created_at < resets_at.timestamp()]
    return rows if caller is None else [*rows, led.c.caller == caller]


async def _window_report(conn: Any, period: str, now: float, caller: str | None) -> dict[str, Any]:
    """One budget window's spend and tokens, in total and by provider and model."""
    from sqlalchemy import func, select

    from ._tables import ledger as led

    key, _ = period_bounds(period, now)
    rows = await conn.execute(
        select(
            led.c.provider,
            led.c.model,
            func.count(),
            func.sum(led.c.cost_nanos),
            func.count(led.c.cost_nanos),
            func.sum(led.c.input_tokens),
            func.sum(led.c.cached_input_tokens),
            func.sum(led.c.output_tokens),
            func.sum(led.c.reasoning_tokens),
        )
        .where(*_window_rows(period, now, caller))
        .group_by(led.c.provider, led.c.model)
        .order_by(led.c.provider, led.c.model)
    )
    models = [
        {
            "provider": provider,
            "model": model,
            "calls": int(calls),
            "unpriced_calls": int(calls) - int(priced),
            "cost_nanos": int(nanos or 0),
            "cost_usd": int(nanos or 0) / 1e9,
            "input_tokens": int(tin or 0),
            "cached_input_tokens": int(tcached or 0),
            "output_tokens": int(tout or 0),
            "reasoning_tokens": int(treason or 0),
        }
        for provider, model, calls, nanos, priced, tin, tcached, tout, treason in rows
    ]
    total = sum(m["cost_nanos"] for m in models)
    return {
        "window": key.split(":", 1)[1],
        "cost_nanos": total,
        "cost_usd": total / 1e9,
        "calls": sum(m["calls"] for m in models),
        "input_tokens": sum(m["input_tokens"] for m in models),
        "output_tokens": sum(m["output_tokens"] for m in models),
        "by_model": models,
    }


async def _by_caller(conn: Any, period: str, now: float) -> list[dict[str, Any]]:
    """One window's calls, spend and tokens by caller, the biggest spender first."""
    from sqlalchemy import func, select

    from ._tables import ledger as led

    cost = func.coalesce(func.sum(led.c.cost_nanos), 0)
    rows = await conn.execute(
        select(led.c.caller, func.count(), cost, func.sum(led.c.input_tokens), func.sum(led.c.output_tokens))
        .where(*_window_rows(period, now, None))
        .group_by(led.c.caller)
        .order_by(cost.desc(), led.c.caller)
    )
    return [
        {
            "caller": caller,
            "calls": int(calls),
            "cost_nanos": int(nanos or 0),
            "cost_usd": int(nanos or 0) / 1e9,
            "input_tokens": int(tin or 0),
            "output_tokens": int(tout or 0),
        }
        for caller, calls, nanos, tin, tout in rows
    ]


async def _top_conversations(conn: Any, since: float, top: int, caller: str | None) -> list[dict[str, Any]]:
    from sqlalchemy import func, select

    from ._tables import ledger as led

    mine = () if caller is None else (led.c.caller == caller,)
    rows = await conn.execute(
        select(led.c.conversation_id, func.sum(led.c.cost_nanos), func.count())
        .where(led.c.conversation_id.is_not(None), led.c.created_at >= since, *mine)
        .group_by(led.c.conversation_id)
        .order_by(func.coalesce(func.sum(led.c.cost_nanos), 0).desc(), led.c.conversation_id)
        .limit(top)
    )
    return [
        {"conversation_id": cid, "cost_nanos": int(n or 0), "cost_usd": int(n or 0) / 1e9, "calls": int(c)}
        for cid, n, c in rows
    ]


def _budget_named(cap: BudgetCap) -> str:
    """The budget a refusal is about, in words a model can act on."""
    period = "daily" if cap.period == "day" else "monthly"
    if cap.scope.startswith(CALLER_SCOPE_PREFIX):
        return f"your {period} budget as caller {cap.scope.removeprefix(CALLER_SCOPE_PREFIX)}"
    return f"the {period} budget for {'all providers' if cap.scope == 'global' else cap.scope}"


def _month_start(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def _spent_or_held(conn: Any, scope: str, key: str, now: float) -> int:
    from sqlalchemy import func, select

    from ._tables import budget_holds as h
    from ._tables import budget_spend as b

    spent = (await conn.execute(select(b.c.spent_nanos).where(b.c.scope == scope, b.c.period == key))).scalar()
    held = (
        await conn.execute(
            select(func.coalesce(func.sum(h.c.nanos), 0)).where(
                h.c.scope == scope, h.c.period == key, h.c.expires_at > now
            )
        )
    ).scalar()
    return int(spent or 0) + int(held or 0)


async def _retrying(operation: Callable[[], Awaitable[None]], pauses_s: tuple[float, ...], within_s: float) -> None:
    """Run `operation`; on a transient `StoreError`, again after each pause while within `within_s` of the start."""
    started = time.monotonic()
    for pause in pauses_s:
        try:
            await operation()
            return
        except StoreError as exc:
            if not exc.transient or time.monotonic() - started + pause > within_s:
                raise
            logger.warning("could not record a call's cost (%s): trying again in %g s", exc, pause)
        await anyio.sleep(pause)
    await operation()


def _settle_failure(failure: StoreError, reservation: Reservation, entry: LedgerEntry | None, counted: bool) -> str:
    what = "The cost of this call could not be recorded" if entry is not None else "A reservation could not be released"
    parts = [f"{what}: {failure}"]
    if counted:
        parts.append("It was still counted against the budgets.")
    elif reservation.windows:
        parts.append(
            f"Its budget reservation ({_usd(reservation.nanos)}) is released when its lease ends, at "
            f"{_utc(reservation.expires_at)}."
        )
    return " ".join(parts)


def _upsert(dialect: str) -> Any:
    """`INSERT … ON CONFLICT …` for the dialect in use (SQLite and PostgreSQL spell it alike)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
