"""What a call sends besides its prompt: the files it names and the earlier turns of its conversation.

`prepare_context` reads the files (refusing before any upstream request), and, for a conversation being continued,
holds that conversation's lock while the caller asks the model and saves its turn(s), so two calls on one
conversation run one after the other and each sees the other's turn. Both happen within the call's deadline.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..callers import Caller
from ..files import FileRefused, read_files
from ..providers.base import Completion, FileMedia, FileText, SentFile, Turn
from ..providers.history import earlier_media_note
from ..state import AppState
from ..store import NewTurn, StoredFile, StoredTurn, StoreError, new_conversation_id
from ..store.conversations import missing_conversation
from .deadline import Deadline

__all__ = ["CallContext", "ContextRefused", "prepare_context", "trim_history"]

logger = logging.getLogger(__name__)


class ContextRefused(Exception):
    """The call cannot go ahead (a file refused, an unknown conversation, the database unusable)."""


@dataclass
class CallContext:
    conversation_id: str
    continued: bool
    history: tuple[Turn, ...]
    turns_omitted: int
    system: str | None  # the call's own system text, or the conversation's latest when it gives none
    files: tuple[SentFile, ...]
    owner: str  # the caller's id: a new conversation is theirs

    def new_turn(self, provider: str, prompt: str, completion: Completion) -> NewTurn:
        usage = completion.usage
        return NewTurn(
            provider=provider,
            model=completion.model,
            system=self.system,
            prompt=prompt,
            answer=completion.text,
            files=self.stored_files(),
            stop_reason=completion.stop_reason,
            usage=asdict(usage),  # every count the adapter reported
        )

    def stored_files(self) -> tuple[StoredFile, ...]:
        """The files as a conversation keeps them: an image's or PDF's path, type and digest, not its bytes."""
        return tuple(
            StoredFile(f.path, f.sha256, "", f.media_type)
            if isinstance(f, FileMedia)
            else StoredFile(f.path, f.sha256, f.text)
            for f in self.files
        )

    async def save(self, state: AppState, turns: Sequence[NewTurn]) -> tuple[str | None, str | None]:
        """Append the turns: the conversation id (None when they could not be saved) and, then, why not.

        The write happens after the answer has gone out (`store.behind`); a failure known only then is logged and
        told to whoever next asks for the conversation. The answer was paid for and is in hand: no failure of the
        database may lose it."""
        if not turns:
            return (self.conversation_id if self.continued else None), None
        failure = await state.conversations.append_behind(self.conversation_id, turns, self.owner)
        if failure is not None:
            return None, (
                f"This answer could not be saved to a conversation ({failure}); it is complete here, but "
                "conversation_id is null and get_conversation will not show it."
            )
        return self.conversation_id, None


def _size(turn: StoredTurn) -> int:
    return turn.turn.size_chars()


def trim_history(turns: Sequence[StoredTurn], budget: int) -> tuple[list[StoredTurn], int]:
    """The newest turns whose text fits in `budget` characters, and how many older ones were left out."""
    kept: list[StoredTurn] = []
    used = 0
    for turn in reversed(turns):
        used += _size(turn)
        if used > budget:
            break
        kept.append(turn)
    kept.reverse()
    return kept, len(turns) - len(kept)


def _as_turn(stored: StoredTurn, system: str | None) -> Turn:
    t = stored.turn
    return Turn(
        prompt=t.prompt,
        answer=t.answer,
        files=tuple(_as_file(f) for f in t.files),
        system=t.system if t.system and t.system != system else None,
    )


def _as_file(stored: StoredFile) -> FileText:
    if stored.media_type is None:
        return FileText(stored.path, stored.text, stored.sha256)
    return FileText(stored.path, earlier_media_note(stored.media_type, stored.sha256), stored.sha256)


def _no_conversation(conversation_id: str, unsaved: str | None) -> str:
    advice = (
        "Omit conversation_id to start a new one, passing what the model needs to know in the prompt."
        if unsaved is not None
        else "Call list_conversations to see the conversations kept, or omit conversation_id to start a new one."
    )
    return f"{missing_conversation(conversation_id, unsaved)} {advice}"


@asynccontextmanager
async def prepare_context(
    state: AppState,
    deadline: Deadline,
    caller: Caller,
    *,
    conversation_id: str | None,
    system: str | None,
    files: list[str] | None,
    client_roots: Sequence[Path] = (),
) -> AsyncIterator[CallContext]:
    """Raises `ContextRefused` before anything is sent upstream, `DeadlineExceeded` when reading the files or
    waiting for the conversation's lock outlasts the call's deadline."""
    with deadline.bound("reading the files"):
        try:
            loaded = await read_files(files, state.file_limits, deadline=deadline.ends_at, client_roots=client_roots)
        except FileRefused as exc:
            raise ContextRefused(str(exc)) from None
    if conversation_id is None:
        yield CallContext(new_conversation_id(), False, (), 0, system, loaded, caller.id)
        return
    store = state.conversations
    async with AsyncExitStack() as held:
        with deadline.bound(f"waiting for conversation `{conversation_id}` (another call on it is still running)"):
            await held.enter_async_context(store.lock(conversation_id))
        try:
            with deadline.bound("loading the conversation"):
                conversation = await store.get_appearing(conversation_id, caller.scope)
        except StoreError as exc:
            raise ContextRefused(str(exc)) from None
        if conversation is None:
            raise ContextRefused(_no_conversation(conversation_id, store.unsaved(conversation_id)))
        if system is None:
            system = next((t.turn.system for t in reversed(conversation.turns) if t.turn.system), None)
        kept, omitted = trim_history(conversation.turns, state.settings.history_max_chars)
        history = tuple(_as_turn(t, system) for t in kept)
        yield CallContext(conversation_id, True, history, omitted, system, loaded, caller.id)
