"""Keeps API keys out of every log line and every message sent to the host."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["RedactingFilter", "Redactor"]

# Provider keys look like `sk-...`, `sk-proj-...`, `sk-ant-...`; upstream error messages sometimes echo them.
_KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-\*]{6,}")


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return _KEY_PATTERN.sub("sk-[redacted]", text)


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
