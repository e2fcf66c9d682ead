"""The tables (SQLAlchemy Core) and the schema version; imported only when the database is first opened.

A store that needs tables of its own (the spend ledger) adds them to `metadata` here and raises `SCHEMA_VERSION`.

Text columns are `_Text`/`_String`: PostgreSQL refuses the NUL character in text, so there a NUL is stored as
U+FFFD (the replacement character) and a warning logged; SQLite stores it faithfully. Comparisons go through the
same replacement, so a lookup by a key holding a NUL finds what was stored under it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    insert,
    inspect,
    select,
    text,
    update,
)

from .db import SCHEMA_VERSION, StoreError

logger = logging.getLogger(__name__)

metadata = MetaData()


class _String(TypeDecorator[str]):
    """A string PostgreSQL accepts: NUL characters become U+FFFD there (it refuses them in text)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str) and "\x00" in value and dialect.name == "postgresql":
            logger.warning("text with NUL characters: stored with U+FFFD in their place (PostgreSQL refuses NUL)")
            return value.replace("\x00", "\ufffd")
        return value


class _Text(_String):
    impl = Text
    cache_ok = True


OWNER_CHARS = 200  # caller ids are at most 128 characters (`callers.MAX_CALLER_CHARS`)
SCOPE_CHARS = 200  # budget scopes: `global`, a provider, `caller:<caller id>`
_PREPARE_LOCK = 0x6D63706C6C6D  # "mcpllm": the advisory lock that serialises schema preparation on PostgreSQL

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

conversations = Table(
    "conversations",
    metadata,
    Column("id", _String(32), primary_key=True),
    Column("title", _Text(), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False, index=True),
    # The number of turns; incremented in the same transaction that inserts one (the row lock serialises writers).
    Column("turn_count", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("size_chars", BigInteger, nullable=False),  # text stored in its turns (the size cap counts this)
    # The caller that started it (`callers`); null for conversations from before version 5 (stdio and the admin
    # see those).
    Column("owner", _String(OWNER_CHARS), nullable=True, index=True),
)

turns = Table(
    "turns",
    metadata,
    Column("conversation_id", _String(32), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    Column("turn_index", Integer, primary_key=True),  # unique per conversation: no turn can overwrite another
    Column("provider", _String(32), nullable=False),
    Column("model", _Text(), nullable=False),
    Column("system", _Text(), nullable=True),
    Column("prompt", _Text(), nullable=False),
    Column("files", JSON, nullable=False),  # [{"path", "sha256", "text"}]
    Column("answer", _Text(), nullable=False),
    Column("stop_reason", _String(64), nullable=True),
    Column("usage", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)


# The spend ledger: one row per upstream answer that consumed tokens. Money in nano-dollars (exact sums).
ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("provider", _String(32), nullable=False),
    Column("model", _Text(), nullable=False),
    Column("input_tokens", BigInteger, nullable=True),
    Column("cached_input_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("reasoning_tokens", BigInteger, nullable=True),
    Column("cost_nanos", BigInteger, nullable=True),  # null: the model's price is unknown
    Column("conversation_id", _String(32), nullable=True, index=True),
    Column("tool", _String(64), nullable=False),
    Column("caller", _String(128), nullable=False),
)

# Budget windows: what has been reserved or spent per scope (`global`, `openai`, `anthropic`) and period
# (`day:2026-11-24`, `month:2026-11`). A reservation is one conditional UPDATE per window, in one transaction.
budget_spend = Table(
    "budget_spend",
    metadata,
    Column("scope", _String(SCOPE_CHARS), primary_key=True),
    Column("period", _String(32), primary_key=True),
    Column("spent_nanos", BigInteger, nullable=False),  # settled spend; live reservations are in budget_holds
)

# Reservations: one row per window a call's reservation holds, until it is settled or its lease ends. A hold whose
# lease has ended counts for nothing (a process killed mid-call frees its reservations so); the next settlement in
# its window deletes it.
budget_holds = Table(
    "budget_holds",
    metadata,
    Column("hold_id", _String(32), primary_key=True),
    Column("scope", _String(SCOPE_CHARS), primary_key=True),
    Column("period", _String(32), primary_key=True),
    Column("nanos", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("budget_holds_window", "scope", "period", "expires_at"),
)


# Detached answers: a model call that outlived `MCP_LLM_DETACH_AFTER_S`, fetched or cancelled later by id, from any
# process on the database. `owner` is the process running it (`host:pid:nonce`); it writes `partials` and
# `heartbeat_at` about once a second while running and reads `cancel_requested`. `result` is the finished tool
# result (a CallToolResult as JSON). Shaped so it could back the MCP tasks extension later (id, status, result).
answers = Table(
    "answers",
    metadata,
    Column("id", _String(48), primary_key=True),
    Column("tool", _String(64), nullable=False),
    Column("caller", _String(128), nullable=False),
    Column("status", _String(16), nullable=False),  # running, complete, cancelled, interrupted
    Column("owner", _String(200), nullable=False),
    Column("created_at", Float, nullable=False, index=True),
    Column("heartbeat_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("view", JSON, nullable=False),  # what the tool's `running` result is drawn from (provider, model...)
    Column("partials", JSON, nullable=False),  # {label: partial text so far}
    Column("result", JSON, nullable=True),
    Column("cancel_requested", Boolean, nullable=False),
)


def prepare(conn: Connection, where: str) -> None:
    """Check the schema version (refuse a newer one), create the tables that are missing, record the version.

    Migrations only add tables so far, which `create_all` does: version 1 (conversations) to 2 (ledger, budget
    windows), 2 to 3 (budget_holds: reservations with a lease; a version-2 process's reservations were added to
    `spent_nanos`, which stays the settled spend here, so both can share a database during an upgrade), 3 to 4
    (answers: detached calls). Version 5 adds a column, `conversations.owner` (existing rows keep null: they
    belonged to the single user), and widens the budget scope columns for per-caller budgets (PostgreSQL checks
    the length; SQLite does not).
    """
    if conn.dialect.name == "postgresql":
        # Replicas starting together on an empty database: one creates the tables, the others wait, then see them.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PREPARE_LOCK})
    version = None
    if inspect(conn).has_table("schema_version"):
        version = conn.execute(select(schema_version.c.version)).scalar()
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"The database {where} has schema version {version}, newer than this mcp-llm-server knows "
                f"({SCHEMA_VERSION}): it was written by a newer release. Upgrade mcp-llm-server, or point "
                "MCP_LLM_DATABASE_URL at another database.",
                kind="schema",
            )
    metadata.create_all(conn, checkfirst=True)
    if version is not None and version < 5:
        _add_owners(conn)
    if version is None:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
    elif version < SCHEMA_VERSION:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION))


def _add_owners(conn: Connection) -> None:
    """Version 4 to 5, in the transaction that records the version (PostgreSQL's DDL is transactional; SQLite's
    ADD COLUMN is atomic on its own)."""
    columns = {column["name"] for column in inspect(conn).get_columns("conversations")}
    if "owner" not in columns:
        conn.execute(text(f"ALTER TABLE conversations ADD COLUMN owner VARCHAR({OWNER_CHARS})"))
        conn.execute(text("CREATE INDEX IF NOT EXISTS ix_conversations_owner ON conversations (owner)"))
    if conn.dialect.name == "postgresql":
        for table in ("budget_spend", "budget_holds"):
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN scope TYPE VARCHAR({SCOPE_CHARS})"))
