"""Issue 12, item 3 over stdio: an upstream that never ends its answer (4,000-character deltas), `timeout_s` 5.

Prints the call's time, the server process's peak RSS and the longest line it wrote to stdout.

    python -m bench.stdio_endless                          # this checkout
    PYTHONPATH=/path/to/other python -m bench.stdio_endless
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mcp_llm_server._standin import Reply, StandIn

_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
_CALL = {
    "jsonrpc": "2.0",
    "id": 2,
    "method": "tools/call",
    "params": {"name": "ask_openai", "arguments": {"prompt": "go", "timeout_s": 5}},
}


def _peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


def measure(folder: str) -> dict[str, Any]:
    with StandIn() as standin:
        standin.script(Reply.endless("z" * 4000, max_s=120))
        env = dict(
            os.environ,
            OPENAI_API_KEY="sk-bench-0123456789abcdef",
            OPENAI_BASE_URL=standin.openai_base_url,
            MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/bench.db",
        )
        args = [sys.executable, "-m", "mcp_llm_server"]
        server = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
        )
        assert server.stdin is not None and server.stdout is not None

        def send(message: dict[str, Any]) -> None:
            assert server.stdin is not None
            server.stdin.write((json.dumps(message) + "\n").encode())
            server.stdin.flush()

        send(_INITIALIZE)
        server.stdout.readline()
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        peak = [0]

        def watch() -> None:
            while server.poll() is None:
                try:
                    peak[0] = _peak_rss_mb(server.pid)
                except OSError:
                    return
                time.sleep(0.1)

        threading.Thread(target=watch, daemon=True).start()
        started = time.monotonic()
        send(_CALL)
        longest = 0
        while True:
            line = server.stdout.readline()
            longest = max(longest, len(line))
            if not line or json.loads(line).get("id") == 2:
                break
        took = time.monotonic() - started
        time.sleep(0.3)
        server.stdin.close()
        server.wait(10)
    return {"took_s": round(took, 2), "server_peak_rss_mb": peak[0], "longest_stdout_line_bytes": longest}


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(measure(folder)))
