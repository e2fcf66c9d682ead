"""Our own error tree: every failure a tool can report, in words a host's model can act on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .redact import Redactor

__all__ = ["DETAIL_CHARS", "FailureKind", "ProviderNotConfigured", "UpstreamFailure"]

DETAIL_CHARS = 400  # the most of an upstream's own error text a failure carries

FailureKind = Literal[
    "rate_limited",
    "overloaded",
    "server_error",
    "authentication",
    "permission",
    "bad_request",
    "not_found",
    "conflict",
    "timeout",
    "stalled",
    "connection",
    "stream_error",
    "deadline",
    "too_long",
    "refused",
]

_WHAT: dict[FailureKind, str] = {
    "rate_limited": "rate limited",
    "overloaded": "overloaded",
    "server_error": "server error",
    "authentication": "authentication failed (bad or revoked API key)",
    "permission": "permission denied",
    "bad_request": "request rejected as invalid",
    "not_found": "not found (unknown model or endpoint)",
    "conflict": "conflict",
    "timeout": "timed out",
    "stalled": "stream stalled",
    "connection": "connection failed",
    "stream_error": "stream failed",
    "deadline": "call deadline exceeded",
    "too_long": "answer longer than asked for",
    "refused": "refused",
}

_HINT: dict[FailureKind, str] = {
    "rate_limited": "Wait a minute and call again, or lower the request rate.",
    "overloaded": "The provider is overloaded; call again in a little while.",
    "server_error": "The provider failed; call again in a little while.",
    "authentication": "Check the API key configured for the server.",
    "permission": "The API key lacks access to this model or feature; use another model or key.",
    "bad_request": "Fix the arguments (model name, max_tokens, parameters) and call again.",
    "not_found": "Check the model name: `list_models` lists the models each provider offers, and the aliases.",
    "conflict": "Call again.",
    "timeout": "Call again, perhaps with a larger timeout_s or a smaller max_tokens.",
    "stalled": "The provider stopped sending; call again.",
    "connection": "Check the base URL and the network, then call again.",
    "stream_error": "Call again; the partial answer is included.",
    "deadline": "Call again with a larger timeout_s or a smaller max_tokens.",
    "too_long": "Call again, perhaps with a smaller max_tokens.",
    "refused": "",
}


@dataclass(eq=False)
class UpstreamFailure(Exception):
    """A provider call failed; `retryable` says whether another attempt may succeed."""

    provider: str
    kind: FailureKind
    detail: str = ""
    status: int | None = None
    request_id: str | None = None
    retryable: bool = False
    retry_after_s: float | None = None
    attempts: int = 1
    partial_text: str = ""
    gave_up: str = ""
    hint: str = field(default="")

    def __str__(self) -> str:
        return self.describe()

    def redacted(self, redactor: Redactor) -> UpstreamFailure:
        """This failure with the upstream's text redacted and only then shortened to `DETAIL_CHARS`: the adapters
        call it on every failure they raise. (Shortened first, a key echoed near the cut would lose its end, no
        longer match, and leak its first characters.)"""
        return replace(self, detail=redactor.clip(self.detail, DETAIL_CHARS), partial_text=redactor(self.partial_text))

    def describe_briefly(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None and self.status != 200 else ""
        return f"{self.provider}: {_WHAT[self.kind]}{status}"

    def describe(self) -> str:
        parts = [f"{self.describe_briefly()}."]
        if self.detail:
            detail = self.detail if self.detail.endswith((".", "!", "?")) else self.detail + "."
            parts.append(f"Upstream said: {detail}")
        if self.partial_text:
            parts.append(f"The stream broke after {len(self.partial_text)} characters of the answer.")
        if self.attempts > 1:
            parts.append(f"Gave up after {self.attempts} attempts{self.gave_up}.")
        elif self.gave_up:
            parts.append(f"Not retried{self.gave_up}.")
        if self.request_id:
            parts.append(f"Request id: {self.request_id}.")
        hint = self.hint or _HINT[self.kind]
        if hint:
            parts.append(hint)
        return " ".join(parts)

    def as_structured(self) -> dict[str, Any]:
        return {
            "error": {
                "provider": self.provider,
                "kind": self.kind,
                "status": self.status,
                "request_id": self.request_id,
                "retryable": self.retryable,
                "attempts": self.attempts,
                "message": self.describe(),
            },
            "partial_text": self.partial_text,
        }


class ProviderNotConfigured(Exception):
    """The provider has no API key; the message names the variable to set."""

    def __init__(self, provider: str, variable: str) -> None:
        self.provider = provider
        self.variable = variable
        super().__init__(
            f"{provider} is not configured: set {variable} in the server's environment "
            "(for Claude Desktop, in the `env` block of its config) and restart the server."
        )
