"""The first answer of a fresh server: spawn → initialize → tools/list → the first `ask_openai` answer, beside a
fresh Python script making the same streamed call with the SDK (the floor a host would pay without any server).

Two cases: the call sent right after tools/list (nothing could be warmed yet), and after 3 s idle, as a host does
when a person types the question (the warm-up thread has imported and warmed the SDK by then; the idle time is not
counted).

    python -m bench.first_answer [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import IO

from .remote_standin import RemoteStandIn

IDLE_S = 3.0
_MESSAGES = [
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}},
    },
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
]
_CALL = {
    "jsonrpc": "2.0",
    "id": 3,
    "method": "tools/call",
    "params": {"name": "ask_openai", "arguments": {"prompt": "hi"}},
}
_SCRIPT = """
import asyncio, sys
from openai import AsyncOpenAI
async def main():
    client = AsyncOpenAI(api_key="sk-bench-0123456789abcdef", base_url=sys.argv[1], max_retries=0)
    stream = await client.responses.create(model="gpt-5.5", input="hi", max_output_tokens=4096, stream=True)
    async with stream:
        async for _ in stream:
            pass
asyncio.run(main())
"""


def _until(stdout: IO[bytes], answer_id: int) -> None:
    for line in stdout:
        if json.loads(line).get("id") == answer_id:
            return
    raise RuntimeError("the server closed its output")


def spawn_to_tools_list(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], float]:
    """The server spawned and its tools listed: the process, and when it was spawned (`time.perf_counter`)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_llm_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in _MESSAGES))
    process.stdin.flush()
    _until(process.stdout, 2)
    return process, started


def server_first_answer(env: dict[str, str], idle_s: float) -> float:
    """Seconds from spawn to the first answer, the idle time after tools/list left out."""
    process, started = spawn_to_tools_list(env)
    assert process.stdin is not None and process.stdout is not None
    time.sleep(idle_s)
    process.stdin.write(json.dumps(_CALL).encode() + b"\n")
    process.stdin.flush()
    _until(process.stdout, 3)
    elapsed = time.perf_counter() - started - idle_s
    process.stdin.close()
    process.wait(10)
    return elapsed


def script_answer(base_url: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", _SCRIPT, base_url], check=True, capture_output=True)
    return time.perf_counter() - started


def first_answers(env: dict[str, str], base_url: str, runs: int) -> tuple[float, float, float]:
    """Medians: back to back, after idling, and the script; interleaved so load falls on all alike."""
    server_first_answer(env, 0.0)  # the OS file cache and the bytecode caches
    script_answer(base_url)
    at_once, idle, script = [], [], []
    for _ in range(runs):
        at_once.append(server_first_answer(env, 0.0))
        idle.append(server_first_answer(env, IDLE_S))
        script.append(script_answer(base_url))
    return statistics.median(at_once), statistics.median(idle), statistics.median(script)


def main() -> None:
    import os
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with RemoteStandIn() as standin, tempfile.TemporaryDirectory() as folder:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "OPENAI_API_KEY": "sk-bench-0123456789abcdef",
            "OPENAI_BASE_URL": standin.openai_base_url,
            "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{folder}/first.db",
        }
        at_once, idle, script = first_answers(env, standin.openai_base_url, runs)
    print(f"first answer, sent right after tools/list: {at_once * 1000:.0f} ms ({at_once / script:.2f}x the script)")
    print(f"first answer, sent after {IDLE_S:g} s idle:  {idle * 1000:.0f} ms ({idle / script:.2f}x the script)")
    print(f"a fresh script making the same call: {script * 1000:.0f} ms")


if __name__ == "__main__":
    main()
