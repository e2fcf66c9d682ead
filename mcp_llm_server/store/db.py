"""One SQL database: SQLite (WAL) by default, any SQLAlchemy async URL (PostgreSQL...) by setting.

Nothing is imported or opened until the first `begin()`; the schema is checked and created then.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["SCHEMA_VERSION", "Database", "StoreError", "default_database_url"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 1: conversations; 2: + ledger, budget_spend
_APP_NAME = "mcp-llm-server"
_PREPARE_TRIES = 3


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


def default_database_url() -> str:
    """`sqlite+aiosqlite:///<user data dir>/conversations.db` (platformdirs decides the directory per OS)."""
    from platformdirs import user_data_dir

    return f"sqlite+aiosqlite:///{Path(user_data_dir(_APP_NAME, appauthor=False)) / 'conversations.db'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process (WAL)
        cursor.execute("PRAGMA busy_timeout=10000")  # another process writing: wait for it, do not fail
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


class Database:
    """A lazily opened SQLAlchemy async engine with the schema checked; `begin()` gives a transaction."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._engine: AsyncEngine | None = None
        self._lock = anyio.Lock()

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = default_database_url()
        return self._url

    def describe(self) -> str:
        """The URL without a password, for messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    async def _open(self) -> AsyncEngine:
        from sqlalchemy import event
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
        from sqlalchemy.ext.asyncio import create_async_engine

        from . import _tables

        try:
            url = make_url(self.url)
        except SQLAlchemyError as exc:
            raise StoreError(f"MCP_LLM_DATABASE_URL is not a database URL ({exc}).") from None
        sqlite = url.get_backend_name() == "sqlite"
        if sqlite and url.database and url.database != ":memory:":
            await anyio.Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        if sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        try:
            for attempt in range(_PREPARE_TRIES):
                try:
                    async with engine.begin() as conn:
                        await conn.run_sync(_tables.prepare, self.describe())
                    break
                except (IntegrityError, OperationalError):
                    # Another process created the tables meanwhile (SQLite has no lock to wait on for this): again.
                    if attempt == _PREPARE_TRIES - 1:
                        raise
                    logger.debug("schema preparation collided with another process; again", exc_info=True)
        except StoreError:
            await engine.dispose()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise StoreError(f"Cannot open the database {self.describe()}: {type(exc).__name__}: {exc}") from None
        logger.debug("database %s opened", self.describe())
        return engine

    async def engine(self) -> AsyncEngine:
        if self._engine is None:
            async with self._lock:
                if self._engine is None:
                    self._engine = await self._open()
        return self._engine

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed when the block ends, rolled back when it raises."""
        engine = await self.engine()
        async with engine.begin() as conn:
            yield conn

    async def aclose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()
