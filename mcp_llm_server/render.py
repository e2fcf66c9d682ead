"""How tool results are rendered: success and error results, the output cap (answers and errors alike)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.types import CallToolResult, TextContent

from .results import TargetAnswer

if TYPE_CHECKING:  # state imports the answers package, which uses `answer_budgets`
    from .state import AppState

__all__ = [
    "ERROR_META_KEY",
    "Truncation",
    "answer_budgets",
    "answer_result",
    "cap_answers",
    "cap_texts",
    "error_result",
    "success_result",
    "truncate_answer",
]


def success_result(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)


# --- the output cap: answers longer than MCP_LLM_MAX_OUTPUT_CHARS are cut, with a note saying so -----------------

CAP_VARIABLE = "MCP_LLM_MAX_OUTPUT_CHARS"


@dataclass(frozen=True, slots=True)
class Truncation:
    text: str  # the answer as returned: whole, or its first characters
    omitted_chars: int
    note: str | None  # None when nothing was cut


def answer_budgets(lengths: Sequence[int], cap: int) -> list[int]:
    """Characters each answer keeps so that together they fit in `cap`: an answer shorter than an equal share
    of what is left keeps every character; the longer ones share the rest equally."""
    budgets = list(lengths)
    if sum(lengths) <= cap:
        return budgets
    remaining, left = cap, len(lengths)
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        budgets[index] = min(lengths[index], remaining // left)
        remaining -= budgets[index]
        left -= 1
    return budgets


def cap_texts(texts: dict[str, str], cap: int) -> dict[str, str]:
    """Labelled texts cut (from their ends) so that together they fit in `cap`, shared as `answer_budgets` shares."""
    keep = answer_budgets([len(text) for text in texts.values()], cap)
    return {label: text[:chars] for (label, text), chars in zip(texts.items(), keep, strict=True)}


def truncate_answer(text: str, keep: int, *, cap: int, conversation_id: str | None) -> Truncation:
    """`text` cut to its first `keep` characters, with a note on how much was cut and where the rest is."""
    if len(text) <= keep:
        return Truncation(text, 0, None)
    omitted = len(text) - keep
    if conversation_id:
        where = f'the whole answer is saved: read it with `get_conversation` (conversation_id "{conversation_id}")'
    else:
        where = "ask for a shorter answer (a lower max_tokens or a narrower question) to get all of it"
    note = (
        f"[Truncated: {omitted:,} of {len(text):,} characters cut from the end to fit this server's output cap "
        f"({CAP_VARIABLE} = {cap:,}); {where}.]"
    )
    return Truncation(text[:keep], omitted, note)


def answer_result(state: AppState, structured: dict[str, Any]) -> CallToolResult:
    """The success result of one answer (`structured["text"]`), truncated to the output cap when longer."""
    cap = state.settings.max_output_chars
    cut = truncate_answer(structured["text"], cap, cap=cap, conversation_id=structured.get("conversation_id"))
    if cut.note is None:
        return success_result(cut.text, structured)
    structured = {
        **structured,
        "text": cut.text,
        "truncated": True,
        "omitted_chars": cut.omitted_chars,
        "truncation_note": cut.note,
    }
    return success_result(f"{cut.text}\n\n{cut.note}", structured)


def cap_answers(answers: Sequence[TargetAnswer], cap: int, conversation_id: str | None) -> None:
    """Cut the answers of a fan-out, in place, so their texts (a failed target's: its partial answer) together fit in
    `cap`."""
    texts = [answer.error.partial_text if answer.error else answer.text or "" for answer in answers]
    for answer, text, keep in zip(answers, texts, answer_budgets([len(t) for t in texts], cap), strict=True):
        cut = truncate_answer(text, keep, cap=cap, conversation_id=conversation_id)
        if cut.note is None:
            continue
        if answer.error:
            answer.error.partial_text = cut.text
        else:
            answer.text = cut.text
        answer.truncated = True
        answer.omitted_chars = cut.omitted_chars
        answer.truncation_note = cut.note


ERROR_META_KEY = "mcp-llm-server/error"


def error_result(
    state: AppState, message: str, details: dict[str, Any] | None = None, *, conforms: bool = False
) -> CallToolResult:
    """An `isError` result; its text is what the host's model reads, so it says what happened and what to do.

    Machine-readable `details` go in `_meta` under `ERROR_META_KEY`, not in `structuredContent`: strict clients
    (the MCP Inspector, TypeScript SDK clients) check `structuredContent` against the tool's output schema even on
    error results. Only `details` that do match it (`conforms=True`) are sent as `structuredContent`.
    """
    message = _capped(state.redact(message), state.settings.max_output_chars)
    redacted = _redacted(state, details) if details is not None else None
    return CallToolResult(
        content=[TextContent(type="text", text=message)],
        structured_content=redacted if conforms else None,
        _meta={ERROR_META_KEY: redacted} if redacted is not None and not conforms else None,
        is_error=True,
    )


def _capped(text: str, cap: int) -> str:
    """An error's text held to the output cap like an answer (a broken stream's partial answer can be long)."""
    cut = truncate_answer(text, cap, cap=cap, conversation_id=None)
    return text if cut.note is None else f"{cut.text}\n\n{cut.note}"


def _redacted(state: AppState, value: Any) -> Any:
    """`value` with every string in it passed through the redactor (upstream error texts may echo a key)."""
    if isinstance(value, str):
        return state.redact(value)
    if isinstance(value, dict):
        return {key: _redacted(state, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(state, item) for item in value]
    return value
