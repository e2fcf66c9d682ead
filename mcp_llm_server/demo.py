"""`mcp-llm-server demo`: see the server work with no keys and no network.

It starts the stand-in provider on loopback, launches this server over stdio against it, and drives it with
the real MCP client: streamed progress from both providers, a retried rate limit, clear errors, and a call that
outlives the detach limit and is fetched with `get_answer`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import TextIO

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult, TextContent

from ._standin import Reply, StandIn

__all__ = ["run_demo"]

_ANSWER = (
    "Streaming keeps the host informed: each piece of the answer arrives as a progress notification, "
    "so a long answer never looks like a hung call."
)


def _show(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


async def _on_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"  progress {progress:>4.0f}: {message!r}", flush=True)


def _summary(result: CallToolResult) -> str:
    if result.is_error:
        return "isError: " + " ".join(block.text for block in result.content if isinstance(block, TextContent))
    data = dict(result.structured_content or {})
    data["text"] = (data.get("text") or "")[:60] + "…"
    return json.dumps(data, indent=2, ensure_ascii=False)


async def _drive(standin: StandIn, server_stderr: TextIO) -> None:
    env = {
        "OPENAI_API_KEY": "sk-demo-openai-key",
        "ANTHROPIC_API_KEY": "sk-ant-demo-key",
        "OPENAI_BASE_URL": standin.openai_base_url,
        "ANTHROPIC_BASE_URL": standin.anthropic_base_url,
        "MCP_LLM_BACKOFF_INITIAL_S": "0.2",
        "MCP_LLM_DETACH_AFTER_S": "4",  # short, to show a detached call (the default is 50 s)
        # The demo's conversations go to a throwaway database, not the user's.
        "MCP_LLM_DATABASE_URL": f"sqlite+aiosqlite:///{tempfile.gettempdir()}/mcp-llm-server-demo/conversations.db",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_llm_server"], env=env)
    started = time.perf_counter()
    async with Client(stdio_client(params, errlog=server_stderr)) as client:
        tools = await client.list_tools()
        _show(f"server up; tools/list answered in {time.perf_counter() - started:.2f} s")
        for tool in tools.tools:
            print(f"  {tool.name}: {tool.title}")

        standin.default_reply = Reply(text=_ANSWER, chunk_delay_s=0.04)
        _show("ask_openai (Responses API, streamed)")
        result = await client.call_tool("ask_openai", {"prompt": "Why stream answers?"}, progress_callback=_on_progress)
        print(_summary(result))

        _show("ask_claude after one 429 with Retry-After: 0.5 (retried, then streamed)")
        standin.script(Reply.error(429, retry_after=0.5))
        result = await client.call_tool("ask_claude", {"prompt": "Why stream answers?"}, progress_callback=_on_progress)
        print(_summary(result))

        _show("ask_openai with a rejected key (401: not retried, a clear error)")
        standin.script(Reply.error(401))
        result = await client.call_tool("ask_openai", {"prompt": "hello"})
        print(_summary(result))

        _show("ask_claude whose stream breaks mid-answer (the partial text is kept)")
        standin.script(Reply.midstream_error(after=5))
        result = await client.call_tool("ask_claude", {"prompt": "hello"}, progress_callback=_on_progress)
        print(_summary(result))
        await _detached_call(client, standin)
    _show(f"done: the stand-in received {len(standin.requests)} requests")


async def _detached_call(client: Client, standin: StandIn) -> None:
    _show("ask_openai slower than MCP_LLM_DETACH_AFTER_S=4: `running` at 4 s, then fetched with get_answer")
    standin.script(Reply(chunks=[word + " " for word in _ANSWER.split()] * 2, chunk_delay_s=0.12))
    result = await client.call_tool("ask_openai", {"prompt": "A slow answer, please"})
    print(_summary(result))
    answer_id = (result.structured_content or {}).get("answer_id")
    while (result.structured_content or {}).get("status") == "running":
        result = await client.call_tool("get_answer", {"answer_id": answer_id})
        print(f"  get_answer: {(result.structured_content or {}).get('status')}")
    print(_summary(result))


def run_demo() -> int:
    with StandIn() as standin, open(os.devnull, "w") as quiet:
        anyio.run(_drive, standin, quiet)
    return 0
