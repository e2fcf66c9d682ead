"""A request's conversation history and files as each API's messages.

One rendering for every API, so a conversation started with one provider continues with the other: each earlier
turn becomes a user message (its files, each labelled with its path, then its prompt) and an assistant message (its
answer); the current prompt, after its files, is the last user message. Anthropic gets the parts as separate
text blocks, with `cache_control` on the last block of the stable prefix (earlier turns and the current files), so
a conversation about the same files reads them from the prompt cache.
"""

from __future__ import annotations

from typing import Any

from .base import FileText, LLMRequest, Turn

__all__ = ["anthropic_messages", "chat_messages", "responses_input", "user_parts"]

_CACHE = {"type": "ephemeral"}


def file_block(file: FileText) -> str:
    return f'<file path="{file.path}">\n{file.text}\n</file>'


def user_parts(prompt: str, files: tuple[FileText, ...], system: str | None = None) -> list[str]:
    """The text parts of one user message: a note of the turn's own system text, its files, then its prompt."""
    parts = [f"<system_instructions_for_this_turn>\n{system}\n</system_instructions_for_this_turn>"] if system else []
    parts += [file_block(file) for file in files]
    parts.append(prompt)
    return parts


def _turn_parts(turn: Turn) -> list[str]:
    return user_parts(turn.prompt, turn.files, turn.system)


def _joined(parts: list[str]) -> str:
    return "\n\n".join(parts)


def _exchanges(request: LLMRequest) -> list[tuple[str, str]]:
    """(role, text) for every message, one string per message: the form both OpenAI APIs take."""
    messages: list[tuple[str, str]] = []
    for turn in request.history:
        messages.append(("user", _joined(_turn_parts(turn))))
        messages.append(("assistant", turn.answer))
    messages.append(("user", _joined(user_parts(request.prompt, request.files))))
    return messages


def responses_input(request: LLMRequest) -> str | list[Any]:
    """The Responses API `input`: the prompt alone as a string, or a list of messages."""
    if not request.history and not request.files:
        return request.prompt
    return [{"role": role, "content": text} for role, text in _exchanges(request)]


def chat_messages(request: LLMRequest) -> list[Any]:
    """Chat Completions `messages`, the system message first."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    messages += [{"role": role, "content": text} for role, text in _exchanges(request)]
    return messages


def anthropic_messages(request: LLMRequest) -> list[Any]:
    """Messages API `messages`; the last block of the stable prefix carries `cache_control` when there is one."""
    if not request.history and not request.files:
        return [{"role": "user", "content": request.prompt}]
    messages: list[dict[str, Any]] = []
    for turn in request.history:
        messages.append({"role": "user", "content": [{"type": "text", "text": p} for p in _turn_parts(turn)]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.answer or "(no answer)"}]})
    current: list[dict[str, Any]] = [{"type": "text", "text": p} for p in user_parts(request.prompt, request.files)]
    messages.append({"role": "user", "content": current})
    # The prefix that stays the same on the next call: everything but the current prompt.
    last_stable: dict[str, Any] = current[-2] if request.files else messages[-2]["content"][-1]
    last_stable["cache_control"] = dict(_CACHE)
    return messages
