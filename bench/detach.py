"""Issue 13, detached answers, over stdio against the stand-in (about 25 s; not in `python -m bench`'s default run).

1. A 10 s answer with MCP_LLM_DETACH_AFTER_S=2, from a client whose every request times out after 3 s: ask_openai,
   then get_answer until the answer is complete. Prints each request's time and status, and the margin left under
   the client's timeout.
2. Cancel to disconnect: a long answer detached, then cancel_answer; the time from sending the cancel to the moment
   the stand-in sees the server close the upstream stream (median and max over a few runs).

    python -m bench.detach                          # this checkout
    PYTHONPATH=/path/to/other python -m bench.detach
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn

DETACH_AFTER_S = 2
CLIENT_TIMEOUT_S = 3.0
ANSWER_CHUNKS = 100
CHUNK_DELAY_S = 0.1  # 100 chunks 0.1 s apart: a 10 s answer
CANCEL_RUNS = 5
_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the server's stderr, for the life of the benchmark


@dataclass
class Request:
    name: str
    start_s: float
    took_s: float
    status: str
    server_elapsed_s: float | None  # the running result's `elapsed_s`: the call's age when the server answered


def _words(n: int) -> list[str]:
    return [f"w{i} " for i in range(n)]


def _params(standin: StandIn, folder: str) -> StdioServerParameters:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "OPENAI_API_KEY": "sk-bench-0123456789abcdef",
        "OPENAI_BASE_URL": standin.openai_base_url,
        "MCP_LLM_DETACH_AFTER_S": str(DETACH_AFTER_S),
        "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}",
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=env)


def _session(standin: StandIn, folder: str) -> Client:
    """A stdio session whose every request times out after CLIENT_TIMEOUT_S, as a host's would."""
    return Client(stdio_client(_params(standin, folder), errlog=_DEVNULL), read_timeout_seconds=CLIENT_TIMEOUT_S)


async def _timed(client: Client, origin: float, name: str, arguments: dict[str, Any]) -> tuple[Request, dict[str, Any]]:
    started = time.monotonic()
    result = await client.call_tool(name, arguments)
    took = time.monotonic() - started
    assert not result.is_error, result.content
    structured = result.structured_content or {}
    request = Request(name, started - origin, took, structured["status"], structured.get("elapsed_s"))
    return request, structured


async def long_answer(standin: StandIn, folder: str) -> tuple[list[Request], bool]:
    """Part 1: each request of the 10 s answer; whether the final text is the whole answer."""
    chunks = _words(ANSWER_CHUNKS)
    standin.script(Reply(chunks=chunks, chunk_delay_s=CHUNK_DELAY_S))
    async with _session(standin, folder) as client:
        await client.list_tools()
        origin = time.monotonic()
        request, result = await _timed(client, origin, "ask_openai", {"prompt": "a long story"})
        requests = [request]
        while result["status"] == "running":
            request, result = await _timed(client, origin, "get_answer", {"answer_id": result["answer_id"]})
            requests.append(request)
    return requests, result.get("text") == "".join(chunks)


async def _disconnected(standin: StandIn, index: int, within_s: float = 20.0) -> RecordedRequest:
    """Request `index` once the stand-in has finished serving it (polled every millisecond)."""
    with anyio.fail_after(within_s):
        while True:
            requests = standin.requests
            if len(requests) > index and requests[index].outcome is not None:
                return requests[index]
            await anyio.sleep(0.001)


async def cancel_to_disconnect(standin: StandIn, folder: str, runs: int) -> list[tuple[float, float]]:
    """Part 2: per run, (cancel sent → stand-in saw the disconnect, cancel_answer's own time), in seconds."""
    standin.script(*[Reply(chunks=_words(400), chunk_delay_s=0.05) for _ in range(runs)])  # 20 s answers
    figures = []
    async with _session(standin, folder) as client:
        await client.list_tools()
        for index in range(runs):
            first = await client.call_tool("ask_openai", {"prompt": "a long story"})
            running = first.structured_content or {}
            assert running.get("status") == "running", first.content
            asked = time.monotonic()
            cancelled = await client.call_tool("cancel_answer", {"answer_id": running["answer_id"]})
            returned = time.monotonic()
            assert (cancelled.structured_content or {}).get("status") == "cancelled", cancelled.content
            record = await _disconnected(standin, index)
            assert record.outcome == "client_disconnected" and record.finished_at is not None, record.outcome
            figures.append((record.finished_at - asked, returned - asked))
    return figures


def _report(requests: list[Request], whole: bool, cancels: list[tuple[float, float]]) -> str:
    lines = [
        f"{ANSWER_CHUNKS * CHUNK_DELAY_S:.0f} s answer, MCP_LLM_DETACH_AFTER_S={DETACH_AFTER_S}, every request timing "
        f"out after {CLIENT_TIMEOUT_S:.0f} s (Python mcp.Client over stdio):"
    ]
    for r in requests:
        server = "" if r.server_elapsed_s is None else f" (call {r.server_elapsed_s:.1f} s old at the server)"
        lines.append(f"  at {r.start_s:6.2f} s  {r.name:<11} {r.took_s * 1000:6.0f} ms  {r.status}{server}")
    longest = max(r.took_s for r in requests)
    lines.append(
        f"  longest request {longest * 1000:.0f} ms: {(CLIENT_TIMEOUT_S - longest) * 1000:.0f} ms inside the "
        f"timeout; {len(requests)} requests; whole answer returned: {'yes' if whole else 'NO'}"
    )
    disconnect = [d for d, _ in cancels]
    own = [c for _, c in cancels]
    lines.append(
        f"cancel_answer sent → stand-in saw the upstream stream closed ({len(cancels)} runs): median "
        f"{statistics.median(disconnect) * 1000:.1f} ms, max {max(disconnect) * 1000:.1f} ms; cancel_answer "
        f"returned in median {statistics.median(own) * 1000:.1f} ms, max {max(own) * 1000:.1f} ms"
    )
    return "\n".join(lines)


async def main() -> None:
    started = time.monotonic()
    with StandIn() as standin, tempfile.TemporaryDirectory() as folder:
        requests, whole = await long_answer(standin, folder)
        standin.clear()
        cancels = await cancel_to_disconnect(standin, folder, CANCEL_RUNS)
    print(_report(requests, whole, cancels))
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    anyio.run(main)
