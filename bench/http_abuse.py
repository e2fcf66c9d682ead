"""The HTTP transport under abuse (issue 12, item 9): half-open connections, a slow body, an `initialize` flood.

    python bench/http_abuse.py                        # all three, the server limited to 1,024 file descriptors
    python bench/http_abuse.py --only slowloris --half-open 1100 --nofile 1024
    python bench/http_abuse.py --only flood --initializes 9999
    python bench/http_abuse.py --env MCP_LLM_HTTP_MAX_CONNECTIONS=900   # any server setting

Each scenario starts a fresh server (`--transport http`, a throwaway SQLite store, fake provider keys: no call
reaches a provider) with `RLIMIT_NOFILE` set to `--nofile`, and prints what it measured:
- slowloris: `--half-open` connections that send a partial request line and headers, one more byte every few
  seconds; meanwhile a client connected before them (keep-alive) and fresh connections probe `/healthz`.
- slow body: a POST with a valid bearer token whose body arrives one byte a second; how long until the server
  cuts the connection (capped at `--slow-body-cap` seconds).
- flood: `--initializes` `initialize` requests from loopback (16 at a time), their statuses, and the server's
  resident memory before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2

TOKEN = "bench-token-0123456789abcdef"
INITIALIZE = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
)
MCP_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server(nofile: int, extra_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PATH": os.environ.get("PATH", ""),
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            "HOME": tmp,
            "OPENAI_API_KEY": "sk-bench-openai-0123456789abcdef",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
            "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}",
            "MCP_LLM_HTTP_TOKEN": TOKEN,
            **extra_env,
        }

        def limit_fds() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        process = subprocess.Popen(
            [sys.executable, "-m", "mcp_llm_server", "--transport", "http", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "stderr", "wb"),  # noqa: SIM115 - the child owns it
            preexec_fn=limit_fds,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx2.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit((Path(tmp) / "stderr").read_text()) from None
                    time.sleep(0.1)
            yield process, port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- slowloris ------------------------------------------------------------------------------------------


async def _half_open(port: int, stop: asyncio.Event, opened: list[int], closed: list[int]) -> None:
    """One attacker: a connection that never finishes its headers, opened again whenever the server closes it."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        except (OSError, TimeoutError):
            await asyncio.sleep(0.5)
            continue
        opened.append(1)
        try:
            writer.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await writer.drain()
            while not stop.is_set():
                if await _closed_within(reader, 3.0):
                    closed.append(1)
                    break
                writer.write(b"X")  # a header line that never ends
                await writer.drain()
        except OSError:
            closed.append(1)
        finally:
            writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        data = await asyncio.wait_for(reader.read(1024), seconds)
    except TimeoutError:
        return False
    except OSError:
        return True
    if data:  # a response (408, 503...) before the close; the close follows
        return await _closed_within(reader, seconds)
    return True


async def _probe(url: str, client: httpx2.AsyncClient | None) -> float | None:
    start = time.monotonic()
    try:
        if client is not None:
            response = await client.get(url, timeout=5)
        else:
            async with httpx2.AsyncClient() as fresh:
                response = await fresh.get(url, timeout=5)
    except httpx2.HTTPError:
        return None
    return time.monotonic() - start if response.status_code == 200 else None


async def slowloris(port: int, count: int, seconds: float) -> None:
    url = f"http://127.0.0.1:{port}/healthz"
    stop = asyncio.Event()
    opened: list[int] = []
    closed: list[int] = []
    async with httpx2.AsyncClient() as existing:
        assert (await existing.get(url)).status_code == 200  # connected before the attack
        tasks = [asyncio.create_task(_half_open(port, stop, opened, closed)) for _ in range(count)]
        await asyncio.sleep(2)
        results: dict[str, list[float | None]] = collections.defaultdict(list)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            results["existing"].append(await _probe(url, existing))
            results["new"].append(await _probe(url, None))
            await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*tasks)
    print(
        f"slowloris: {count} attackers keeping a half-open connection each (reopened when closed): "
        f"{len(opened)} opened, {len(closed)} closed by the server"
    )
    for kind, values in results.items():
        ok = [v for v in values if v is not None]
        worst = f", slowest {max(ok):.2f} s" if ok else ""
        print(f"  /healthz from a {kind} connection: {len(ok)}/{len(values)} answered within 5 s{worst}")


# --- slow body -------------------------------------------------------------------------------------------


async def slow_body(port: int, cap_s: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    start = time.monotonic()
    status = b""
    cut = False
    while time.monotonic() - start < cap_s:
        try:
            data = await asyncio.wait_for(reader.read(4096), 1.0)
        except TimeoutError:
            data = None
        except OSError:
            cut = True
            break
        if data == b"":
            cut = True
            break
        if data:
            status = status or data.split(b"\r\n", 1)[0]
        try:
            writer.write(b" ")
            await writer.drain()
        except OSError:
            cut = True
            break
    elapsed = time.monotonic() - start
    writer.close()
    verdict = f"cut after {elapsed:.1f} s" if cut else f"not cut within {cap_s:.0f} s"
    print(f"slow body (1 byte/s, valid token): {verdict}; response line: {status.decode() or '-'}")


# --- initialize flood ------------------------------------------------------------------------------------


async def flood(process: subprocess.Popen[bytes], port: int, count: int) -> None:
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {**MCP_HEADERS, "authorization": f"Bearer {TOKEN}"}
    statuses: collections.Counter[int | str] = collections.Counter()
    before = _rss_mb(process.pid)
    limit = asyncio.Semaphore(16)
    start = time.monotonic()

    async def one(client: httpx2.AsyncClient) -> None:
        async with limit:
            try:
                response = await client.post(url, content=INITIALIZE, headers=headers, timeout=30)
                statuses[response.status_code] += 1
            except httpx2.HTTPError as exc:
                statuses[type(exc).__name__] += 1

    async with httpx2.AsyncClient(limits=httpx2.Limits(max_connections=16)) as client:
        await asyncio.gather(*(one(client) for _ in range(count)))
        after = _rss_mb(process.pid)
        fresh = await client.post(url, content=INITIALIZE, headers=headers, timeout=30)
        retry_after = fresh.headers.get("retry-after", "-")
    elapsed = time.monotonic() - start
    print(f"flood: {count} initialize requests in {elapsed:.0f} s, statuses {dict(statuses)}")
    print(f"  server RSS {before:.0f} MB before, {after:.0f} MB after")
    print(f"  a new client afterwards: {fresh.status_code} (Retry-After: {retry_after})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["slowloris", "body", "flood"], action="append")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's RLIMIT_NOFILE")
    parser.add_argument("--half-open", type=int, default=1100)
    parser.add_argument("--probe-seconds", type=float, default=20.0)
    parser.add_argument("--slow-body-cap", type=float, default=40.0)
    parser.add_argument("--initializes", type=int, default=9999)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.half_open + 256)), hard))
    for scenario in args.only or ["slowloris", "body", "flood"]:
        with _server(args.nofile, extra) as (process, port):
            if scenario == "slowloris":
                asyncio.run(slowloris(port, args.half_open, args.probe_seconds))
            elif scenario == "body":
                asyncio.run(slow_body(port, args.slow_body_cap))
            else:
                asyncio.run(flood(process, port, args.initializes))


if __name__ == "__main__":
    main()
