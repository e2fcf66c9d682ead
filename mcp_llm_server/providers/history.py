"""A request's conversation history and files as each API's messages.

One rendering for every API, so a conversation started with one provider continues with the other: each earlier
turn becomes a user message (its files, each labelled with its path, then its prompt) and an assistant message (its
answer); the current prompt, after its files, is the last user message. Anthropic gets the parts as separate
text blocks, with `cache_control` on the last block of the stable prefix (earlier turns and the current files), so
a conversation about the same files reads them from the prompt cache.

Images and PDFs (`FileMedia`) of the current prompt go as each API's own image or document input, each after a
text part `<file path="…" type="…">` that labels it. Their bytes are not kept with a conversation: an earlier turn's
image or PDF comes back as a short note (`earlier_media_note`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

from .base import FileMedia, FileText, LLMRequest, SentFile, Turn

__all__ = ["anthropic_messages", "chat_messages", "earlier_media_note", "responses_input", "user_parts"]

# One user message: text, and the images and PDFs between it.
_Segment = str | FileMedia

_CACHE = {"type": "ephemeral"}


def file_block(file: FileText) -> str:
    return f'<file path="{file.path}">\n{file.text}\n</file>'


def media_label(file: FileMedia) -> str:
    return f'<file path="{file.path}" type="{file.media_type}">'


def earlier_media_note(media_type: str, sha256: str) -> str:
    """What stands for an image or PDF of an earlier turn (its bytes are not kept)."""
    return (
        f"[{media_type}, sha256 {sha256}: sent in an earlier turn and not kept; "
        "send it again in `files` to show it again]"
    )


def user_parts(prompt: str, files: Sequence[SentFile], system: str | None = None) -> list[_Segment]:
    """The parts of one user message: a note of the turn's own system text, its files (an image or PDF after its
    label), then its prompt."""
    parts: list[_Segment] = (
        [f"<system_instructions_for_this_turn>\n{system}\n</system_instructions_for_this_turn>"] if system else []
    )
    for file in files:
        parts += [media_label(file), file] if isinstance(file, FileMedia) else [file_block(file)]
    parts.append(prompt)
    return parts


def _turn_parts(turn: Turn) -> list[_Segment]:
    return user_parts(turn.prompt, turn.files, turn.system)


def data_url(file: FileMedia) -> str:
    return f"data:{file.media_type};base64,{base64.b64encode(file.data).decode('ascii')}"


def _openai_content(parts: list[_Segment], text_type: str, media: Callable[[FileMedia], dict[str, Any]]) -> Any:
    """One string when every part is text (the form both OpenAI APIs have always been sent); else a list of parts,
    the text between two media parts joined into one."""
    if all(isinstance(part, str) for part in parts):
        return "\n\n".join(str(part) for part in parts)
    content: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
            continue
        if texts:
            content.append({"type": text_type, "text": "\n\n".join(texts)})
            texts = []
        content.append(media(part))
    if texts:
        content.append({"type": text_type, "text": "\n\n".join(texts)})
    return content


def _openai_messages(request: LLMRequest, text_type: str, media: Callable[[FileMedia], dict[str, Any]]) -> list[Any]:
    messages: list[dict[str, Any]] = []
    for turn in request.history:
        messages.append({"role": "user", "content": _openai_content(_turn_parts(turn), text_type, media)})
        messages.append({"role": "assistant", "content": turn.answer})
    current = _openai_content(user_parts(request.prompt, request.files), text_type, media)
    messages.append({"role": "user", "content": current})
    return messages


def _responses_media(file: FileMedia) -> dict[str, Any]:
    if file.is_document:
        return {"type": "input_file", "filename": _filename(file), "file_data": data_url(file)}
    return {"type": "input_image", "image_url": data_url(file), "detail": "auto"}


def _chat_media(file: FileMedia) -> dict[str, Any]:
    if file.is_document:
        return {"type": "file", "file": {"filename": _filename(file), "file_data": data_url(file)}}
    return {"type": "image_url", "image_url": {"url": data_url(file)}}


def _filename(file: FileMedia) -> str:
    return file.path.replace("\\", "/").rsplit("/", 1)[-1] or "document.pdf"


def responses_input(request: LLMRequest) -> str | list[Any]:
    """The Responses API `input`: the prompt alone as a string, or a list of messages."""
    if not request.history and not request.files:
        return request.prompt
    return _openai_messages(request, "input_text", _responses_media)


def chat_messages(request: LLMRequest) -> list[Any]:
    """Chat Completions `messages`, the system message first."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
    messages += _openai_messages(request, "text", _chat_media)
    return messages


def _anthropic_block(part: _Segment) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    source = {"type": "base64", "media_type": part.media_type, "data": base64.b64encode(part.data).decode("ascii")}
    return {"type": "document" if part.is_document else "image", "source": source}


def anthropic_messages(request: LLMRequest) -> list[Any]:
    """Messages API `messages`; the last block of the stable prefix carries `cache_control` when there is one."""
    if not request.history and not request.files:
        return [{"role": "user", "content": request.prompt}]
    messages: list[dict[str, Any]] = []
    for turn in request.history:
        messages.append({"role": "user", "content": [_anthropic_block(p) for p in _turn_parts(turn)]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.answer or "(no answer)"}]})
    current: list[dict[str, Any]] = [_anthropic_block(p) for p in user_parts(request.prompt, request.files)]
    messages.append({"role": "user", "content": current})
    # The prefix that stays the same on the next call: everything but the current prompt.
    last_stable: dict[str, Any] = current[-2] if request.files else messages[-2]["content"][-1]
    last_stable["cache_control"] = dict(_CACHE)
    return messages
