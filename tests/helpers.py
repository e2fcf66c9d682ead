"""Plain helpers shared by the test files (the fixtures are in conftest.py).

Waiting is always bounded polling of recorded state, never a fixed sleep; nothing here compares wall-clock gaps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import ANTHROPIC_KEY, OPENAI_KEY, SettingsFactory, error_details, server_env, text_of
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import RecordedRequest, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import Settings

__all__ = [
    "ANSI",
    "EXIT_S",
    "NODE_BIN",
    "NODE_MODULES",
    "ProgressLog",
    "assert_clean_stderr",
    "child_env",
    "connect",
    "error_of",
    "finished",
    "indented",
    "node_tools_env",
    "ok",
    "refused_files",
    "run_server",
    "wait_until",
    "words",
]

_POLL_S = 0.005
# A child's exit includes the interpreter's finalization of the SDKs' modules: ~0.5 s idle, over 2 s measured on a
# 2-core machine busy with other test runs. A hang still fails; a slow machine does not.
EXIT_S = 10.0


# --- the server in memory -----------------------------------------------------------------------------------


@asynccontextmanager
async def connect(
    settings: Settings, *, clock: Callable[[], float] = time.time, **options: Any
) -> AsyncIterator[Client]:
    """The real server built from `settings` (and `clock`), in memory, through the real MCP client.

    `options` go to the client (`mode`, `message_handler`, ...)."""
    async with Client(build_server(settings, clock=clock), raise_exceptions=True, **options) as client:
        yield client


async def refused_files(
    make_settings: SettingsFactory, standin: StandIn, files: list[str], tool: str = "ask_openai", **settings: Any
) -> str:
    """Call `tool` with `files`; assert it is refused before any upstream request; return the error text."""
    async with connect(make_settings(**settings)) as client:
        result = await client.call_tool(tool, {"prompt": "Review", "files": files})
    assert result.is_error, text_of(result)
    assert standin.requests == []
    return text_of(result)


# --- results ------------------------------------------------------------------------------------------------


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a successful result."""
    assert not result.is_error, text_of(result)
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


def error_of(result: CallToolResult) -> dict[str, Any]:
    """The `error` details of an error result."""
    assert result.is_error, text_of(result)
    error: dict[str, Any] = error_details(result)["error"]
    return error


class ProgressLog:
    """A progress callback recording (arrival time, progress, message), in order, and its place in `order`.

    Given the stand-in, it also notes how many deltas its latest request had sent as each notification arrived:
    a "while it streams" that needs no clock."""

    def __init__(self, order: list[str] | None = None, standin: StandIn | None = None) -> None:
        self.events: list[tuple[float, float, str | None]] = []
        self.order = order if order is not None else []
        self.first = anyio.Event()
        self.deltas_sent: list[int] = []
        self._standin = standin

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        if self._standin is not None:
            self.deltas_sent.append(self._standin.requests[-1].deltas_sent)
        self.events.append((time.monotonic(), progress, message))
        self.order.append("progress")
        self.first.set()

    @property
    def times(self) -> list[float]:
        return [at for at, _, _ in self.events]

    @property
    def messages(self) -> list[str]:
        return [message or "" for _, _, message in self.events]

    @property
    def values(self) -> list[float]:
        return [progress for _, progress, _ in self.events]


# --- the stand-in -------------------------------------------------------------------------------------------


def words(n: int) -> list[str]:
    """`n` stream chunks: "w0 ", "w1 ", ..."""
    return [f"w{i} " for i in range(n)]


async def wait_until(condition: Callable[[], bool], within: float = 5.0, what: str = "the condition") -> None:
    """Poll `condition` (bounded) until it holds."""
    with anyio.move_on_after(within):
        while True:
            if condition():
                return
            await anyio.sleep(_POLL_S)
    raise TimeoutError(f"waited {within} s for {what}")


async def finished(standin: StandIn, index: int, within: float = 3.0) -> RecordedRequest:
    """Poll (bounded) until the stand-in has finished serving request `index`; that request."""

    def done() -> bool:
        requests = standin.requests
        return len(requests) > index and requests[index].outcome is not None

    await wait_until(done, within, f"the stand-in to finish request {index}")
    return standin.requests[index]


# --- the server as a child process ---------------------------------------------------------------------------


def child_env(standin: StandIn, **extra: str) -> dict[str, str]:
    """A child server's whole environment, built explicitly: nothing from the developer's shell (real keys) leaks in."""
    return {"PATH": os.environ.get("PATH", os.defpath), **server_env(standin, **extra)}


def run_server(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m mcp_llm_server` run to its end with exactly `env` (plus PATH), stdin closed, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mcp_llm_server", *args],
        env={"PATH": os.environ.get("PATH", os.defpath), **env},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_clean_stderr(stderr: str) -> None:
    """No traceback and neither test key in a child server's stderr."""
    assert "Traceback" not in stderr, stderr[-4000:]
    assert OPENAI_KEY not in stderr and ANTHROPIC_KEY not in stderr


# --- the Node tools (installed by `.ci/run` with `npm ci`) -----------------------------------------------------

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
NODE_BIN = NODE_MODULES / ".bin"


def _node_tools_required() -> bool:
    return os.environ.get("MCP_LLM_REQUIRE_NODE_TOOLS") == "1" or os.environ.get("CI", "").lower() in ("1", "true")


def _node_tools_problem(needs: tuple[Path, ...]) -> str | None:
    """Why Node 22 and `needs` cannot run here, or None."""
    for path in (NODE_BIN / "node", *needs):
        if not path.exists():
            return f"{path} is missing: run `npm ci` at the repository root (needs npm; .ci/run does it)"
    version = subprocess.run([NODE_BIN / "node", "--version"], capture_output=True, text=True).stdout.strip()
    if not version.startswith("v") or int(version[1:].split(".")[0]) < 22:
        return f"node_modules/.bin/node is {version or 'unusable'}; the tools need Node 22 or newer"
    return None


def node_tools_env(home: Path, *needs: Path) -> dict[str, str]:
    """Environment for the Node tools: our Node 22 first on PATH, their state under `home`. Skips the test when
    Node or one of `needs` is not installed (fails it in CI, or with MCP_LLM_REQUIRE_NODE_TOOLS=1)."""
    problem = _node_tools_problem(needs)
    if problem is not None:
        if _node_tools_required():
            pytest.fail(f"Node tools required here (CI or MCP_LLM_REQUIRE_NODE_TOOLS=1): {problem}")
        pytest.skip(f"Node tools not installed: {problem}")
    return {
        "PATH": f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),  # nothing of the tools' lands in the real $HOME
        "MCP_STORAGE_DIR": str(home / "inspector-storage"),
        "MCP_INSPECTOR_SECRET_STORE": "memory",
        "NO_COLOR": "1",
        **({"TMPDIR": os.environ["TMPDIR"]} if "TMPDIR" in os.environ else {}),
    }


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def indented(output: str) -> str:
    """Tool output for an assertion message, each line indented so that no summary line of it stands alone."""
    return "\n".join(f"  | {line}" for line in ANSI.sub("", output).splitlines())
