"""The tables (SQLAlchemy Core) and the schema version; imported only when the database is first opened.

A store that needs tables of its own (the spend ledger) adds them to `metadata` here and raises `SCHEMA_VERSION`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
    update,
)

from .db import SCHEMA_VERSION, StoreError

metadata = MetaData()

_PREPARE_LOCK = 0x6D63706C6C6D  # "mcpllm": the advisory lock that serialises schema preparation on PostgreSQL

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("title", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False, index=True),
    # The number of turns; incremented in the same transaction that inserts one (the row lock serialises writers).
    Column("turn_count", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("size_chars", BigInteger, nullable=False),  # text stored in its turns (the size cap counts this)
)

turns = Table(
    "turns",
    metadata,
    Column("conversation_id", String(32), ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True),
    Column("turn_index", Integer, primary_key=True),  # unique per conversation: no turn can overwrite another
    Column("provider", String(32), nullable=False),
    Column("model", Text, nullable=False),
    Column("system", Text, nullable=True),
    Column("prompt", Text, nullable=False),
    Column("files", JSON, nullable=False),  # [{"path", "sha256", "text"}]
    Column("answer", Text, nullable=False),
    Column("stop_reason", String(64), nullable=True),
    Column("usage", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
)


# The spend ledger: one row per upstream answer that consumed tokens. Money in nano-dollars (exact sums).
ledger = Table(
    "ledger",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False, index=True),
    Column("provider", String(32), nullable=False),
    Column("model", Text, nullable=False),
    Column("input_tokens", BigInteger, nullable=True),
    Column("cached_input_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("reasoning_tokens", BigInteger, nullable=True),
    Column("cost_nanos", BigInteger, nullable=True),  # null: the model's price is unknown
    Column("conversation_id", String(32), nullable=True, index=True),
    Column("tool", String(64), nullable=False),
    Column("caller", String(128), nullable=False),
)

# Budget windows: what has been reserved or spent per scope (`global`, `openai`, `anthropic`) and period
# (`day:2026-11-24`, `month:2026-11`). A reservation is one conditional UPDATE per window, in one transaction.
budget_spend = Table(
    "budget_spend",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("period", String(32), primary_key=True),
    Column("spent_nanos", BigInteger, nullable=False),
)


def prepare(conn: Connection, where: str) -> None:
    """Check the schema version (refuse a newer one), create the tables that are missing, record the version.

    Migrations: version 1 (conversations) to 2 (ledger, budget windows) only adds tables, which `create_all` does.
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
                "MCP_LLM_DATABASE_URL at another database."
            )
    metadata.create_all(conn, checkfirst=True)
    if version is None:
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
    elif version < SCHEMA_VERSION:
        conn.execute(update(schema_version).values(version=SCHEMA_VERSION))
