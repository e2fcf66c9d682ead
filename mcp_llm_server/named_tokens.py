"""Named bearer tokens (`MCP_LLM_HTTP_TOKENS`): reading them from settings, and finding whose a presented token is.

Tokens are kept as SHA-256 digests and compared digest to digest with `hmac.compare_digest`, every one of them
each time, so neither the comparison's time nor an early exit says how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from pydantic import SecretStr

from .json_setting import json_object

__all__ = ["MIN_TOKEN_CHARS", "NamedTokens", "parse_named_tokens"]

MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_MAX_TOKEN_FILE_BYTES = 4096


def parse_named_tokens(value: object) -> dict[str, SecretStr]:
    """`{"name": "token" | {"file": "/path"}}` (a JSON string or a mapping) to name -> token. Messages name the
    entry and never show a token."""
    value = json_object(value, '{"name": "token" or {"file": "/path"}}')
    tokens: dict[str, SecretStr] = {}
    for name, entry in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"token name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
        token = _token_of(name, entry)
        if token in (known.get_secret_value() for known in tokens.values()):
            raise ValueError(f"token {name!r} is the same as another name's: give each caller its own")
        tokens[name] = SecretStr(token)
    return tokens


def _token_of(name: str, entry: object) -> str:
    if isinstance(entry, SecretStr):
        entry = entry.get_secret_value()
    if isinstance(entry, dict) and set(entry) == {"file"} and isinstance(entry["file"], str):
        token = _read_token_file(name, entry["file"])
    elif isinstance(entry, str):
        token = entry
    else:
        raise ValueError(f'token {name!r}: expected the token as a string or {{"file": "/path"}}')
    if any(char.isspace() for char in token):
        raise ValueError(f"token {name!r} contains whitespace (a stray space or newline?); remove it")
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"token {name!r} must be at least {MIN_TOKEN_CHARS} characters (`openssl rand -hex 32`)")
    return token


def _read_token_file(name: str, path: str) -> str:
    try:
        with Path(path).expanduser().open("rb") as handle:
            data = handle.read(_MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"token {name!r}: cannot read {path}: {exc.strerror}") from None
    if len(data) > _MAX_TOKEN_FILE_BYTES:
        raise ValueError(f"token {name!r}: {path} is over {_MAX_TOKEN_FILE_BYTES} bytes; it should hold one token")
    try:
        return data.decode().strip()  # a file usually ends with a newline
    except UnicodeDecodeError:
        raise ValueError(f"token {name!r}: {path} is not UTF-8 text") from None


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class NamedTokens:
    """Finds the name a bearer token was given to."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = [(name, _digest(token.encode())) for name, token in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def name_of(self, token: bytes) -> str | None:
        """The token's name (the first given, should two share a token), or None. Every digest is compared,
        whatever matches."""
        presented = _digest(token)
        found = None
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found
