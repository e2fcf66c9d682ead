"""What every provider adapter takes and gives back, independent of any SDK."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import anyio

from ..errors import FailureKind, UpstreamFailure
from ..resilience import parse_retry_after, retry_status

__all__ = [
    "REASONING_BUDGETS",
    "Completion",
    "FileMedia",
    "FileText",
    "LLMRequest",
    "OutputFormat",
    "Provider",
    "ProviderId",
    "ReasoningEffort",
    "SentFile",
    "StallClock",
    "StreamSink",
    "Turn",
    "Usage",
    "failure_from_status",
    "media_refusal_hint",
    "normalise_stop_reason",
    "output_allowance",
    "stall_guard",
]

# `openai`, `anthropic`, or a name from MCP_LLM_PROVIDERS (`providers_config.py`).
ProviderId = str
ReasoningEffort = Literal["low", "medium", "high"]

# Tokens of reasoning allowed per effort, on top of the answer's `max_tokens` (Anthropic's `budget_tokens`, at least
# 1,024; OpenAI counts reasoning inside `max_output_tokens`, so it gets the same headroom).
REASONING_BUDGETS: dict[ReasoningEffort, int] = {"low": 2_048, "medium": 8_192, "high": 16_384}


@dataclass(frozen=True, slots=True)
class LLMRequest:
    prompt: str
    model: str
    max_tokens: int
    system: str | None = None
    temperature: float | None = None
    output_format: OutputFormat | None = None
    reasoning_effort: ReasoningEffort | None = None
    # Earlier turns of a conversation (oldest first) and files sent with this prompt: see `providers/history.py`.
    history: tuple[Turn, ...] = ()
    files: tuple[SentFile, ...] = ()


@dataclass(frozen=True, slots=True)
class FileText:
    """A file sent with a prompt: the path the caller gave (its label), its text and the SHA-256 of its bytes."""

    path: str
    text: str
    sha256: str = ""

    def estimated_chars(self) -> int:
        """What it adds to the input, in characters (see `pricing.estimate_input_tokens`)."""
        return len(self.text) + len(self.path)


# Input tokens an image costs at most, as characters (4 a token): Anthropic downscales an image to about 1.15
# megapixels, ~1,600 tokens; OpenAI's high detail costs at most ~1,500. A PDF costs about 1,500-3,000 tokens of
# text per page plus an image of each page; its pages are counted from the uncompressed page objects.
_IMAGE_CHARS = 4 * 1_600
_PDF_PAGE_CHARS = 4 * 4_600
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


@dataclass(frozen=True, slots=True)
class FileMedia:
    """An image (PNG, JPEG, GIF, WebP) or a PDF sent with a prompt, as the API's own image or document input."""

    path: str
    media_type: str  # image/png, image/jpeg, image/gif, image/webp or application/pdf
    data: bytes = field(repr=False)
    sha256: str = ""

    @property
    def is_document(self) -> bool:
        return self.media_type == "application/pdf"

    def estimated_chars(self) -> int:
        """A generous estimate of its input tokens, as characters (a PDF whose page objects are compressed counts
        one page per 100 kB)."""
        if not self.is_document:
            return _IMAGE_CHARS
        pages = len(_PDF_PAGE.findall(self.data)) or len(self.data) // 100_000 + 1
        return pages * _PDF_PAGE_CHARS


SentFile = FileText | FileMedia


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier exchange of a conversation, provider-neutral: what was asked (with its files) and answered.
    `system` is set only when that turn's system text differs from the request's own."""

    prompt: str
    answer: str
    files: tuple[FileText, ...] = ()
    system: str | None = None


def output_allowance(request: LLMRequest) -> int:
    """Output tokens to ask for: the answer's `max_tokens`, plus the reasoning budget when reasoning is asked for
    (the APIs count reasoning and answer together, so without it thinking could eat the whole answer)."""
    if request.reasoning_effort is None:
        return request.max_tokens
    return request.max_tokens + REASONING_BUDGETS[request.reasoning_effort]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """Ask for a JSON answer natively, where the API can: `schema` (its root an object) or, when None, any
    JSON object (JSON mode; APIs without one get nothing). `strict` says `schema` is in OpenAI's strict form.
    """

    schema: Mapping[str, Any] | None
    name: str = "output"
    strict: bool = False


@dataclass(slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None  # part of output_tokens; None when the API reports no separate count
    cached_input_tokens: int | None = None  # input read from the provider's prompt cache


@dataclass(slots=True)
class Completion:
    text: str
    model: str
    stop_reason: str | None
    usage: Usage = field(default_factory=Usage)
    request_id: str | None = None


class StreamSink(Protocol):
    """Receives answer text, and reasoning (summary or thinking) text, as they stream in."""

    async def text(self, delta: str) -> None: ...

    async def reasoning(self, delta: str) -> None: ...


class Provider(Protocol):
    """One upstream API; `stream` makes a single attempt (retries belong to the caller)."""

    id: ProviderId
    label: str

    async def stream(self, request: LLMRequest, sink: StreamSink, *, stall_s: float) -> Completion: ...

    async def list_models(self) -> list[str]:
        """The model ids the provider's models endpoint offers (one request, not retried)."""
        ...


_STOP_REASONS = {
    "end_turn": "end",
    "stop": "end",
    "completed": "end",
    "stop_sequence": "stop_sequence",
    "max_tokens": "max_tokens",
    "length": "max_tokens",
    "max_output_tokens": "max_tokens",
    "content_filter": "content_filter",
    "refusal": "refusal",
}


def normalise_stop_reason(raw: str | None) -> str | None:
    """One vocabulary for every API: end, max_tokens, stop_sequence, content_filter, refusal (or the raw value)."""
    if raw is None:
        return None
    return _STOP_REASONS.get(raw, raw)


_STATUS_KINDS: dict[int, FailureKind] = {
    400: "bad_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "bad_request",
    422: "bad_request",
    429: "rate_limited",
    503: "overloaded",
    529: "overloaded",
}


def failure_from_status(
    label: str,
    status: int,
    *,
    detail: str,
    headers: Mapping[str, str] | None,
    request_id: str | None,
) -> UpstreamFailure:
    kind = _STATUS_KINDS.get(status) or ("server_error" if status >= 500 else "bad_request")
    return UpstreamFailure(
        provider=label,
        kind=kind,
        detail=detail,
        status=status,
        request_id=request_id,
        retryable=retry_status(status, headers),
        retry_after_s=parse_retry_after(headers),
    )


def media_refusal_hint(request: LLMRequest) -> str:
    """What to do when the API refused a request that carried images or PDFs ("" when it carried none)."""
    if not any(isinstance(file, FileMedia) for file in request.files):
        return ""
    return (
        "The request carried images or PDFs (`files`): if this model does not take them, use one that does (a "
        "vision model; for PDFs one that reads documents) or call without them; if one is too large for the "
        "API, send a smaller one."
    )


class StallClock:
    """Moves a stream's stall deadline forward as data arrives.

    One cancel scope covers the whole exchange; `touch()` costs a clock read per event and reschedules the
    scope's timer only every 5% of the limit, so the silence tolerated is between 1 and 1.05 times the limit.
    """

    def __init__(self, scope: anyio.CancelScope, stall_s: float) -> None:
        self._scope = scope
        self._stall_s = stall_s
        self._slack = stall_s / 20
        self._moved_at = anyio.current_time()

    def touch(self) -> None:
        now = anyio.current_time()
        if now - self._moved_at > self._slack:
            self._moved_at = now
            self._scope.deadline = now + self._stall_s + self._slack


@contextmanager
def stall_guard(stall_s: float, label: str) -> Iterator[StallClock]:
    """Fail the block as `stalled` (retryable) when nothing arrives for `stall_s` seconds."""
    with anyio.CancelScope(deadline=anyio.current_time() + stall_s * 1.05) as scope:
        yield StallClock(scope, stall_s)
    if scope.cancelled_caught:
        raise UpstreamFailure(
            provider=label,
            kind="stalled",
            detail=f"nothing received for {stall_s:g} s (the stall limit)",
            retryable=True,
        )
