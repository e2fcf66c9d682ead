"""What an image or a PDF in `files` costs per call: reading it (with every check and the secret scan), encoding it
into each API's request, serialising that request, and a whole call through the MCP client and the stand-in.

    python -m bench.media_cost [--reps 15]

The files are high-entropy bytes behind a PNG or PDF header (compressed pixels and streams look like that to the
scan); the text file is source-like text, for comparison. Medians of `--reps` samples, after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from mcp_llm_server.files import FileLimits, read_files
from mcp_llm_server.providers.base import LLMRequest, SentFile
from mcp_llm_server.providers.history import anthropic_messages, chat_messages, responses_input

MB = 1024 * 1024
KEY = "sk-bench-own-key-0123456789abcdef"
_BUILDERS = {"responses": responses_input, "chat": chat_messages, "anthropic": anthropic_messages}


def _files(root: Path) -> dict[str, int]:
    """The files measured, with their sizes."""
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(MB - 8))
    (root / "paper.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(5 * MB - 9))
    line = "    value = compute(item, options)  # a typical line of source\n"
    (root / "module.py").write_text(line * (MB // len(line)))
    return {name: (root / name).stat().st_size for name in ("photo.png", "paper.pdf", "module.py")}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def _timed(reps: int, work: Callable[[], Awaitable[object]]) -> float:
    await work()  # warm-up
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return _median_ms(samples)


def _build_ms(reps: int, files: tuple[SentFile, ...], api: str) -> tuple[float, float]:
    """Milliseconds to build the API's messages, and to serialise them as the SDK sends them (JSON)."""
    request = LLMRequest(prompt="Describe it.", model="m", max_tokens=100, files=files)
    build, dump = [], []
    for _ in range(reps + 1):
        started = time.perf_counter()
        messages = _BUILDERS[api](request)
        built = time.perf_counter()
        json.dumps({"model": "m", "messages": messages})
        build.append(built - started)
        dump.append(time.perf_counter() - built)
    return _median_ms(build[1:]), _median_ms(dump[1:])


async def _end_to_end(reps: int, root: Path, name: str | None) -> float:
    """Milliseconds of a whole `ask_claude` call (in-memory MCP client, stand-in upstream), with `name` or none."""
    from mcp import Client

    from mcp_llm_server._standin import StandIn
    from mcp_llm_server.server import build_server
    from mcp_llm_server.settings import load_settings

    with StandIn() as standin, tempfile.TemporaryDirectory() as db:
        settings = load_settings(
            _env_file=None,
            anthropic_api_key=KEY,
            anthropic_base_url=standin.anthropic_base_url,
            database_url=f"sqlite+aiosqlite:///{Path(db) / 'c.db'}",
            file_roots=[str(root)],
            max_file_bytes=2 * MB,
            max_files_total_bytes=2 * MB,
        )
        arguments: dict[str, object] = {"prompt": "Describe it.", "files": [name] if name else None}
        async with Client(build_server(settings)) as client:

            async def call() -> None:
                result = await client.call_tool("ask_claude", arguments)
                assert not result.is_error, result

            return await _timed(reps, call)


async def main(reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sizes = _files(root)
        limits = FileLimits(roots=(root,), max_file_bytes=2 * MB, max_total_bytes=2 * MB, own_secrets=(KEY,))
        baseline = await _end_to_end(reps, root, None)
        print(f"whole ask_claude call without files: {baseline:.1f} ms")
        for name, size in sizes.items():
            loaded: tuple[SentFile, ...] = ()

            async def read(name: str = name) -> None:
                nonlocal loaded
                loaded = await read_files([name], limits, deadline=anyio.current_time() + 60)

            read_ms = await _timed(reps, read)
            built = {api: _build_ms(reps, loaded, api) for api in _BUILDERS}
            call_ms = await _end_to_end(reps, root, name)
            encodings = ", ".join(f"{api} {b:.1f} + JSON {d:.1f} ms" for api, (b, d) in built.items())
            print(
                f"{name} ({size / MB:.1f} MB): read+check+scan {read_ms:.1f} ms; messages {encodings}; "
                f"whole call {call_ms:.1f} ms (+{call_ms - baseline:.1f} ms) [{reps} samples]"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=15)
    anyio.run(main, parser.parse_args().reps)
