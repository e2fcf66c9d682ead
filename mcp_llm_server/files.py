"""Files as context: read the files a call names, inside the allowed roots, as UTF-8 text labelled with their path,
or as images (PNG, JPEG, GIF, WebP) and PDF documents, recognised by their first bytes, never by their names.

There is no implicit root: files are read only under `MCP_LLM_FILE_ROOTS`, or else under the roots the client
offers (MCP roots); with neither, every file is refused with a message saying how to allow a directory.

Each file is opened once and what was opened is checked, so swapping a path between a check and the read cannot
change what is sent: the path is resolved, opened with O_NOFOLLOW|O_NONBLOCK (a symlink swapped in fails; a FIFO
or a device never blocks the open), and the opened descriptor must be a regular file whose real location (the
kernel's path of the descriptor) lies in a root. Names that look like secrets are refused (the name given and the
file's real name), and so is content that carries one (`secret_scan`), as are binary files and files over the
caps. Images and PDFs go through the same checks, with caps of their own; their raw bytes, read as Latin-1, are
scanned for secrets (which finds text stored uncompressed: image metadata, uncompressed PDF text; never text in
pixels or in compressed streams), and never carry one of the server's own secrets. The reads run in a daemon
thread, in chunks, and stop at the caller's deadline or when the call is cancelled; a thread stuck in the kernel
cannot hold the process up at exit.

Refusals for a path outside the roots say only that: whether it exists there is not revealed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from .providers.base import FileMedia, FileText, SentFile
from .secret_scan import secret_in_text, secret_name

__all__ = ["FileLimits", "FileRefused", "media_type_of", "read_files"]

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_CHUNK = 64 * 1024
_ALLOW_HOW = (
    "The server's operator allows a directory with MCP_LLM_FILE_ROOTS (e.g. MCP_LLM_FILE_ROOTS=/path/to/project; "
    "several separated by `:`), or the MCP client offers its workspace as roots."
)
_SECRET_HOW = "If it is meant to be sent, the server's operator can set MCP_LLM_ALLOW_SECRET_FILES=1."
_ACCEPTED = "only text files, PNG, JPEG, GIF and WebP images and PDF documents are sent"
_HEAD = 12  # bytes enough to tell every accepted kind apart

T = TypeVar("T")


class FileRefused(Exception):
    """A file cannot be sent; the message says which and why (and what to do)."""


@dataclass(frozen=True, slots=True)
class FileLimits:
    roots: tuple[Path, ...]  # MCP_LLM_FILE_ROOTS; empty: only the roots the client offers
    max_file_bytes: int  # one text file
    max_total_bytes: int  # the text files of a call together
    max_image_bytes: int
    max_document_bytes: int
    max_media_total_bytes: int  # the images and PDFs of a call together
    allow_secrets: bool = False
    own_secrets: tuple[str, ...] = field(default=(), repr=False)  # the server's keys: never sent, whatever is allowed


@dataclass
class _Opened:
    given: str
    fd: int
    real: str
    size: int
    head: bytes = b""  # the first bytes, already read
    media_type: str | None = None  # None: a text file


def media_type_of(head: bytes) -> str | None:
    """The media type of an accepted image or PDF, from a file's first bytes (magic numbers); None for the rest."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return None


class _Stopped(Exception):
    """The caller gave up (deadline or cancellation): the reading thread stops where it is."""


def _inside(path: str, roots: Sequence[str]) -> str | None:
    """The root `path` (a real path) lies in, or None."""
    for root in roots:
        if path == root or path.startswith(root.rstrip(os.sep) + os.sep):
            return root
    return None


def _fd_location(fd: int) -> str | None:
    """The kernel's own path for an open descriptor (symlinks resolved, as of now), when the platform tells it."""
    if sys.platform.startswith("linux"):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
    if sys.platform == "darwin":
        import fcntl

        try:
            raw = fcntl.fcntl(fd, getattr(fcntl, "F_GETPATH", 50), b"\0" * 1024)
        except OSError:
            return None
        return os.fsdecode(raw.rstrip(b"\0"))
    return None


class _Reader:
    """The blocking half: runs in its own thread; `stop` is set when the caller is gone."""

    def __init__(self, limits: FileLimits, roots: Sequence[Path], stop: threading.Event, deadline: float) -> None:
        self.limits = limits
        self.base = roots[0]
        self.shown_roots = ", ".join(str(root) for root in roots)
        self.real_roots = [os.path.realpath(root) for root in roots]
        self.stop = stop
        self.deadline = deadline  # time.monotonic()

    def check_running(self) -> None:
        if self.stop.is_set() or time.monotonic() > self.deadline:
            raise _Stopped

    def outside(self, given: str) -> FileRefused:
        return FileRefused(
            f"`{given}` is outside the allowed roots ({self.shown_roots}): only files under them can be sent. "
            "Name a file inside one of them (relative paths start at the first)."
        )

    def refuse_secret_name(self, given: str, real: str, root: str) -> None:
        if self.limits.allow_secrets:
            return
        for parts in (Path(given).parts[-1:], Path(os.path.relpath(real, root)).parts):
            matched = secret_name(parts)
            if matched is not None:
                raise FileRefused(
                    f"`{given}` looks like a secret (its name or real location matches `{matched}`); it is not sent "
                    f"to a model. {_SECRET_HOW}"
                )

    def open(self, given: str) -> _Opened:
        candidate = os.path.join(self.base, os.path.expanduser(given))
        try:
            real = os.path.realpath(candidate)
        except OSError:  # a symlink replaced while being resolved
            raise FileRefused(f"`{given}` changed while being resolved; try again once it stays put.") from None
        root = _inside(real, self.real_roots)
        if root is None:
            raise self.outside(given)
        self.refuse_secret_name(given, real, root)
        try:
            before = os.lstat(real)  # not even opened when it is plainly not a regular file
        except FileNotFoundError:
            raise FileRefused(f"`{given}` does not exist (looked for {candidate}).") from None
        except OSError as exc:
            raise FileRefused(f"`{given}` cannot be read ({type(exc).__name__}).") from None
        if not stat.S_ISREG(before.st_mode):
            raise FileRefused(f"`{given}` is not a regular file; only regular text files are sent.")
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as exc:
            raise FileRefused(
                f"`{given}` could not be opened ({type(exc).__name__}); it may have changed while being opened. "
                "Try again once it is a plain file."
            ) from None
        try:
            return self.check_opened(given, fd, real)
        except BaseException:
            os.close(fd)
            raise

    def check_opened(self, given: str, fd: int, real: str) -> _Opened:
        """What was opened must be a regular file that really lies in a root (whatever the path does now)."""
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise FileRefused(f"`{given}` is not a regular file; only regular text files are sent.")
        location = _fd_location(fd)
        if location is None:  # no kernel path: the path, resolved again, must still lead to this very file
            location = os.path.realpath(real)
            try:
                now = os.stat(location)
            except OSError:
                raise self.outside(given) from None
            if (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino):
                raise self.outside(given)
        root = _inside(location, self.real_roots)
        if root is None:
            raise self.outside(given)
        self.refuse_secret_name(given, location, root)
        try:
            head = os.read(fd, _HEAD)
        except BlockingIOError:  # only a special file does that, and those were refused
            raise FileRefused(f"`{given}` is not a regular file.") from None
        return _Opened(given, fd, location, opened.st_size, head, media_type_of(head))

    def cap(self, opened: _Opened) -> tuple[int, str]:
        """The largest such file, and the variable that sets it."""
        if opened.media_type is None:
            return self.limits.max_file_bytes, "MCP_LLM_MAX_FILE_BYTES"
        if opened.media_type == "application/pdf":
            return self.limits.max_document_bytes, "MCP_LLM_MAX_DOCUMENT_BYTES"
        return self.limits.max_image_bytes, "MCP_LLM_MAX_IMAGE_BYTES"

    def read(self, opened: _Opened) -> bytes:
        cap = self.cap(opened)[0]
        chunks = [opened.head]
        size = len(opened.head)
        while size <= cap:  # the head alone may be over a tiny cap when the file grew after it was measured
            self.check_running()
            try:
                chunk = os.read(opened.fd, min(_CHUNK, cap + 1 - size))
            except BlockingIOError:  # only a special file does that, and those were refused
                raise FileRefused(f"`{opened.given}` is not a regular file.") from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise FileRefused(f"`{opened.given}` grew over {cap:,} bytes while being read.")

    def refuse_secret_content(self, given: str, found: str | None) -> None:
        if found is not None and (not self.limits.allow_secrets or found.startswith("one of this server's")):
            allowed = "" if found.startswith("one of this server's") else f" {_SECRET_HOW}"
            raise FileRefused(f"`{given}` contains {found}; it is not sent to a model.{allowed}")

    def text(self, opened: _Opened, data: bytes) -> FileText:
        given = opened.given
        if b"\x00" in data:
            raise FileRefused(f"`{given}` is a binary file (it contains NUL bytes); {_ACCEPTED}.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileRefused(
                f"`{given}` is not UTF-8 text (byte {exc.start} cannot be decoded); {_ACCEPTED}."
            ) from None
        self.refuse_secret_content(given, secret_in_text(text, self.limits.own_secrets))
        return FileText(path=given, text=text, sha256=hashlib.sha256(data).hexdigest())

    def media(self, opened: _Opened, media_type: str, data: bytes) -> FileMedia:
        """Pixels cannot be scanned: the raw bytes are, as Latin-1 (one character a byte), which finds what is
        stored as plain text (metadata, uncompressed PDF text) and the server's own secrets in any encoding."""
        own = tuple(secret.encode().decode("latin-1") for secret in self.limits.own_secrets)
        self.refuse_secret_content(opened.given, secret_in_text(data.decode("latin-1"), own))
        return FileMedia(opened.given, media_type, data, hashlib.sha256(data).hexdigest())

    def check_sizes(self, opened: Sequence[_Opened]) -> None:
        """Nothing is read when a cap is exceeded. Text and media have totals of their own: one photo is over
        the text total, and media are neither stored nor sent again with a conversation."""
        for file in opened:
            cap, variable = self.cap(file)
            if file.size > cap:
                kind = "files" if file.media_type is None else f"{file.media_type} files"
                raise FileRefused(
                    f"`{file.given}` is {file.size:,} bytes; {kind} of at most {cap:,} bytes are sent ({variable}). "
                    "Send a smaller file (the relevant part, pages or a scaled-down image), or the server's "
                    f"operator can raise {variable}."
                )
        text = sum(file.size for file in opened if file.media_type is None)
        if text > self.limits.max_total_bytes:
            raise FileRefused(
                f"The text files come to {text:,} bytes; at most {self.limits.max_total_bytes:,} bytes of text "
                "files are sent per call (MCP_LLM_MAX_FILES_TOTAL_BYTES). Send fewer files."
            )
        media = sum(file.size for file in opened if file.media_type is not None)
        if media > self.limits.max_media_total_bytes:
            raise FileRefused(
                f"The images and PDFs come to {media:,} bytes; at most {self.limits.max_media_total_bytes:,} bytes "
                "of them are sent per call (MCP_LLM_MAX_MEDIA_TOTAL_BYTES). Send fewer or smaller ones."
            )

    def load(self, opened: _Opened) -> SentFile:
        data = self.read(opened)
        if opened.media_type is None:
            return self.text(opened, data)
        return self.media(opened, opened.media_type, data)

    def read_all(self, paths: Sequence[str]) -> tuple[SentFile, ...]:
        opened: list[_Opened] = []
        try:
            for given in paths:
                self.check_running()
                opened.append(self.open(given))
            self.check_sizes(opened)
            return tuple(self.load(file) for file in opened)
        finally:
            for file in opened:
                os.close(file.fd)


async def _in_daemon_thread(work: Callable[[], T], stop: threading.Event) -> T:
    """`work()` in a daemon thread; on cancellation `stop` is set and the thread is left to wind down alone."""
    done = anyio.Event()
    token = anyio.lowlevel.current_token()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the waiting task
            failure.append(exc)
        finally:
            if not stop.is_set():
                with contextlib.suppress(RuntimeError):  # the event loop is gone
                    anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=run, name="mcp-llm-server file reader", daemon=True).start()
    try:
        await done.wait()
    finally:
        stop.set()
    if failure:
        raise failure[0]
    return outcome[0]


def _check_arguments(paths: Sequence[str]) -> None:
    for index, given in enumerate(paths):
        if "\x00" in given:
            raise FileRefused(
                f"`files[{index}]` contains a NUL byte, which no file path can hold; give the path as plain text."
            )
    duplicates = sorted({p for p in paths if list(paths).count(p) > 1})
    if duplicates:
        raise FileRefused(f"Each file is sent once: {', '.join(f'`{p}`' for p in duplicates)} given more than once.")


async def read_files(
    paths: Sequence[str] | None,
    limits: FileLimits,
    *,
    deadline: float,
    client_roots: Sequence[Path] = (),
) -> tuple[SentFile, ...]:
    """The files (text, or an image's or PDF's bytes), in the order given; raises `FileRefused` (before anything
    is sent anywhere).

    `deadline` is on anyio's clock (`anyio.current_time()`): reading stops there with a refusal. The roots are
    `limits.roots` (the operator's), or else `client_roots` (those the MCP client offered, see `client_roots.py`);
    relative paths start at the first root. Cancelling the caller stops the read at once.
    """
    if not paths:
        return ()
    _check_arguments(paths)
    roots = limits.roots or tuple(client_roots)
    if not roots:
        raise FileRefused(f"No directory is open to `files` on this server, so no file can be sent. {_ALLOW_HOW}")
    remaining = deadline - anyio.current_time()
    stop = threading.Event()
    reader = _Reader(limits, roots, stop, time.monotonic() + remaining)
    with anyio.move_on_after(remaining):
        try:
            return await _in_daemon_thread(lambda: reader.read_all(list(paths)), stop)
        except _Stopped:  # the thread saw the deadline first
            pass
    raise FileRefused(
        f"Reading the files did not finish within the call's time limit ({max(remaining, 0):.1f} s left); "
        "send fewer or smaller files, or call again with a larger timeout_s."
    )
