"""Durable storage behind a narrow interface: `Database` (one SQL database, opened on first use) and the stores
built on it (`ConversationStore`). SQLAlchemy is imported only when the database is first opened, so start-up
does not pay for it.
"""

from .answers import AnswerStatus, AnswerStore, StoredAnswer
from .conversations import (
    Conversation,
    ConversationStore,
    ConversationSummary,
    NewTurn,
    StoredFile,
    StoredTurn,
    new_conversation_id,
)
from .db import Database, StoreError, default_database_url
from .spend import (
    CALLER_SCOPE_PREFIX,
    BudgetCap,
    BudgetExceeded,
    LedgerEntry,
    Reservation,
    SettlementFailed,
    SpendStore,
)

__all__ = [
    "CALLER_SCOPE_PREFIX",
    "AnswerStatus",
    "AnswerStore",
    "BudgetCap",
    "BudgetExceeded",
    "Conversation",
    "ConversationStore",
    "ConversationSummary",
    "Database",
    "LedgerEntry",
    "NewTurn",
    "Reservation",
    "SettlementFailed",
    "SpendStore",
    "StoreError",
    "StoredAnswer",
    "StoredFile",
    "StoredTurn",
    "default_database_url",
    "new_conversation_id",
]
