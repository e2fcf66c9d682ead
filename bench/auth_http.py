"""What the bearer-token gate costs a whole HTTP request: `tools/list` to a stateless server, three ways.

    python -m bench.auth_http [--requests 300]

The same server (`--transport http --stateless`, on loopback) is started with no token, with 10 named tokens
(`MCP_LLM_HTTP_TOKENS`, the last one presented), and with OAuth (a `LocalIssuer` from tests/oauth_issuer.py serving
its keys over loopback; an RS256 access token). Each request is one POST of `tools/list` over a kept-alive
connection; the servers take turns in rounds so the machine's load falls on all alike. Prints the median and p95
per request, and the difference to the server without a token.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oauth_issuer import LocalIssuer  # a test helper, found through the path above

RESOURCE = "https://llm.example.test/mcp"
NAMES = {f"user{i}": f"bench-token-{i:02d}-0123456789abcdef" for i in range(10)}
LISTING = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
HEADERS = {
    "content-type": "application/json",
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
}
ROUNDS = 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start(extra: dict[str, str], folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{folder / f'{port}.db'}",
        **extra,
    }
    command = [sys.executable, "-m", "mcp_llm_server", "--transport", "http", "--stateless", "--port", str(port)]
    process = subprocess.Popen(command, env=env, cwd=folder, stderr=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


async def _ready(base: str) -> None:
    async with httpx2.AsyncClient() as http:
        for _ in range(300):
            try:
                if (await http.get(base + "/healthz")).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            await anyio.sleep(0.1)
    raise RuntimeError(f"{base} did not start")


async def _time(http: httpx2.AsyncClient, url: str, token: str | None, requests: int, into: list[float]) -> None:
    headers = dict(HEADERS) if token is None else {**HEADERS, "authorization": f"Bearer {token}"}
    for _ in range(requests):
        started = time.perf_counter()
        response = await http.post(url, json=LISTING, headers=headers)
        into.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


async def main(requests: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        async with LocalIssuer(audience=RESOURCE) as issuer:
            kinds = {
                "no token": ({}, None),
                "named token (10 configured)": ({"MCP_LLM_HTTP_TOKENS": json.dumps(NAMES)}, NAMES["user9"]),
                "OAuth RS256 access token": (
                    {"MCP_LLM_OAUTH_ISSUER": issuer.issuer, "MCP_LLM_OAUTH_RESOURCE_URL": RESOURCE},
                    issuer.mint(sub="bench", exp_in=3600),
                ),
            }
            servers = {name: _start(env, Path(folder)) for name, (env, _) in kinds.items()}
            try:
                for _, base in servers.values():
                    await _ready(base)
                times: dict[str, list[float]] = {name: [] for name in kinds}
                async with httpx2.AsyncClient() as http:
                    for name, (_, token) in kinds.items():  # warm up: imports, the JWKS fetch
                        await _time(http, servers[name][1] + "/mcp", token, 20, [])
                    for _ in range(ROUNDS):
                        for name, (_, token) in kinds.items():
                            await _time(http, servers[name][1] + "/mcp", token, requests // ROUNDS, times[name])
            finally:
                for process, _ in servers.values():
                    process.terminate()
                    process.wait(10)
    floor = statistics.median(times["no token"])
    print(f"tools/list over HTTP (stateless), {requests} requests each, {os.cpu_count()} CPUs:")
    for name, values in times.items():
        median = statistics.median(values)
        added = f"  ({(median - floor) * 1000:+.3f} ms)" if name != "no token" else ""
        print(f"  {name:30s} median {median * 1000:.3f} ms, p95 {_p95(values) * 1000:.3f} ms{added}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    anyio.run(main, parser.parse_args().requests, backend="asyncio")
