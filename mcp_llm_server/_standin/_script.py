"""What the stand-in answers (``Reply``) and what it remembers (``RecordedRequest``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Api = Literal["responses", "chat", "messages", "models", "other"]
Fault = Literal["reset", "stall", "midstream_error", "drop", "endless"]
Outcome = Literal[
    "completed",
    "client_disconnected",
    "reset",
    "dropped",
    "error_status",
    "midstream_error",
    "stalled_then_disconnected",
    "endless_stopped",
]

DEFAULT_TEXT = "Hello from the stand-in."


@dataclass
class Reply:
    """One scripted answer. Defaults give a short successful completion."""

    text: str = DEFAULT_TEXT
    chunks: list[str] | None = None
    reasoning: list[str] | None = None
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    fault: Fault | None = None
    fault_after: int = 1
    stop_reason: Literal["end", "max_tokens"] = "end"
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int = 0  # reported as read from the prompt cache
    endless_max_s: float = 60.0  # how long an `endless` fault goes on at most

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        message: str | None = None,
        error_type: str | None = None,
    ) -> Reply:
        """An HTTP error response in the provider's JSON error shape."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = _format_seconds(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        return cls(status=status, error_type=error_type, error_message=message, headers=headers)

    @classmethod
    def reset(cls) -> Reply:
        """Abort the TCP connection (RST) before any response byte."""
        return cls(fault="reset")

    @classmethod
    def stall(cls, after: int = 1) -> Reply:
        """Send headers and ``after`` text deltas, then nothing until the client goes away."""
        return cls(fault="stall", fault_after=after)

    @classmethod
    def midstream_error(
        cls, after: int = 1, error_type: str = "overloaded_error", message: str = "Overloaded"
    ) -> Reply:
        """Send ``after`` text deltas, then the API's in-stream error event."""
        return cls(fault="midstream_error", fault_after=after, error_type=error_type, error_message=message)

    @classmethod
    def drop(cls, after: int = 1) -> Reply:
        """Send ``after`` text deltas, then close the connection without ending the body."""
        return cls(fault="drop", fault_after=after)

    @classmethod
    def endless(cls, chunk: str = "word ", *, max_s: float = 60.0) -> Reply:
        """Send the text delta ``chunk`` again and again, as fast as the client reads, until it goes away (or
        ``max_s`` seconds pass): a runaway upstream that never ends its answer."""
        return cls(chunks=[chunk], fault="endless", delay_s=0.0, endless_max_s=max_s)

    def text_chunks(self) -> list[str]:
        """The streamed text pieces; they always join back to the full text."""
        return list(self.chunks) if self.chunks is not None else split_words(self.text)

    def full_text(self) -> str:
        return "".join(self.chunks) if self.chunks is not None else self.text


@dataclass(frozen=True)
class RateLimit:
    """A provider's cap on requests open at once: beyond ``max_open`` a model request is refused at once, in the
    provider's error shape, with ``retry-after-ms`` and ``retry-after`` (whole seconds, rounded up). Refused
    requests hold no place. OpenAI answers 429; Anthropic 429, or 529 (overloaded) with ``anthropic_status``."""

    max_open: int
    retry_after_s: float = 0.25
    anthropic_status: Literal[429, 529] = 429

    def refusal(self, provider: Literal["openai", "anthropic"]) -> Reply:
        status = self.anthropic_status if provider == "anthropic" else 429
        wait_ms = round(self.retry_after_s * 1000)
        message = (
            f"Rate limit reached: at most {self.max_open} requests open at once. Please try again in {wait_ms}ms."
            if status == 429
            else "Overloaded"
        )
        return Reply.error(status, retry_after=math.ceil(self.retry_after_s), retry_after_ms=wait_ms, message=message)


@dataclass
class RecordedRequest:
    """One request as the stand-in received it, and how serving it ended."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    api: Api
    model: str | None
    stream: bool
    request_id: str
    received_at: float
    query: str = ""
    finished_at: float | None = None
    outcome: Outcome | None = None
    deltas_sent: int = 0
    delta_sent_at: list[float] = field(default_factory=list)  # monotonic time each text delta was written
    reply: Reply | None = None


def split_words(text: str) -> list[str]:
    """Split into word-ish pieces, each keeping its leading whitespace, so ``"".join`` gives ``text``."""
    pieces = re.findall(r"\s*\S+", text)
    rest = text[sum(len(p) for p in pieces) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces.append(rest)
    return pieces


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)
