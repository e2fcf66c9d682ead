"""One SQL database: SQLite (WAL) by default, any SQLAlchemy async URL (PostgreSQL...) by setting.

Nothing is imported or opened until the first `begin()`; the schema is checked and created then. Every failure of
the database (cannot open or create it, locked, a value refused, the connection lost) leaves this module as a
`StoreError` whose message says what failed and what to do, with the URL's password redacted.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .behind import WriteBehind

__all__ = ["SCHEMA_VERSION", "Database", "StoreError", "default_database_url", "import_sqlalchemy"]

logger = logging.getLogger(__name__)

# 1: conversations; 2: + ledger, budget_spend; 3: + budget_holds (reservations with a lease); 4: + answers (detached)
SCHEMA_VERSION = 5
_APP_NAME = "mcp-llm-server"
_PREPARE_TRIES = 3
_BUSY_TIMEOUT_S = 10.0  # SQLite: how long a writer waits for another one; `?timeout=SECONDS` in the URL changes it
_DETAIL_CHARS = 300
_CLOSE_WITHIN_S = 5.0
_OPEN_WITHIN_S = 30.0

FailureKind = Literal["locked", "unavailable", "lost", "refused", "conflict", "schema", "failed"]
_TRANSIENT: frozenset[str] = frozenset({"locked", "unavailable", "lost"})


_IMPORT_LOCK = threading.Lock()


def import_sqlalchemy() -> None:
    """Import SQLAlchemy and the tables, one thread at a time: two threads entering its package by different modules
    at once (the warm-up thread and a first database open) can find it half initialized (ImportError)."""
    with _IMPORT_LOCK:
        import sqlalchemy.ext.asyncio  # noqa: F401

        from . import _tables  # noqa: F401


class StoreError(Exception):
    """The database cannot be used; the message says what failed and what to do.

    `kind`: `locked` (another process holds the write lock beyond the wait), `unavailable` (cannot open, create or
    reach the database), `lost` (the connection dropped), `refused` (a value or statement was refused), `conflict`
    (a concurrent write took the same key), `schema` (the URL or the schema version), `failed` (anything else).
    """

    def __init__(self, message: str, *, kind: FailureKind = "failed") -> None:
        super().__init__(message)
        self.kind: FailureKind = kind

    @property
    def transient(self) -> bool:
        """Whether the same operation may succeed if tried again shortly."""
        return self.kind in _TRANSIENT


def default_database_url() -> str:
    """`sqlite+aiosqlite:///<user data dir>/conversations.db` (platformdirs decides the directory per OS)."""
    from platformdirs import user_data_dir

    return f"sqlite+aiosqlite:///{Path(user_data_dir(_APP_NAME, appauthor=False)) / 'conversations.db'}"


def _sqlite_pragmas(busy_timeout_s: float, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process (WAL)
        # Another process writing: wait for it, do not fail (up to the busy timeout).
        cursor.execute(f"PRAGMA busy_timeout={round(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _busy_timeout_s(url: URL) -> float:
    value = url.query.get("timeout")
    try:
        return float(value) if isinstance(value, str) else _BUSY_TIMEOUT_S
    except ValueError:
        raise StoreError(
            f"MCP_LLM_DATABASE_URL has timeout={value!r}: it must be a number of seconds.", kind="schema"
        ) from None


class Database:
    """A lazily opened SQLAlchemy async engine with the schema checked; `begin()` gives a transaction."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self.behind = WriteBehind()  # the stores' writes that need not hold up an answer
        self._engine: AsyncEngine | None = None
        self._lock = anyio.Lock()
        self._busy_timeout_s = _BUSY_TIMEOUT_S

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = default_database_url()
        return self._url

    def describe(self) -> str:
        """The URL without a password, for messages."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            return "(MCP_LLM_DATABASE_URL, not a database URL)"

    def _redact(self, text: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            password = make_url(self.url).password
        except ArgumentError:
            return text.replace(self.url, "(MCP_LLM_DATABASE_URL)")
        return text.replace(str(password), "***") if password else text

    def failure(self, exc: BaseException) -> StoreError:
        """The `StoreError` telling what `exc` (raised by the driver, SQLAlchemy or the OS) means and what to do."""
        kind, detail = _classify(exc)
        where = self.describe()
        detail = self._redact(detail)
        message = {
            "locked": f"The database {where} is locked by another process: it was still locked after waiting "
            f"{self._busy_timeout_s:g} s ({detail}). Try again shortly; if it persists, end the program holding a "
            "write transaction open on it (another mcp-llm-server, a database browser), or let writers wait longer "
            "with `?timeout=SECONDS` at the end of MCP_LLM_DATABASE_URL.",
            "unavailable": f"Cannot open the database {where}: {detail}. Check MCP_LLM_DATABASE_URL: a SQLite file's "
            "directory must exist or be creatable, and be writable; a database server must be running and "
            "reachable, with the right user and database name.",
            "lost": f"The connection to the database {where} was lost ({detail}). Try again; if it keeps failing, "
            "check that the database server is up and reachable.",
            "refused": f"The database {where} refused a value or a statement: {detail}.",
            "conflict": f"The database {where} refused a write that conflicts with another one: {detail}.",
            "schema": f"The database {where} cannot be used: {detail}.",
            "failed": f"The database {where} failed: {detail}.",
        }[kind]
        return StoreError(message, kind=kind)

    async def _open(self) -> AsyncEngine:
        await anyio.to_thread.run_sync(import_sqlalchemy)  # off the event loop, and never beside the warm-up's import
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.url)
        except ArgumentError as exc:
            raise StoreError(f"MCP_LLM_DATABASE_URL is not a database URL ({exc}).", kind="schema") from None
        sqlite = url.get_backend_name() == "sqlite"
        self._busy_timeout_s = _busy_timeout_s(url) if sqlite else _BUSY_TIMEOUT_S
        if sqlite and url.database and url.database != ":memory:":
            directory = Path(url.database).parent
            try:
                await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"Cannot create the directory {directory} of the database {self.describe()}: "
                    f"{exc.strerror or exc}. Create it (writable by this user), or set MCP_LLM_DATABASE_URL to a "
                    "database in a writable place.",
                    kind="unavailable",
                ) from None
        try:
            return await self._create_engine(url, sqlite)
        except StoreError:
            raise
        except Exception as exc:  # the driver missing, the server unreachable, the file unusable...
            raise self.failure(exc) from None

    async def _create_engine(self, url: URL, sqlite: bool) -> AsyncEngine:
        from sqlalchemy import event
        from sqlalchemy.exc import IntegrityError, OperationalError
        from sqlalchemy.ext.asyncio import create_async_engine

        from . import _tables

        # hide_parameters: an error or a log line never carries prompts and answers (the statement's values).
        engine = create_async_engine(url, hide_parameters=True, pool_pre_ping=not sqlite)
        if sqlite:
            event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, self._busy_timeout_s))
        try:
            for attempt in range(_PREPARE_TRIES):
                try:
                    async with engine.begin() as conn:
                        await conn.run_sync(_tables.prepare, self.describe())
                    break
                except (IntegrityError, OperationalError) as exc:
                    # Another process created the tables meanwhile (SQLite has no lock to wait on for this): again.
                    if attempt == _PREPARE_TRIES - 1 or _classify(exc)[0] == "unavailable":
                        raise
                    logger.debug("schema preparation collided with another process; again", exc_info=True)
        except BaseException:
            # Cancelled halfway (the server shutting down, the host giving up on the call): the connection is closed
            # all the same, else its driver thread's future outlives the event loop and asyncio's exit waits forever.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WITHIN_S):
                await engine.dispose()
            raise
        logger.debug("database %s opened", self.describe())
        return engine

    async def engine(self) -> AsyncEngine:
        if self._engine is None:
            async with self._lock:
                if self._engine is None:
                    self._engine = await self._open_uncancelled()
        return self._engine

    async def _open_uncancelled(self) -> AsyncEngine:
        """Open the database even if the caller is cancelled meanwhile (the server shutting down 1 s after start, a
        host giving up on a call): a connection cut off halfway leaves SQLAlchemy's graceful-close task waiting on a
        driver thread that is gone, and asyncio's exit then waits for it forever."""
        engine = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(_OPEN_WITHIN_S):
            engine = await self._open()
        if engine is None:
            raise StoreError(
                f"Opening the database {self.describe()} took more than {_OPEN_WITHIN_S:g} s: check that it is "
                "reachable (MCP_LLM_DATABASE_URL).",
                kind="unavailable",
            )
        return engine

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed when the block ends, rolled back when it raises.

        A failure of the database, in the block or at commit, is raised as `StoreError`; the block's own
        exceptions pass through unchanged.
        """
        engine = await self.engine()
        from sqlalchemy.exc import SQLAlchemyError

        try:
            async with engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            logger.debug("database failure", exc_info=True)
            raise self.failure(exc) from None

    async def aclose(self) -> None:
        """Close the connections, even during a shutdown that cancels everything (a cancelled close leaves a driver
        thread behind and a traceback in the log); 5 s at most."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_WITHIN_S):
                await engine.dispose()


def _classify(exc: BaseException) -> tuple[FailureKind, str]:
    """What kind of failure `exc` is, and the driver's own words for it (without the statement or its values)."""
    from sqlalchemy import exc as sa

    orig = getattr(exc, "orig", None)
    detail = " ".join(str(orig if orig is not None else exc).split())[:_DETAIL_CHARS] or type(exc).__name__
    lowered = detail.lower()
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return "lost", detail
    if isinstance(exc, sa.IntegrityError):
        return "conflict", detail
    if "locked" in lowered or "database is busy" in lowered:
        return "locked", detail
    if "connection" in lowered and ("closed" in lowered or "terminat" in lowered or "reset" in lowered):
        return "lost", detail
    if isinstance(exc, OSError) or "unable to open" in lowered or "connect" in lowered or "readonly" in lowered:
        return "unavailable", detail
    if isinstance(exc, sa.NoSuchModuleError | sa.ArgumentError):
        return "schema", detail
    if isinstance(exc, sa.OperationalError):
        return "failed", detail
    if isinstance(exc, sa.StatementError):  # DataError, ProgrammingError, a value the driver could not bind...
        return "refused", detail
    return "failed", detail
