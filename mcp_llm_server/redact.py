"""Keeps secrets out of every log line, every message sent to the host and every stored row.

`Redactor(secrets)` masks the configured secrets (API keys, the HTTP token, a database password), in the forms an
upstream may echo them (as given, URL-encoded or decoded, JSON- or repr-escaped), and any text shaped like a
well-known API key or token even when it is not configured (another `sk-…` key a proxy echoes back, a GitHub
token, an AWS key id, a JWT…). Always redact *before* shortening a text: a secret cut in half by the shortening
no longer matches, and its first part would leak (`Redactor.clip` does both in that order).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

__all__ = ["MASK", "RedactingFilter", "Redactor"]

MASK = "[redacted]"
_SHAPE_MASK = rf"\g<keep>\g<gap>{MASK}"  # the prefix saying which kind of key it was is kept

# A configured secret shorter than this is masked only where it stands alone (not inside a longer word): a short
# database password such as `postgres` must not turn `postgresql` into `[redacted]ql`.
_WHOLE_WORD_BELOW = 16
_WORD_CHAR = r"[A-Za-z0-9_\-]"


def _shape(prefix: str, body: str, *, gap: str = "") -> re.Pattern[str]:
    """`prefix` (fixed width, starting with a literal) not preceded by a word character, then `gap` (kept) and
    `body` (masked). The literal comes first and the look-behind after it: a pattern that starts with a
    look-behind is tried at every character (15 ms a megabyte instead of 1)."""
    return re.compile(rf"(?P<keep>{prefix})(?<!{_WORD_CHAR}{prefix})(?P<gap>{gap}){body}")


# High-precision shapes (after the gitleaks rules for the same providers): a fixed prefix and a body long enough
# that prose and placeholders (`sk-your-key`) do not match.
_SHAPES: tuple[re.Pattern[str], ...] = (
    # OpenAI (`sk-`, `sk-proj-`, `sk-svcacct-`), Anthropic (`sk-ant-api03-`) and compatible servers; `*` covers the
    # masked form OpenAI echoes (`sk-abc***wxyz`), whose visible ends are still part of the key.
    _shape("sk-", r"[A-Za-z0-9_\-\*]{12,}"),
    _shape("gh[pousr]_", r"[A-Za-z0-9]{30,}"),  # GitHub tokens
    _shape("github_pat_", r"[A-Za-z0-9_]{22,}"),
    _shape("glpat-", r"[A-Za-z0-9_\-]{20,}"),  # GitLab
    _shape("AKIA", r"[A-Z0-9]{16}(?![A-Za-z0-9])"),  # AWS access key ids
    _shape("ASIA", r"[A-Z0-9]{16}(?![A-Za-z0-9])"),
    _shape("AIza", r"[A-Za-z0-9_\-]{35}"),  # Google API keys
    _shape("xox[abposr]-", r"[A-Za-z0-9\-]{10,}"),  # Slack
    _shape("sk_(?:live|test)_", r"[A-Za-z0-9]{16,}"),  # Stripe
    _shape("rk_(?:live|test)_", r"[A-Za-z0-9]{16,}"),
    _shape("hf_", r"[A-Za-z0-9]{30,}"),  # Hugging Face
    _shape("eyJ", r"[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JSON Web Tokens
    _shape("Bearer", r"[A-Za-z0-9._~+/\-]{16,}=*", gap=r"\s+"),
    _shape("bearer", r"[A-Za-z0-9._~+/\-]{16,}=*", gap=r"\s+"),
)


def _forms(secret: str) -> set[str]:
    """The ways a secret can appear in an upstream's text: as configured, URL-encoded, URL-decoded (a database
    password is read from a URL), and escaped in JSON or a Python repr (an error quoting a header value)."""
    forms = {secret, quote(secret, safe=""), unquote(secret), json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    return {form for form in forms if form}


# A progress tail is redacted with this much of the text before it, so a secret that ends inside the tail is
# seen whole; the start of a secret of at least _PARTIAL_MIN characters is held back until the rest arrives.
_TAIL_MARGIN = 1024
_PARTIAL_MIN = 4


class Redactor:
    """`redactor(text)` is `text` with every secret masked, fast enough for whole answers: about 2 ms a megabyte
    for the configured secrets (each is first looked for as a plain string), 25 ms with the key shapes
    (`python -m bench.redaction`)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms = {form for secret in secrets if secret for form in _forms(secret)}
        ordered = sorted(forms, key=len, reverse=True)  # a secret containing another is masked whole
        self._forms = ordered
        self._plain = [form for form in ordered if len(form) >= _WHOLE_WORD_BELOW]
        self._short = [
            (form, re.compile(rf"(?<!{_WORD_CHAR}){re.escape(form)}(?!{_WORD_CHAR})"))
            for form in ordered
            if len(form) < _WHOLE_WORD_BELOW
        ]

    def __call__(self, text: str) -> str:
        """`text` with the configured secrets and well-known key shapes masked."""
        return self.shapes(self.configured(text))

    def configured(self, text: str) -> str:
        """`text` with the configured secrets masked (and nothing else)."""
        for form in self._plain:
            if form in text:
                text = text.replace(form, MASK)
        for form, pattern in self._short:
            if form in text:
                text = pattern.sub(MASK, text)
        return text

    @staticmethod
    def shapes(text: str) -> str:
        """`text` with anything shaped like a well-known API key or token masked, configured or not."""
        for shape in _SHAPES:
            text = shape.sub(_SHAPE_MASK, text)
        return text

    def tail(self, text: str, chars: int) -> str:
        """The last `chars` characters of a growing `text` as a progress notification may show them: secrets and key
        shapes masked (in a margin wide enough to hold any of them whole), and an ending that could be the start of
        a configured secret still arriving held back."""
        window = self._without_partial_secret(self(text[-(chars + _TAIL_MARGIN) :]))
        whole = len(text) <= chars + _TAIL_MARGIN
        return window if whole and len(window) <= chars else "…" + window[-chars:]

    def _without_partial_secret(self, text: str) -> str:
        for form in self._forms:
            for length in range(min(len(form) - 1, len(text)), _PARTIAL_MIN - 1, -1):
                if text.endswith(form[:length]):
                    return text[:-length]
        return text

    def clip(self, text: str, limit: int) -> str:
        """`text` redacted, its whitespace runs collapsed to single spaces, then shortened to `limit` characters
        (an ellipsis marks a cut). In that order: shortening first could cut a secret so that it no longer
        matches."""
        text = " ".join(self(text).split())
        return text if len(text) <= limit else text[: limit - 1] + "…"


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message through a `Redactor`."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._redactor(message)
        if record.exc_info and record.exc_info[1] is not None:
            cleaned += "\n" + self._redactor(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True
