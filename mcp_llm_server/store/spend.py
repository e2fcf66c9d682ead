"""The spend ledger and the budgets, in the shared database (SQLite or PostgreSQL, one code path).

A reservation adds a call's worst-case cost to every budget window that applies (global and its provider's, today's
and this month's) with one conditional `UPDATE … SET spent = spent + :r WHERE … AND spent + :r <= :cap` per window,
all in one transaction: the row's write lock (SQLite's database write lock; PostgreSQL's row lock) orders the
reservations of every process, and a window that does not fit rolls the whole transaction back. Settlement replaces
the reservation by the actual cost and writes the ledger row in one transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .db import Database

__all__ = ["BudgetCap", "BudgetExceeded", "LedgerEntry", "Reservation", "SpendStore", "period_bounds"]


@dataclass(frozen=True, slots=True)
class BudgetCap:
    scope: str  # "global", "openai", "anthropic"
    period: str  # "day" or "month"
    cap_nanos: int
    variable: str  # the setting that sets it, for messages


@dataclass(frozen=True, slots=True)
class Reservation:
    windows: tuple[tuple[str, str], ...]  # (scope, period key)
    nanos: int


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


class SpendStore:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def reserve(self, caps: Sequence[BudgetCap], nanos: int) -> Reservation:
        """Add `nanos` to every window of `caps`, or to none (raising `BudgetExceeded`) when one would overflow."""
        if not caps:
            return Reservation((), 0)
        from sqlalchemy import select, update

        from ._tables import budget_spend as b

        now = self.clock()
        windows = []
        async with self.db.begin() as conn:
            insert = _insert_ignoring_duplicates(conn.dialect.name)
            for cap in caps:
                key, resets_at = period_bounds(cap.period, now)
                await conn.execute(
                    insert(b).values(scope=cap.scope, period=key, spent_nanos=0).on_conflict_do_nothing()
                )
                fitted = await conn.execute(
                    update(b)
                    .where(b.c.scope == cap.scope, b.c.period == key, b.c.spent_nanos + nanos <= cap.cap_nanos)
                    .values(spent_nanos=b.c.spent_nanos + nanos)
                )
                if fitted.rowcount == 0:
                    spent = (
                        await conn.execute(select(b.c.spent_nanos).where(b.c.scope == cap.scope, b.c.period == key))
                    ).scalar_one()
                    which = "all providers" if cap.scope == "global" else cap.scope
                    raise BudgetExceeded(
                        f"Refused by the {'daily' if cap.period == 'day' else 'monthly'} budget for {which} "
                        f"({cap.variable} = {_usd(cap.cap_nanos)}): {_usd(spent)} is already spent or reserved, "
                        f"and this call could cost up to {_usd(nanos)} (its input estimate plus max_tokens of "
                        f"output). The budget resets at {resets_at:%Y-%m-%d %H:%M} UTC. No request was sent; ask "
                        "with a lower max_tokens or a cheaper model, or wait for the reset.",
                        cap=cap,
                        spent_nanos=int(spent),
                        resets_at=resets_at,
                    )
                windows.append((cap.scope, key))
        return Reservation(tuple(windows), nanos)

    async def settle(self, reservation: Reservation, actual_nanos: int, entry: LedgerEntry | None) -> None:
        """Replace the reservation by the actual cost and record the ledger row, in one transaction."""
        if not reservation.windows and entry is None:
            return
        from sqlalchemy import insert, update

        from ._tables import budget_spend as b
        from ._tables import ledger

        delta = actual_nanos - reservation.nanos
        async with self.db.begin() as conn:
            if delta:
                for scope, key in reservation.windows:
                    await conn.execute(
                        update(b)
                        .where(b.c.scope == scope, b.c.period == key)
                        .values(spent_nanos=b.c.spent_nanos + delta)
                    )
            if entry is not None:
                await conn.execute(
                    insert(ledger).values(created_at=self.clock(), **asdict(entry))  # its fields are the columns
                )

    async def spent(self, scope: str, period: str) -> int:
        """Spent or reserved in the current window of `scope` and `period`."""
        from sqlalchemy import select

        from ._tables import budget_spend as b

        key, _ = period_bounds(period, self.clock())
        async with self.db.begin() as conn:
            value = (await conn.execute(select(b.c.spent_nanos).where(b.c.scope == scope, b.c.period == key))).scalar()
        return int(value or 0)

    async def report(self, top: int = 10) -> dict[str, Any]:
        """Today's and this month's spend and tokens by provider and model; the most expensive conversations."""
        from sqlalchemy import func, select

        from ._tables import ledger as led

        now = self.clock()
        out: dict[str, Any] = {}
        async with self.db.begin() as conn:
            for period in ("day", "month"):
                key, resets_at = period_bounds(period, now)
                start = (resets_at - dt.timedelta(days=1)) if period == "day" else _month_start(now)
                since = start.timestamp()
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
                    .where(led.c.created_at >= since, led.c.created_at < resets_at.timestamp())
                    .group_by(led.c.provider, led.c.model)
                    .order_by(led.c.provider, led.c.model)
                )
                models = []
                for provider, model, calls, nanos, priced, tin, tcached, tout, treason in rows:
                    models.append(
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
                    )
                total = sum(m["cost_nanos"] for m in models)
                out["today" if period == "day" else "this_month"] = {
                    "window": key.split(":", 1)[1],
                    "cost_nanos": total,
                    "cost_usd": total / 1e9,
                    "calls": sum(m["calls"] for m in models),
                    "input_tokens": sum(m["input_tokens"] for m in models),
                    "output_tokens": sum(m["output_tokens"] for m in models),
                    "by_model": models,
                }
            month_since = _month_start(now).timestamp()
            rows = await conn.execute(
                select(led.c.conversation_id, func.sum(led.c.cost_nanos), func.count())
                .where(led.c.conversation_id.is_not(None), led.c.created_at >= month_since)
                .group_by(led.c.conversation_id)
                .order_by(func.coalesce(func.sum(led.c.cost_nanos), 0).desc(), led.c.conversation_id)
                .limit(top)
            )
            out["top_conversations_this_month"] = [
                {"conversation_id": cid, "cost_nanos": int(n or 0), "cost_usd": int(n or 0) / 1e9, "calls": int(c)}
                for cid, n, c in rows
            ]
        return out


def _month_start(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _insert_ignoring_duplicates(dialect: str) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING` for the dialect in use (SQLite and PostgreSQL spell it alike)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
