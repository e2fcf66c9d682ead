"""Files that must never go upstream: swapped paths (symlinks, FIFOs), secrets by name and by content, no roots.

Each test goes through the real server and MCP client, and checks what reached the stand-in upstream.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import OPENAI_KEY, SettingsFactory, text_of
from mcp import Client
from mcp.types import CallToolResult, ListRootsResult, Root

from mcp_llm_server import client_roots
from mcp_llm_server._standin import StandIn
from mcp_llm_server.files import FileLimits, FileRefused, read_files
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import Settings

pytestmark = pytest.mark.anyio

INSIDE = "inside-text\n"
OUTSIDE = "OUTSIDE-THE-ROOTS\n"


@asynccontextmanager
async def connect(settings: Settings, **client: Any) -> AsyncIterator[Client]:
    async with Client(build_server(settings), raise_exceptions=True, **client) as c:
        yield c


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside.txt").write_text(OUTSIDE)
    return root


async def ask(client: Client, files: list[str]) -> CallToolResult:
    return await client.call_tool("ask_openai", {"prompt": "Review", "files": files})


async def refused(make_settings: SettingsFactory, standin: StandIn, files: list[str], **settings: Any) -> str:
    async with connect(make_settings(**settings)) as client:
        result = await ask(client, files)
    assert result.is_error, text_of(result)
    assert standin.requests == []
    return text_of(result)


def sent(standin: StandIn) -> str:
    return "\n".join(json.dumps(request.body) for request in standin.requests)


@contextlib.contextmanager
def flipping(flip: Callable[[int], None]) -> Iterator[None]:
    """Calls `flip(0)`, `flip(1)`, `flip(2)`... in a thread until the block ends."""
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.is_set():
            flip(n)
            n += 1
            time.sleep(0)  # let the readers run in every state

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def file_flip(path: Path, inside: str, evil: Callable[[Path], None]) -> Callable[[int], None]:
    """Replace `path` atomically, in turn, by a regular file and by what `evil` makes."""
    spare = path.with_name(path.name + ".next")

    def flip(n: int) -> None:
        if n % 2:
            evil(spare)
        else:
            spare.write_text(inside)
        os.replace(spare, path)

    return flip


def dir_flip(directory: Path, outside_dir: Path) -> Callable[[int], None]:
    """Swap `directory` in turn for a symlink to `outside_dir` and back."""
    saved = directory.with_name(directory.name + ".saved")

    def flip(n: int) -> None:
        if n % 2 == 0:
            os.rename(directory, saved)
            os.symlink(outside_dir, directory)
        else:
            os.unlink(directory)
            os.rename(saved, directory)

    return flip


async def many_calls(client: Client, files: list[str], calls: int, workers: int = 8) -> list[CallToolResult]:
    results: list[CallToolResult] = []

    async def worker() -> None:
        for _ in range(calls // workers):
            results.append(await ask(client, files))

    async with anyio.create_task_group() as group:
        for _ in range(workers):
            group.start_soon(worker)
    return results


@pytest.mark.parametrize("swap", ["file", "directory"])
async def test_symlink_swapped_between_check_and_read_sends_nothing_outside(
    make_settings: SettingsFactory, standin: StandIn, root: Path, tmp_path: Path, swap: str
) -> None:
    """A path flipping between an inside file and a symlink to an outside one: the outside text never goes up."""
    outside_dir = tmp_path / "outside_dir"
    outside_dir.mkdir()
    names = [f"{c}.txt" for c in "abcdef"]  # the earlier files of a call wait longest between check and read
    (root / "d").mkdir()
    for name in names:
        (outside_dir / name).write_text(OUTSIDE)
        (root / "d" / name).write_text(INSIDE)
    if swap == "file":
        flip = file_flip(root / "d" / "a.txt", INSIDE, lambda spare: spare.symlink_to(tmp_path / "outside.txt"))
    else:
        flip = dir_flip(root / "d", outside_dir)
    async with connect(make_settings(file_roots=[str(root)])) as client:
        with flipping(flip):
            results = await many_calls(client, [f"d/{name}" for name in names], calls=320)
    assert "OUTSIDE-THE-ROOTS" not in sent(standin)
    assert all("OUTSIDE-THE-ROOTS" not in text_of(r) for r in results)
    assert all(text_of(r).startswith("`d/") for r in results if r.is_error)  # refusals, no crash
    assert any(not r.is_error for r in results)  # the race was really run: some reads got the inside file


async def test_fifo_swapped_in_never_hangs(
    make_settings: SettingsFactory, standin: StandIn, root: Path, tmp_path: Path
) -> None:
    """A path flipping between a regular file and a FIFO: every call ends promptly (refused or inside text)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    released = threading.Event()

    def release_stuck_readers() -> None:  # before the fix a reader blocks in open(): let it go, late
        if not released.wait(40):
            for _ in range(200):
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                time.sleep(0.05)

    watchdog = threading.Thread(target=release_stuck_readers, daemon=True)
    watchdog.start()
    (root / "a.txt").write_text(INSIDE)
    started = time.monotonic()
    try:
        async with connect(make_settings(file_roots=[str(root)])) as client:
            with flipping(file_flip(root / "a.txt", INSIDE, lambda spare: os.link(fifo, spare))):
                results = await many_calls(client, ["a.txt"], calls=200)
    finally:
        released.set()
    assert time.monotonic() - started < 35  # nothing waited for the watchdog
    assert {text_of(r) for r in results if r.is_error} <= {
        "`a.txt` is not a regular file; only regular text files are sent.",
        "`a.txt` does not exist (looked for " + str(root / "a.txt") + ").",
    }


async def test_fifo_in_root_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    os.mkfifo(root / "pipe")
    with anyio.fail_after(30):
        assert "not a regular file" in await refused(make_settings, standin, ["pipe"], file_roots=[str(root)])


async def test_read_stops_at_the_deadline(root: Path) -> None:
    """The caller's deadline (anyio clock) bounds the read; a refusal says so."""
    (root / "a.txt").write_text(INSIDE)
    limits = FileLimits(
        roots=(root,),
        max_file_bytes=1000,
        max_total_bytes=1000,
        max_image_bytes=1000,
        max_document_bytes=1000,
        max_media_total_bytes=1000,
    )
    with pytest.raises(FileRefused, match="time limit"):
        await read_files(["a.txt"], limits, deadline=anyio.current_time() - 1)
    assert (await read_files(["a.txt"], limits, deadline=anyio.current_time() + 30))[0].text == INSIDE


@pytest.mark.parametrize(
    ("name", "content"),
    [
        (
            "deploy-notes.txt",
            "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUA" * 4 + "\n"
            "-----END OPENSSH PRIVATE KEY-----\n",
        ),
        ("settings.txt", "key: sk-ant-api03-" + "Zx9" * 30 + "AA\n"),
        ("notes.md", "GITHUB_TOKEN=ghp_" + "a1B2c3D4e5" * 3 + "a1B2c3\n"),
        ("app.cfg", "DB_PASSWORD=s3cr3t-Value-42\n"),
        ("hosts.txt", "machine api.example.com login alice password hunter2hunter2\n"),
    ],
)
async def test_secret_content_refused(
    make_settings: SettingsFactory, standin: StandIn, root: Path, name: str, content: str
) -> None:
    """A file whose text carries a secret is refused whatever its name; MCP_LLM_ALLOW_SECRET_FILES allows it."""
    (root / name).write_text("Some context.\n" + content)
    message = await refused(make_settings, standin, [name], file_roots=[str(root)])
    assert "not sent to a model" in message and "MCP_LLM_ALLOW_SECRET_FILES" in message
    assert content.strip().splitlines()[0] not in message
    async with connect(make_settings(file_roots=[str(root)], allow_secret_files=True)) as client:
        assert not (await ask(client, [name])).is_error


async def test_hard_link_to_env_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """`notes.txt`, a hard link to `.env`: its name is innocent, its content is not."""
    (root / ".env").write_text("API_KEY=abcdef0123456789\nDEBUG=1\n")
    os.link(root / ".env", root / "notes.txt")
    message = await refused(make_settings, standin, ["notes.txt"], file_roots=[str(root)])
    assert "credential" in message and "abcdef0123456789" not in message


async def test_the_servers_own_key_is_never_sent(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    """The host's config file holding this server's key: refused, even with MCP_LLM_ALLOW_SECRET_FILES=1."""
    config = {"mcpServers": {"llm": {"command": "mcp-llm-server", "env": {"OPENAI_API_KEY": OPENAI_KEY}}}}
    (root / "config.json").write_text(json.dumps(config))
    for allow in (False, True):
        message = await refused(
            make_settings, standin, ["config.json"], file_roots=[str(root)], allow_secret_files=allow
        )
        assert "this server's own secrets" in message and OPENAI_KEY not in message


@pytest.mark.parametrize(
    "name",
    [
        ".envrc",
        "prod.env",
        ".netrc",
        "credentials",
        ".git-credentials",
        "authorized_keys",
        "Credentials.orig",
        ".netrc.bak",
        "prod.env~",
        ".ssh/config",
        ".aws/config",
    ],
)
async def test_secret_names_refused(make_settings: SettingsFactory, standin: StandIn, root: Path, name: str) -> None:
    """Credential files by name (and their copies and look-alikes), even with harmless content."""
    (root / name).parent.mkdir(exist_ok=True)
    (root / name).write_text("harmless\n")
    message = await refused(make_settings, standin, [name], file_roots=[str(root)])
    assert "looks like a secret" in message


async def test_nul_in_a_path_refused(make_settings: SettingsFactory, standin: StandIn, root: Path) -> None:
    (root / "a.txt").write_text(INSIDE)
    message = await refused(make_settings, standin, ["a.txt", "a\x00.txt"], file_roots=[str(root)])
    assert "`files[1]`" in message and "NUL" in message


async def test_outside_refusals_do_not_tell_what_exists(
    make_settings: SettingsFactory, standin: StandIn, root: Path, tmp_path: Path
) -> None:
    """A missing and an existing file outside the roots get the same refusal (paths aside)."""
    messages = []
    for path in (tmp_path / "outside.txt", tmp_path / "missing.txt", root / ".." / "missing.txt"):
        message = await refused(make_settings, standin, [str(path)], file_roots=[str(root)])
        messages.append(message.replace(str(path), "PATH"))
    assert len(set(messages)) == 1 and "outside the allowed roots" in messages[0]


def list_roots_of(root: Path) -> Callable[[Any], Any]:
    async def roots(context: Any) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=root.as_uri(), name="workspace")])

    return roots


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_client_roots_open_files_when_none_configured(
    make_settings: SettingsFactory,
    standin: StandIn,
    root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """Without MCP_LLM_FILE_ROOTS the client's MCP roots are the roots (2026 input-required round and legacy push)."""
    (root / "a.txt").write_text(INSIDE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    callback = list_roots_of(root)
    async with connect(make_settings(), mode=mode, list_roots_callback=callback) as client:
        result = await ask(client, ["a.txt"])
        assert not result.is_error, text_of(result)
        outside = await ask(client, [str(tmp_path / "outside.txt")])
    assert "inside-text" in sent(standin)
    assert outside.is_error and "outside the allowed roots" in text_of(outside)
    assert "OUTSIDE-THE-ROOTS" not in sent(standin)


async def test_configured_roots_win_over_client_roots(
    make_settings: SettingsFactory, standin: StandIn, root: Path, tmp_path: Path
) -> None:
    """With MCP_LLM_FILE_ROOTS set, a client's roots open nothing more."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text(INSIDE)
    async with connect(make_settings(file_roots=[str(root)]), list_roots_callback=list_roots_of(other)) as c:
        result = await ask(c, [str(other / "b.txt")])
    assert result.is_error and "outside the allowed roots" in text_of(result)


async def test_a_client_that_never_lists_its_roots_gets_a_refusal(
    make_settings: SettingsFactory, standin: StandIn, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A legacy client that declares roots but never answers roots/list: the wait is bounded, then no roots."""
    monkeypatch.setattr(client_roots, "ROOTS_WAIT_S", 0.5)

    async def never(context: Any) -> ListRootsResult:
        await anyio.sleep_forever()
        raise AssertionError

    (root / "a.txt").write_text(INSIDE)
    with anyio.fail_after(30):
        async with connect(make_settings(), mode="legacy", list_roots_callback=never) as client:
            result = await ask(client, [str(root / "a.txt")])
    assert result.is_error and "MCP_LLM_FILE_ROOTS" in text_of(result)
    assert standin.requests == []


async def test_every_files_tool_takes_the_client_roots(
    make_settings: SettingsFactory, standin: StandIn, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ask_claude, ask_many and extract_json read under the client's roots too."""
    (root / "a.txt").write_text(INSIDE)
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("ask_claude", {"prompt": "x"}),
        ("ask_many", {"prompt": "x"}),
        ("extract_json", {"text": "x", "schema": {"type": "object"}}),
    ]
    async with connect(make_settings(), list_roots_callback=list_roots_of(root)) as client:
        for tool, args in calls:
            standin.clear()
            result = await client.call_tool(tool, {**args, "files": ["a.txt"]})
            assert "No directory is open" not in text_of(result), tool
            assert "inside-text" in sent(standin), tool
