"""Writes after the answer (`store/behind.py`): in order, waited for by the reads that depend on them, drained at
shutdown, inline while the database has not proved itself; and a write that fails after its answer went out is
told later, to whoever asks for what it should have saved."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import SettingsFactory, text_of
from mcp import Client
from test_store_faults import created, locked, sqlite_url

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.store.behind import Write, WriteBehind

pytestmark = pytest.mark.anyio


def recorder(done: list[str], name: str, *, ok: bool = True, pause_s: float = 0.0) -> Write:
    async def write() -> str | None:
        await anyio.sleep(pause_s)
        done.append(name)
        return None if ok else "it failed"

    return write


async def test_writes_stay_inline_until_one_succeeds_then_run_behind_in_order() -> None:
    behind, done = WriteBehind(), list[str]()
    async with behind.running():
        await behind.write(("a",), recorder(done, "first"))  # nothing proved yet: inline
        assert done == ["first"]
        await behind.write(("a",), recorder(done, "slow", pause_s=0.2))
        await behind.write(("b",), recorder(done, "quick"))
        assert done == ["first"] and behind.pending() == 2  # both queued, the caller not held up
        await behind.settled("b")
        assert done == ["first", "slow", "quick"]  # one at a time, in order
    assert behind.pending() == 0


async def test_a_failed_write_brings_writes_back_inline_until_one_succeeds() -> None:
    behind, done = WriteBehind(), list[str]()
    async with behind.running():
        await behind.write((), recorder(done, "proves"))
        await behind.write((), recorder(done, "fails", ok=False))
        await behind.settled()
        await behind.write((), recorder(done, "inline", ok=True))
        assert done == ["proves", "fails", "inline"]  # ran before write() returned
        await behind.write((), recorder(done, "behind again"))
        assert done[-1] == "inline"
    assert done[-1] == "behind again"  # drained on the way out


async def test_shutdown_drains_the_queue() -> None:
    behind, done = WriteBehind(), list[str]()
    async with behind.running():
        await behind.write((), recorder(done, "proves"))
        for index in range(5):
            await behind.write((), recorder(done, f"w{index}", pause_s=0.01))
    assert done == ["proves", "w0", "w1", "w2", "w3", "w4"]


async def test_a_turn_that_could_not_be_saved_after_its_answer_is_told_later(
    make_settings: SettingsFactory, standin: StandIn, tmp_path: Path
) -> None:
    """The database works for the first call, then another process locks it: the second call's answer comes back at
    once (its writes are behind it) and then fail; get_conversation and usage_report say so, and the third call,
    written inline again, says so in its result."""
    path = tmp_path / "flaky.db"
    url = sqlite_url(path, busy_timeout_s=0.2)
    await created(url)
    standin.script(*[Reply(text=f"answer {n}", input_tokens=10, output_tokens=5) for n in range(3)])
    async with Client(build_server(make_settings(database_url=url)), raise_exceptions=True) as client:
        first = await client.call_tool("ask_openai", {"prompt": "one", "model": "gpt-4o"})
        assert first.structured_content is not None and not first.structured_content["notes"]
        async with locked(path):
            second = await client.call_tool("ask_openai", {"prompt": "two", "model": "gpt-4o"})
            assert second.structured_content is not None and not second.structured_content["notes"]
            lost = second.structured_content["conversation_id"]
            told = await client.call_tool("get_conversation", {"conversation_id": lost})
            third = await client.call_tool("ask_openai", {"prompt": "three", "model": "gpt-4o"})
        usage = await client.call_tool("usage_report", {})
    assert told.is_error and "could not be saved" in text_of(told) and "locked" in text_of(told)
    assert third.structured_content is not None
    assert any("could not be saved" in note for note in third.structured_content["notes"])
    assert usage.structured_content is not None and usage.structured_content["unrecorded_calls"] == 2


async def test_a_first_turn_another_process_is_still_writing_is_waited_for(tmp_path: Path) -> None:
    """Replicas on one database: B is asked to continue a conversation whose first turn A writes after its answer
    went out. B waits for it (up to a second) instead of saying there is no such conversation."""
    from mcp_llm_server.store import Database
    from mcp_llm_server.store.conversations import APPEAR_WAIT_S, ConversationStore, NewTurn

    url = sqlite_url(tmp_path / "shared.db")
    await created(url)
    a = ConversationStore(Database(url), max_age_s=None, max_chars=None)
    b = ConversationStore(Database(url), max_age_s=None, max_chars=None)
    turn = NewTurn(provider="openai", model="m", system=None, prompt="p", answer="a", usage={})

    async def write_late() -> None:
        await anyio.sleep(APPEAR_WAIT_S / 4)
        await a.append("c_late", turn, "stdio")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_late)
            found = await b.get_appearing("c_late")
        started = anyio.current_time()
        missing = await b.get_appearing("c_never")
        waited = anyio.current_time() - started
    finally:
        await a.db.aclose()
        await b.db.aclose()
    assert found is not None and found.summary.turn_count == 1
    assert missing is None and APPEAR_WAIT_S <= waited < APPEAR_WAIT_S + 5


async def test_a_hung_database_holds_shutdown_only_for_the_drain_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the database never answers: leaving `running()` gives what is queued SHUTDOWN_DRAIN_S in all."""
    from mcp_llm_server.store import behind as module

    monkeypatch.setattr(module, "SHUTDOWN_DRAIN_S", 0.3)
    behind, done = WriteBehind(), list[str]()
    started = anyio.current_time()
    async with behind.running():
        await behind.write((), recorder(done, "proves"))
        await behind.write((), recorder(done, "hangs", pause_s=3600))
        await behind.write((), recorder(done, "after it", pause_s=3600))
    assert anyio.current_time() - started < 10  # not an hour
    assert done == ["proves"] and behind.pending() == 0


async def test_a_full_queue_holds_the_writer_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond _QUEUED_MAX pending writes a new one waits for room: memory stays bounded when the database lags."""
    from mcp_llm_server.store import behind as module

    monkeypatch.setattr(module, "_QUEUED_MAX", 1)
    behind, done, gate = WriteBehind(), list[str](), anyio.Event()

    async def slow() -> str | None:
        await gate.wait()
        done.append("slow")
        return None

    async with behind.running():
        await behind.write((), recorder(done, "proves"))
        await behind.write((), slow)  # taken by the drain, waiting on the gate
        await behind.write((), recorder(done, "queued"))  # fills the queue
        with anyio.move_on_after(0.5) as held:
            await behind.write((), recorder(done, "waits for room"))
        assert held.cancelled_caught  # the writer was held back, not queued past the bound
        gate.set()
    assert done == ["proves", "slow", "queued"]
