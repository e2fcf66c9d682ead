"""Detached answers in one process (the real server in memory, the real MCP client, the stand-in): a call slower than
MCP_LLM_DETACH_AFTER_S returns `running` in time and is fetched, cancelled or interrupted later."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside calls timed against the detach limit.
import anthropic  # noqa: F401
import anyio
import jsonschema
import openai  # noqa: F401
import pytest
from conftest import OPENAI_KEY, SettingsFactory, error_details, server_env, text_of
from helpers import EXIT_S, ProgressLog, child_env, connect, finished, ok, wait_until, words
from http_server import running_http_server
from mcp import Client
from test_store_faults import created, locked, sqlite_url
from wire import wire_server

from mcp_llm_server._standin import Reply, StandIn

pytestmark = pytest.mark.anyio

SLOW = 0.05  # seconds between the stand-in's chunks: 60 chunks take 3 s


async def _schemas(client: Client) -> dict[str, Any]:
    return {tool.name: tool.output_schema for tool in (await client.list_tools()).tools}


def _ledger_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "conversations.db") as conn:
        return conn.execute("SELECT tool, output_tokens, cost_nanos, conversation_id FROM ledger").fetchall()


def _turns(tmp_path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "conversations.db") as conn:
        return conn.execute("SELECT conversation_id, answer FROM turns").fetchall()


async def test_a_slow_call_detaches_and_get_answer_returns_it_whole(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    standin.script(Reply(chunks=words(60), chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0.5)) as client:
        schemas = await _schemas(client)
        started = time.monotonic()
        first = await client.call_tool("ask_openai", {"prompt": "a long story"})
        returned_s = time.monotonic() - started
        running = ok(first)
        jsonschema.validate(running, schemas["ask_openai"])
        assert running["status"] == "running" and running["answer_id"].startswith("ans_")
        assert running["elapsed_s"] >= 0.5 and returned_s < 2.5  # back at the detach limit, not at the answer's end
        assert "get_answer" in running["next_step"] and running["answer_id"] in text_of(first)
        whole = "".join(words(60))
        assert whole.startswith(running["text"]) and len(running["text"]) < len(whole)  # the text so far

        fetched: dict[str, Any] = running
        for _ in range(40):  # each get_answer waits at most the detach limit
            fetched = ok(await client.call_tool("get_answer", {"answer_id": running["answer_id"]}))
            if fetched["status"] == "complete":
                break
        jsonschema.validate(fetched, schemas["ask_openai"])
        assert fetched["status"] == "complete" and fetched["answer_id"] == running["answer_id"]
        assert fetched["text"] == "".join(words(60)) and fetched["usage"]["output_tokens"]
        assert fetched["conversation_id"]
    rows = _ledger_rows(tmp_path)
    assert [row[0] for row in rows] == ["ask_openai"]  # one ledger row
    assert [row[0] for row in _turns(tmp_path)] == [fetched["conversation_id"]]  # one saved turn
    assert len(standin.requests) == 1


async def test_a_fast_call_is_complete_and_never_stored(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    async with connect(make_settings(detach_after_s=5)) as client:
        result = ok(await client.call_tool("ask_claude", {"prompt": "hi"}))
        assert result["status"] == "complete" and result["answer_id"] is None
        assert (await client.call_tool("ask_claude", {"prompt": "hi"})).meta["mcp-llm-server/answer"] == {
            "status": "complete",
            "answer_id": None,
        }
    with sqlite3.connect(tmp_path / "conversations.db") as conn:
        assert conn.execute("SELECT count(*) FROM answers").fetchone() == (0,)


async def test_detaching_off_keeps_the_call_on_its_request(standin: StandIn, make_settings: SettingsFactory) -> None:
    standin.script(Reply(chunks=words(20), chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0)) as client:
        result = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
    assert result["status"] == "complete" and result["text"] == "".join(words(20))


async def test_get_answer_streams_progress_while_it_waits(standin: StandIn, make_settings: SettingsFactory) -> None:
    standin.script(Reply(chunks=words(80), chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0.5)) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
        log = ProgressLog()
        fetched = ok(
            await client.call_tool(
                "get_answer", {"answer_id": running["answer_id"], "wait_s": 1}, progress_callback=log
            )
        )
    assert fetched["status"] in ("running", "complete")
    assert log.messages and all(b > a for a, b in zip(log.values, log.values[1:], strict=False))
    assert any("w" in message for message in log.messages)


async def test_cancel_answer_closes_the_stream_and_charges_what_was_consumed(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    standin.script(Reply(chunks=words(400), chunk_delay_s=SLOW))
    prices = {"gpt-5.5": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    async with connect(make_settings(detach_after_s=0.5, model_prices=prices)) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
        asked = time.monotonic()
        cancelled = ok(await client.call_tool("cancel_answer", {"answer_id": running["answer_id"]}))
        record = await finished(standin, 0)
        assert record.outcome == "client_disconnected" and record.deltas_sent < 400
        assert record.finished_at is not None and record.finished_at - asked < 2.0
        assert cancelled["status"] == "cancelled" and cancelled["partial_text"].startswith("w0 ")
        assert cancelled["charges"] and "estimated" in cancelled["charges"][0] and "$" in cancelled["charges"][0]
        later = await client.call_tool("get_answer", {"answer_id": running["answer_id"]})
        assert later.is_error and error_details(later)["error"]["kind"] == "cancelled"
        again = ok(await client.call_tool("cancel_answer", {"answer_id": running["answer_id"]}))
        assert again["status"] == "complete"  # nothing more to cancel
    rows = _ledger_rows(tmp_path)
    assert len(rows) == 1 and rows[0][1] > 0 and rows[0][2] > 0  # estimated output tokens, priced
    assert _turns(tmp_path) == []  # a cancelled answer is not a turn


async def test_an_unknown_answer_id_is_a_clear_error(make_settings: SettingsFactory) -> None:
    async with connect(make_settings()) as client:
        result = await client.call_tool("get_answer", {"answer_id": "ans_nothing", "wait_s": 0.3})
        assert result.is_error and "No answer has the id" in text_of(result)
        assert error_details(result)["error"]["kind"] == "unknown_answer"


async def test_an_answer_nobody_fetches_is_still_saved(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    standin.script(Reply(chunks=words(30), chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0.3)) as client:
        running = ok(await client.call_tool("ask_claude", {"prompt": "x"}))
        assert running["status"] == "running"
        await finished(standin, 0, within=10)

        def stored() -> bool:
            with sqlite3.connect(tmp_path / "conversations.db") as conn:
                row = conn.execute("SELECT status FROM answers WHERE id = ?", (running["answer_id"],)).fetchone()
            return row == ("complete",)

        await wait_until(stored, 10, "the answer's row to be complete")
    assert len(_ledger_rows(tmp_path)) == 1 and len(_turns(tmp_path)) == 1


async def test_shutdown_interrupts_a_detached_answer_and_a_restart_says_so(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    standin.script(Reply(chunks=words(400), chunk_delay_s=SLOW))
    settings = make_settings(detach_after_s=0.5)
    async with connect(settings) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
    async with connect(settings) as client:
        result = await client.call_tool("get_answer", {"answer_id": running["answer_id"]})
    assert result.is_error
    error = error_details(result)["error"]
    assert error["kind"] == "interrupted" and error["partial_text"].startswith("w0 ")
    assert "interrupted" in text_of(result)
    assert error["charges"] and len(_ledger_rows(tmp_path)) == 1  # a graceful shutdown charges what was consumed


async def test_too_many_detached_refuses_a_new_call(standin: StandIn, make_settings: SettingsFactory) -> None:
    standin.script(*[Reply(chunks=words(200), chunk_delay_s=SLOW)] * 2)
    async with connect(make_settings(detach_after_s=0.3, max_detached=1)) as client:
        first = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
        assert first["status"] == "running"
        refused = await client.call_tool("ask_openai", {"prompt": "y"})
        assert refused.is_error and error_details(refused)["error"]["kind"] == "too_many_detached"
        assert "MCP_LLM_MAX_DETACHED" in text_of(refused)
        await client.call_tool("cancel_answer", {"answer_id": first["answer_id"]})
    assert len(standin.requests) == 1


async def test_other_calls_are_served_while_answers_run_detached(
    standin: StandIn, make_settings: SettingsFactory
) -> None:
    standin.script(Reply(chunks=words(200), chunk_delay_s=SLOW), Reply(text="quick"))
    async with connect(make_settings(detach_after_s=0.3)) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "slow"}))
        quick = ok(await client.call_tool("ask_claude", {"prompt": "fast"}))
        assert quick["status"] == "complete" and quick["text"] == "quick"
        assert (await client.list_tools()).tools
        await client.call_tool("cancel_answer", {"answer_id": running["answer_id"]})


@pytest.mark.parametrize("tool", ["ask_many", "extract_json"])
async def test_every_model_tool_detaches(standin: StandIn, make_settings: SettingsFactory, tool: str) -> None:
    chunks = ['{"name": ', *[" " for _ in range(40)], '"Ada"}'] if tool == "extract_json" else words(60)
    standin.script(*[Reply(chunks=chunks, chunk_delay_s=SLOW)] * 2)
    arguments: dict[str, Any] = (
        {"text": "Ada wrote it", "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}
        if tool == "extract_json"
        else {"prompt": "x", "targets": ["openai", "anthropic"]}
    )
    async with connect(make_settings(detach_after_s=0.5)) as client:
        schemas = await _schemas(client)
        first = await client.call_tool(tool, arguments)
        assert not first.is_error and first.meta["mcp-llm-server/answer"]["status"] == "running"
        answer_id = first.meta["mcp-llm-server/answer"]["answer_id"]
        if schemas[tool] is not None:
            jsonschema.validate(first.structured_content, schemas[tool])
        with anyio.fail_after(30):
            while True:
                fetched = await client.call_tool("get_answer", {"answer_id": answer_id})
                if fetched.meta["mcp-llm-server/answer"]["status"] == "complete":
                    break
    assert not fetched.is_error, text_of(fetched)
    if tool == "extract_json":
        assert fetched.structured_content == {"name": "Ada"}  # the caller's value, untouched
    else:
        assert schemas[tool] is not None
        jsonschema.validate(fetched.structured_content, schemas[tool])
        assert fetched.structured_content["succeeded"] == 2


async def test_over_stateless_http_a_detached_answer_is_fetched_on_a_new_connection(
    standin: StandIn, tmp_path: Path
) -> None:
    """Over Streamable HTTP (stateless, as replicas run): progress streams until the call detaches, and get_answer on
    another connection returns the whole answer."""
    standin.script(Reply(text="warm"), Reply(chunks=words(60), chunk_delay_s=SLOW))
    env = server_env(standin, MCP_LLM_DETACH_AFTER_S="1", MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/s.db")
    with running_http_server(env, tmp_path, "--stateless") as server:
        async with Client(server.mcp_url) as client:
            assert not (await client.call_tool("ask_openai", {"prompt": "warm up"})).is_error
            log = ProgressLog()
            running = ok(await client.call_tool("ask_openai", {"prompt": "x"}, progress_callback=log))
        assert running["status"] == "running" and log.messages  # progress reached the client before the detach
        async with Client(server.mcp_url) as other:
            with anyio.fail_after(30):
                while (fetched := ok(await other.call_tool("get_answer", {"answer_id": running["answer_id"]})))[
                    "status"
                ] != "complete":
                    pass
    assert fetched["text"] == "".join(words(60))


async def test_an_echoed_key_never_shows_in_a_running_result_its_row_or_its_progress(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    half = len(OPENAI_KEY) // 2
    chunks = [*words(5), OPENAI_KEY[:half], OPENAI_KEY[half:], " ", *words(60)]
    standin.script(Reply(chunks=chunks, chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0.6)) as client:
        running = await client.call_tool("ask_openai", {"prompt": "x"})
        answer_id = ok(running)["answer_id"]
        log = ProgressLog()
        fetched = await client.call_tool("get_answer", {"answer_id": answer_id, "wait_s": 1.5}, progress_callback=log)

        def row() -> str:
            with sqlite3.connect(tmp_path / "conversations.db") as conn:
                return str(conn.execute("SELECT partials, result FROM answers WHERE id = ?", (answer_id,)).fetchone())

        await wait_until(lambda: "w20" in row(), 10, "the row's partial text to pass the key")
        final = await client.call_tool("get_answer", {"answer_id": answer_id})
        with anyio.fail_after(30):
            while ok(final)["status"] != "complete":
                final = await client.call_tool("get_answer", {"answer_id": answer_id})
    shown = [text_of(running), str(running.structured_content), text_of(fetched), *log.messages, row(), text_of(final)]
    assert OPENAI_KEY[:half] in "".join(chunks) and "[redacted]" in text_of(final)
    for text in shown:
        assert OPENAI_KEY not in text and OPENAI_KEY[:half] not in text


async def test_get_answer_waits_no_longer_than_the_detach_limit(
    standin: StandIn, make_settings: SettingsFactory
) -> None:
    standin.script(Reply(chunks=words(400), chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0.5)) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
        started = time.monotonic()
        again = ok(await client.call_tool("get_answer", {"answer_id": running["answer_id"], "wait_s": 3600}))
        waited = time.monotonic() - started
        assert again["status"] == "running" and 0.4 < waited < 5  # capped at the 0.5 s limit (bounds for a slow box)
        assert len(again["text"]) > len(running["text"])
        await client.call_tool("cancel_answer", {"answer_id": running["answer_id"]})


async def test_a_detached_call_still_ends_at_its_deadline(standin: StandIn, make_settings: SettingsFactory) -> None:
    standin.script(Reply(chunks=words(400), chunk_delay_s=SLOW))
    async with connect(make_settings(detach_after_s=0.3)) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "x", "timeout_s": 1.5}))
        with anyio.fail_after(30):
            while not (fetched := await client.call_tool("get_answer", {"answer_id": running["answer_id"]})).is_error:
                assert ok(fetched)["status"] == "running"
    details = error_details(fetched)
    assert details["error"]["kind"] == "deadline" and details["partial_text"].startswith("w0 ")
    assert fetched.meta["mcp-llm-server/answer"]["status"] == "complete"  # ended: its result is the deadline error
    record = await finished(standin, 0)
    assert record.outcome == "client_disconnected"


async def test_with_the_database_locked_a_detached_answer_is_still_returned(
    standin: StandIn, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Locked by another process throughout: the row cannot be written, the answer is kept in memory and returned."""
    path = tmp_path / "locked.db"
    url = sqlite_url(path, busy_timeout_s=0.2)
    await created(url)
    standin.script(Reply(chunks=words(40), chunk_delay_s=SLOW))
    async with locked(path), connect(make_settings(database_url=url, detach_after_s=0.5)) as client:
        running = ok(await client.call_tool("ask_openai", {"prompt": "x"}))
        assert running["status"] == "running"
        with anyio.fail_after(60):
            while (fetched := ok(await client.call_tool("get_answer", {"answer_id": running["answer_id"]})))[
                "status"
            ] != "complete":
                pass
    assert fetched["text"] == "".join(words(40)) and fetched["notes"]  # the paid answer, and what could not be saved


async def test_sigterm_interrupts_a_detached_answer_charges_it_and_a_restart_says_so(
    standin: StandIn, tmp_path: Path
) -> None:
    """Over stdio, SIGTERM (which cancels every task at once): the detached answer is stored as interrupted, what it
    consumed charged, and the next process's get_answer returns that."""
    standin.script(Reply(chunks=words(400), chunk_delay_s=SLOW))
    env = child_env(
        standin, MCP_LLM_DETACH_AFTER_S="1", MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/conversations.db"
    )
    async with wire_server(env, tmp_path, tmp_path / "first.txt") as server:
        server.call(1, "ask_openai", {"prompt": "x"})
        running = (await server.response(1))["result"]["structuredContent"]
        assert running["status"] == "running"
        server.process.send_signal(signal.SIGTERM)
        assert await server.exit_code(within=EXIT_S) == 0
        assert "Traceback" not in server.stderr_text()
    record = await finished(standin, 0)
    assert record.outcome == "client_disconnected"
    async with wire_server(env, tmp_path, tmp_path / "second.txt") as server:
        server.call(2, "get_answer", {"answer_id": running["answer_id"]})
        result = (await server.response(2))["result"]
    error = result["_meta"]["mcp-llm-server/error"]["error"]
    assert result["isError"] and error["kind"] == "interrupted" and error["partial_text"].startswith("w0 ")
    assert error["charges"] and len(_ledger_rows(tmp_path)) == 1
