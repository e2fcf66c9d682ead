"""Files as context: read the files a call names, inside the allowed roots, as UTF-8 text labelled with their path.

Everything is checked before any upstream request: the path resolved (`..` and symlinks followed) must lie in an
allowed root; names that look like secrets are refused (on both the name given and the file it resolves to); so
are binary files (a NUL byte, or not UTF-8), a file over the per-file cap and a set over the total cap. Reading
is blocking I/O: it runs in a worker thread.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from .providers.base import FileText

__all__ = ["FileLimits", "FileRefused", "read_files"]

# Matched against the lower-cased file name.
_SECRET_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.p12")


class FileRefused(Exception):
    """A file cannot be sent; the message says which and why (and what to do)."""


@dataclass(frozen=True, slots=True)
class FileLimits:
    roots: tuple[Path, ...]
    max_file_bytes: int
    max_total_bytes: int
    allow_secrets: bool = False


def _looks_secret(name: str) -> bool:
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern) for pattern in _SECRET_PATTERNS)


def _resolve(given: str, limits: FileLimits, roots: Sequence[Path]) -> Path:
    raw = Path(given).expanduser()
    candidate = raw if raw.is_absolute() else roots[0] / raw
    if not limits.allow_secrets and _looks_secret(raw.name):
        raise FileRefused(
            f"`{given}` looks like a secret (its name matches {', '.join(_SECRET_PATTERNS)}); it is not sent to a "
            "model. If it is meant to be, the server's operator can set MCP_LLM_ALLOW_SECRET_FILES=1."
        )
    try:
        resolved = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise FileRefused(f"`{given}` does not exist (looked for {candidate}).") from None
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission problem
        raise FileRefused(f"`{given}` cannot be resolved ({type(exc).__name__}: {exc}).") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise FileRefused(
            f"`{given}` resolves to {resolved}, outside the allowed roots ({shown}). Only files under "
            "MCP_LLM_FILE_ROOTS (default: the server's working directory) can be sent."
        )
    if not limits.allow_secrets and _looks_secret(resolved.name):
        raise FileRefused(
            f"`{given}` resolves to {resolved.name}, which looks like a secret; it is not sent to a model "
            "(MCP_LLM_ALLOW_SECRET_FILES=1 allows it)."
        )
    if not resolved.is_file():
        raise FileRefused(f"`{given}` is not a regular file.")
    return resolved


def _read_all(paths: Sequence[str], limits: FileLimits) -> tuple[FileText, ...]:
    roots = [root.resolve() for root in limits.roots]
    resolved = [(given, _resolve(given, limits, roots)) for given in paths]
    total = 0
    for given, path in resolved:  # sizes first: nothing is read when a cap is exceeded
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            raise FileRefused(
                f"`{given}` is {size:,} bytes; files of at most {limits.max_file_bytes:,} bytes are sent "
                "(MCP_LLM_MAX_FILE_BYTES). Send a smaller file or the relevant part in the prompt."
            )
        total += size
    if total > limits.max_total_bytes:
        raise FileRefused(
            f"The files come to {total:,} bytes; at most {limits.max_total_bytes:,} bytes of files are sent per "
            "call (MCP_LLM_MAX_FILES_TOTAL_BYTES). Send fewer files."
        )
    loaded = []
    for given, path in resolved:
        data = path.read_bytes()
        if len(data) > limits.max_file_bytes:  # grew since the check
            raise FileRefused(f"`{given}` grew over {limits.max_file_bytes:,} bytes while being read.")
        if b"\x00" in data:
            raise FileRefused(f"`{given}` is a binary file (it contains NUL bytes); only text files are sent.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileRefused(
                f"`{given}` is not UTF-8 text (byte {exc.start} cannot be decoded); only text files are sent."
            ) from None
        loaded.append(FileText(path=given, text=text, sha256=hashlib.sha256(data).hexdigest()))
    return tuple(loaded)


async def read_files(paths: Sequence[str] | None, limits: FileLimits) -> tuple[FileText, ...]:
    """The files' text, in the order given; raises `FileRefused` (before anything is sent anywhere)."""
    if not paths:
        return ()
    duplicates = sorted({p for p in paths if list(paths).count(p) > 1})
    if duplicates:
        raise FileRefused(f"Each file is sent once: {', '.join(f'`{p}`' for p in duplicates)} given more than once.")
    return await anyio.to_thread.run_sync(_read_all, list(paths), limits)
