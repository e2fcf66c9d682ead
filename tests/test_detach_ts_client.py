"""Detached answers through the official TypeScript SDK client, as a host with a hard 3 s request timeout (no reset on
progress): the server over stdio with MCP_LLM_DETACH_AFTER_S=2, a stand-in answer that takes about 10 s.

The client (tests/ts/detach_client.mjs) calls ask_openai, then get_answer until the answer is complete; a request
past its timeout throws there and the script exits 1. The SDK checks each result against the tool's output schema.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY, server_env
from helpers import NODE_BIN, NODE_MODULES, assert_clean_stderr, indented, node_tools_env, words

from mcp_llm_server._standin import Reply, StandIn

SCRIPT = Path(__file__).with_name("ts") / "detach_client.mjs"
TS_SDK = NODE_MODULES / "@modelcontextprotocol" / "sdk" / "package.json"
CLIENT_TIMEOUT_MS = 3000
DETACH_AFTER_S = 2
CHUNKS = words(100)
CHUNK_DELAY_S = 0.1  # 100 chunks 0.1 s apart: the answer takes about 10 s


@pytest.fixture(scope="module")
def node_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return node_tools_env(tmp_path_factory.mktemp("node-home"), TS_SDK)


def run_ts_client(node_env: dict[str, str], env: dict[str, str], arguments: dict[str, Any]) -> dict[str, Any]:
    """The script's report, once it has exited 0 (no request timed out, every result passed the schema check)."""
    config = {
        "command": sys.executable,
        "args": ["-m", "mcp_llm_server"],
        "env": env,
        "timeout_ms": CLIENT_TIMEOUT_MS,
        "tool": "ask_openai",
        "arguments": arguments,
        "max_requests": 30,
    }
    done = subprocess.run(
        [str(NODE_BIN / "node"), str(SCRIPT)],
        input=json.dumps(config),
        env=node_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, indented(done.stdout + done.stderr)
    assert_clean_stderr(done.stderr)  # the server's stderr is the script's
    assert OPENAI_KEY not in done.stdout and ANTHROPIC_KEY not in done.stdout
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)


def test_a_host_with_a_3s_timeout_gets_a_10s_answer_whole(
    node_env: dict[str, str], standin: StandIn, tmp_path: Path
) -> None:
    standin.script(Reply(chunks=CHUNKS, chunk_delay_s=CHUNK_DELAY_S))
    db = tmp_path / "server.db"
    env = server_env(
        standin, MCP_LLM_DETACH_AFTER_S=str(DETACH_AFTER_S), MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{db}"
    )
    report = run_ts_client(node_env, env, {"prompt": "a long story"})
    requests = report["requests"]
    timings = ", ".join(f"{r['name']} {r['duration_ms']:.0f} ms" for r in requests)

    # Each request inside the client's timeout (else the script would have thrown); the detach limit is what
    # bounds them, so the answer's ~10 s needed several.
    assert all(r["duration_ms"] < CLIENT_TIMEOUT_MS for r in requests), timings
    assert [r["name"] for r in requests] == ["ask_openai"] + ["get_answer"] * (len(requests) - 1), timings
    assert [r["status"] for r in requests] == ["running"] * (len(requests) - 1) + ["complete"], timings
    assert len(requests) >= 3 and not any(r["is_error"] for r in requests), timings

    # The SDK validated ask_openai's `running` result itself (callTool throws on a mismatch); every result, get_answer's
    # in ask_openai's shape, also passed the same validator explicitly.
    assert report["output_schema"] is True
    assert [v["status"] for v in report["validations"]] == [r["status"] for r in requests]
    assert all(v["valid"] for v in report["validations"]), report["validations"]
    first, final = report["first"], report["final"]
    whole = "".join(CHUNKS)
    assert first["answer_id"].startswith("ans_") and "get_answer" in first["next_step"]
    assert whole.startswith(first["text"]) and len(first["text"]) < len(whole)  # the text so far

    assert final["status"] == "complete" and final["answer_id"] == first["answer_id"]
    assert final["text"] == whole and final["stop_reason"] == "end"
    assert final["conversation_id"]

    (upstream,) = standin.requests  # one upstream request, served to its end
    assert upstream.outcome == "completed" and upstream.deltas_sent == len(CHUNKS)
    assert _count(db, "ledger") == 1
    assert _count(db, "turns") == 1
