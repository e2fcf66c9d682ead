"""`list_conversations`, `get_conversation`, `delete_conversation`, and the `conversation://{id}` resource.

None of them makes an upstream request. `get_conversation` returns every turn in full: an answer cut short by the
output cap stays readable here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolResult, ToolAnnotations
from pydantic import BaseModel, Field

from ..render import error_result, success_result
from ..sdk_adapter import app_state, caller_identity
from ..state import AppState
from ..store import Conversation, ConversationSummary, StoreError
from ..store.conversations import missing_conversation

__all__ = ["CONVERSATION_URI", "register_conversation_tools"]

CONVERSATION_URI = "conversation://{conversation_id}"

ConversationIdArg = Annotated[
    str, Field(min_length=1, max_length=64, description="The id a result's `conversation_id` gave.")
]
Limit = Annotated[int, Field(ge=1, le=500, description="At most this many, the most recently updated first.")]


class ConversationInfo(BaseModel):
    id: str = Field(description="Pass it as `conversation_id` to ask_openai, ask_claude or ask_many to continue.")
    title: str = Field(description="The first prompt, shortened.")
    providers: list[str] = Field(description="Providers asked in this conversation, first use first.")
    models: list[str] = Field(description="Models that answered, first use first.")
    turns: int = Field(description="Turns stored (one per answer).")
    input_tokens: int = Field(description="Input tokens over every turn, as the providers counted them.")
    output_tokens: int = Field(description="Output tokens over every turn.")
    cached_input_tokens: int = Field(description="Input tokens read from the providers' prompt caches.")
    created_at: str = Field(description="When the first turn was stored (ISO 8601, UTC).")
    updated_at: str = Field(description="When the last turn was stored (ISO 8601, UTC).")


class ConversationList(BaseModel):
    conversations: list[ConversationInfo]
    count: int = Field(description="How many are listed.")


class FileInfo(BaseModel):
    path: str = Field(description="The path as the call gave it.")
    sha256: str = Field(description="SHA-256 of the file's bytes when it was sent.")
    chars: int = Field(description="Characters sent (0 for an image or PDF, whose bytes are not kept).")
    media_type: str | None = Field(default=None, description="An image's or PDF's type; null for a text file.")


class TurnInfo(BaseModel):
    index: int
    provider: str
    model: str
    system: str | None
    prompt: str
    files: list[FileInfo]
    answer: str = Field(description="The full answer, never truncated.")
    stop_reason: str | None
    usage: dict[str, int | None]
    created_at: str


class ConversationDetail(BaseModel):
    conversation: ConversationInfo
    turns: list[TurnInfo]


class DeleteResult(BaseModel):
    conversation_id: str
    deleted: bool = Field(description="False when there was no such conversation.")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _info(s: ConversationSummary) -> ConversationInfo:
    return ConversationInfo(
        id=s.id,
        title=s.title,
        providers=list(s.providers),
        models=list(s.models),
        turns=s.turn_count,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        cached_input_tokens=s.cached_input_tokens,
        created_at=_iso(s.created_at),
        updated_at=_iso(s.updated_at),
    )


def _detail(conversation: Conversation) -> ConversationDetail:
    turns = [
        TurnInfo(
            index=stored.index,
            provider=t.provider,
            model=t.model,
            system=t.system,
            prompt=t.prompt,
            files=[FileInfo(path=f.path, sha256=f.sha256, chars=len(f.text), media_type=f.media_type) for f in t.files],
            answer=t.answer,
            stop_reason=t.stop_reason,
            usage=dict(t.usage),
            created_at=_iso(stored.created_at),
        )
        for stored in conversation.turns
        for t in (stored.turn,)
    ]
    return ConversationDetail(conversation=_info(conversation.summary), turns=turns)


def _transcript(detail: ConversationDetail) -> str:
    """The conversation as Markdown: what the host's model reads."""
    info = detail.conversation
    lines = [
        f"# {info.title}",
        f"Conversation {info.id}: {info.turns} turns, {', '.join(info.models) or 'no models'}; "
        f"{info.input_tokens}→{info.output_tokens} tokens; last update {info.updated_at}.",
    ]
    for turn in detail.turns:
        lines.append(f"\n## Turn {turn.index + 1}: {turn.provider}:{turn.model} ({turn.created_at})\n")
        if turn.files:
            lines.append("Files: " + ", ".join(f"`{f.path}`" for f in turn.files) + "\n")
        lines.append(f"**Prompt:**\n{turn.prompt}\n\n**Answer:**\n{turn.answer}")
    return "\n".join(lines)


def _not_found(conversation_id: str, unsaved: str | None = None) -> str:
    missing = missing_conversation(conversation_id, unsaved)
    return missing if unsaved is not None else f"{missing} Call list_conversations to see the conversations kept."


_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)


def register_conversation_tools(server: MCPServer) -> None:
    _register_list(server)
    _register_get(server)
    _register_delete(server)
    _register_resource(server)


def _register_list(server: MCPServer) -> None:
    @server.tool(
        name="list_conversations",
        title="List saved conversations",
        annotations=_READ_ONLY,
        description="List the saved conversations, the most recently updated first: id, title (the first prompt, "
        "shortened), providers and models used, turns, tokens and last update. Every ask_openai, ask_claude and "
        "ask_many result carries a `conversation_id`; pass it back to continue that conversation.",
    )
    async def list_conversations(
        ctx: Context[AppState], limit: Limit = 20
    ) -> Annotated[CallToolResult, ConversationList]:
        state = app_state(ctx)
        try:
            summaries = await state.conversations.list_recent(limit, caller_identity(ctx).scope)
        except StoreError as exc:
            return error_result(state, str(exc))
        result = ConversationList(conversations=[_info(s) for s in summaries], count=len(summaries))
        return success_result(result.model_dump_json(indent=2), result.model_dump(mode="json"))


def _register_get(server: MCPServer) -> None:
    @server.tool(
        name="get_conversation",
        title="Read a saved conversation",
        annotations=_READ_ONLY,
        description="Read one saved conversation in full: every turn's provider, model, system text, prompt, files "
        "(paths and digests) and complete answer (never truncated), with token usage. Makes no model call.",
    )
    async def get_conversation(
        ctx: Context[AppState], conversation_id: ConversationIdArg
    ) -> Annotated[CallToolResult, ConversationDetail]:
        state = app_state(ctx)
        try:
            conversation = await state.conversations.get_appearing(conversation_id, caller_identity(ctx).scope)
        except StoreError as exc:
            return error_result(state, str(exc))
        if conversation is None:
            return error_result(state, _not_found(conversation_id, state.conversations.unsaved(conversation_id)))
        detail = _detail(conversation)
        return success_result(_transcript(detail), detail.model_dump(mode="json"))


def _register_delete(server: MCPServer) -> None:
    @server.tool(
        name="delete_conversation",
        title="Delete a saved conversation",
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=True, open_world_hint=False, idempotent_hint=True
        ),
        description="Delete a saved conversation and all its turns. It cannot be continued afterwards.",
    )
    async def delete_conversation(
        ctx: Context[AppState], conversation_id: ConversationIdArg
    ) -> Annotated[CallToolResult, DeleteResult]:
        state = app_state(ctx)
        try:
            async with state.conversations.lock(conversation_id):  # not while a call is adding a turn
                deleted = await state.conversations.delete(conversation_id, caller_identity(ctx).scope)
        except StoreError as exc:
            return error_result(state, str(exc))
        result = DeleteResult(conversation_id=conversation_id, deleted=deleted)
        text = f"Deleted conversation {conversation_id}." if deleted else _not_found(conversation_id)
        return success_result(text, result.model_dump(mode="json"))


def _register_resource(server: MCPServer) -> None:
    @server.resource(
        CONVERSATION_URI,
        name="conversation",
        title="A saved conversation",
        description="JSON: one saved conversation with every turn in full (the same as get_conversation).",
        mime_type="application/json",
    )
    async def conversation_resource(conversation_id: str, ctx: Context[AppState]) -> str:
        state = app_state(ctx)
        try:
            conversation = await state.conversations.get(conversation_id, caller_identity(ctx).scope)
        except StoreError as exc:
            raise MCPError(INVALID_PARAMS, state.redact(str(exc))) from None
        if conversation is None:
            raise MCPError(
                INVALID_PARAMS, _not_found(conversation_id), data={"uri": f"conversation://{conversation_id}"}
            )
        return json.dumps(_detail(conversation).model_dump(mode="json"), indent=2, ensure_ascii=False)
