"""Conversations end to end: continuing (across a restart and across providers), serialising, listing, trimming."""

from __future__ import annotations

import json
from pathlib import Path

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import SettingsFactory, server_env, stdio_params, text_of
from helpers import connect, ok
from mcp import Client

from mcp_llm_server._standin import RecordedRequest, Reply, StandIn

pytestmark = pytest.mark.anyio


def messages_of(request: RecordedRequest) -> list[tuple[str, str]]:
    """(role, text) of every message a request carried, whatever the API."""
    body = request.body
    if request.api == "responses":
        items = body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
    else:
        items = [m for m in body["messages"] if m["role"] != "system"]
    out = []
    for item in items:
        content = item["content"]
        text = content if isinstance(content, str) else "\n\n".join(block["text"] for block in content)
        out.append((item["role"], text))
    return out


async def test_conversation_survives_a_restart_of_the_stdio_server(standin: StandIn, tmp_path: Path) -> None:
    """A conversation begun in one stdio server process continues in a new process on the same database file."""
    env = server_env(standin, MCP_LLM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    standin.script(Reply(text="Paris."), Reply(text="About 2.1 million."))
    async with Client(stdio_params(env)) as first:
        conversation_id = ok(await first.call_tool("ask_openai", {"prompt": "Capital of France?"}))["conversation_id"]
    assert conversation_id
    async with Client(stdio_params(env)) as second:
        result = ok(
            await second.call_tool("ask_openai", {"prompt": "Its population?", "conversation_id": conversation_id})
        )
    assert result["conversation_id"] == conversation_id and result["turns_omitted"] == 0
    assert messages_of(standin.requests[1]) == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "Its population?"),
    ]


@pytest.mark.parametrize(
    ("first", "second", "openai_api"),
    [
        ("ask_openai", "ask_claude", "responses"),
        ("ask_claude", "ask_openai", "responses"),
        ("ask_claude", "ask_openai", "chat"),
    ],
)
async def test_continued_with_the_other_provider(
    make_settings: SettingsFactory, standin: StandIn, first: str, second: str, openai_api: str
) -> None:
    """The second provider's request carries the first turn (system, prompt, answer) as messages in its own format."""
    standin.script(Reply(text="First answer."), Reply(text="Second answer."))
    async with connect(make_settings(openai_api=openai_api)) as client:
        started = ok(await client.call_tool(first, {"prompt": "Question one", "system": "Be brief."}))
        conversation_id = started["conversation_id"]
        result = ok(await client.call_tool(second, {"prompt": "Question two", "conversation_id": conversation_id}))
        detail = ok(await client.call_tool("get_conversation", {"conversation_id": conversation_id}))
    assert result["conversation_id"] == conversation_id
    follow_up = standin.requests[1]
    assert follow_up.api == {"ask_claude": "messages", "ask_openai": openai_api}[second]
    assert messages_of(follow_up) == [
        ("user", "Question one"),
        ("assistant", "First answer."),
        ("user", "Question two"),
    ]
    # The conversation's system text carries over when the follow-up gives none.
    body = follow_up.body
    system = body.get("system") or body.get("instructions") or body["messages"][0]["content"]
    assert system == "Be brief."
    info = detail["conversation"]
    assert info["turns"] == 2 and len(info["providers"]) == 2
    assert [t["answer"] for t in detail["turns"]] == ["First answer.", "Second answer."]


async def test_anthropic_caches_the_earlier_turns(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Continuing on Anthropic marks the end of the earlier turns with cache_control; cache reads show in usage."""
    standin.script(Reply(text="One."), Reply(text="Two.", cached_input_tokens=1234))
    async with connect(make_settings()) as client:
        conversation_id = ok(await client.call_tool("ask_claude", {"prompt": "First"}))["conversation_id"]
        result = ok(await client.call_tool("ask_claude", {"prompt": "Second", "conversation_id": conversation_id}))
        listed = ok(await client.call_tool("list_conversations", {}))
    first_body, second_body = (r.body for r in standin.requests)
    assert "cache_control" not in json.dumps(first_body)  # nothing worth caching yet
    messages = second_body["messages"]
    assert messages[1]["content"][-1] == {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}}
    assert "cache_control" not in json.dumps(messages[2])
    assert result["usage"]["cached_input_tokens"] == 1234
    assert listed["conversations"][0]["cached_input_tokens"] == 1234


async def test_openai_cached_tokens_reported(make_settings: SettingsFactory, standin: StandIn) -> None:
    """OpenAI's cached_tokens (Responses and Chat Completions) come back as usage.cached_input_tokens."""
    for api in ("responses", "chat"):
        standin.script(Reply(cached_input_tokens=512))
        async with connect(make_settings(openai_api=api)) as client:
            result = ok(await client.call_tool("ask_openai", {"prompt": "Hi"}))
        assert result["usage"]["cached_input_tokens"] == 512, api


async def test_concurrent_calls_on_one_conversation_keep_every_turn(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """Six concurrent calls on one conversation run one after the other: all turns are kept, each sees the last."""
    standin.default_reply = Reply(text="answer", chunks=["ans", "wer"], chunk_delay_s=0.02)
    async with connect(make_settings()) as client:
        conversation_id = ok(await client.call_tool("ask_openai", {"prompt": "start"}))["conversation_id"]

        async def follow_up(n: int) -> None:
            tool = "ask_openai" if n % 2 else "ask_claude"
            ok(await client.call_tool(tool, {"prompt": f"follow-up {n}", "conversation_id": conversation_id}))

        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(follow_up, n)
        detail = ok(await client.call_tool("get_conversation", {"conversation_id": conversation_id}))
    assert [t["index"] for t in detail["turns"]] == list(range(7))
    assert sorted(t["prompt"] for t in detail["turns"][1:]) == [f"follow-up {n}" for n in range(6)]
    # Serialised: the k-th follow-up sent k earlier turns, so no call missed another's turn.
    earlier_turns = sorted((len(messages_of(r)) - 1) // 2 for r in standin.requests[1:])
    assert earlier_turns == [1, 2, 3, 4, 5, 6]


async def test_list_get_and_delete(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Conversations are listed newest first with their providers, models and tokens; read in full; deleted."""
    standin.script(Reply(text="A1"), Reply(text="B1"), Reply(text="B2"))
    async with connect(make_settings()) as client:
        a = ok(await client.call_tool("ask_openai", {"prompt": "Tell me about apples " * 10, "model": "gpt-x"}))
        b = ok(await client.call_tool("ask_claude", {"prompt": "Bananas?", "model": "claude-y"}))
        ok(await client.call_tool("ask_openai", {"prompt": "More", "conversation_id": b["conversation_id"]}))
        listed = ok(await client.call_tool("list_conversations", {}))
        got = await client.call_tool("get_conversation", {"conversation_id": b["conversation_id"]})
        detail = ok(got)
        resource = await client.read_resource(f"conversation://{b['conversation_id']}")
        deleted = ok(await client.call_tool("delete_conversation", {"conversation_id": a["conversation_id"]}))
        again = ok(await client.call_tool("delete_conversation", {"conversation_id": a["conversation_id"]}))
        after = ok(await client.call_tool("list_conversations", {}))
        gone = await client.call_tool("get_conversation", {"conversation_id": a["conversation_id"]})
        requests_before = len(standin.requests)
        refused = await client.call_tool("ask_openai", {"prompt": "x", "conversation_id": a["conversation_id"]})
    first, second = listed["conversations"]
    assert (first["id"], second["id"]) == (b["conversation_id"], a["conversation_id"])
    assert first["title"] == "Bananas?" and first["turns"] == 2
    assert first["providers"] == ["anthropic", "openai"] and first["models"] == ["claude-y", "gpt-5.5"]
    assert second["title"].startswith("Tell me about apples") and len(second["title"]) <= 80
    assert first["output_tokens"] == 2 and first["updated_at"].endswith("Z")
    assert [t["answer"] for t in detail["turns"]] == ["B1", "B2"]
    assert "## Turn 2: openai:gpt-5.5" in text_of(got)
    assert json.loads(resource.contents[0].text)["turns"][1]["prompt"] == "More"  # type: ignore[union-attr]
    assert deleted["deleted"] is True and again["deleted"] is False
    assert [c["id"] for c in after["conversations"]] == [b["conversation_id"]]
    assert gone.is_error and "list_conversations" in text_of(gone)
    assert refused.is_error and "No conversation" in text_of(refused)
    assert len(standin.requests) == requests_before  # refused before any upstream request


async def test_size_cap_drops_the_least_recently_updated(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Over MCP_LLM_CONVERSATIONS_MAX_CHARS, writing a turn removes the least recently updated conversations."""
    async with connect(make_settings(conversations_max_chars=60)) as client:
        old = ok(await client.call_tool("ask_openai", {"prompt": "first conversation"}))
        new = ok(await client.call_tool("ask_openai", {"prompt": "second conversation"}))
        listed = ok(await client.call_tool("list_conversations", {}))
    assert [c["id"] for c in listed["conversations"]] == [new["conversation_id"]]
    assert old["conversation_id"] != new["conversation_id"]


async def test_history_trimmed_oldest_first(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A history over MCP_LLM_HISTORY_MAX_CHARS loses its oldest turns, and the result says how many."""
    standin.default_reply = Reply(text="x" * 40)
    async with connect(make_settings(history_max_chars=100)) as client:
        conversation_id = ok(await client.call_tool("ask_openai", {"prompt": "turn one"}))["conversation_id"]
        for prompt in ("turn two", "turn three"):
            ok(await client.call_tool("ask_openai", {"prompt": prompt, "conversation_id": conversation_id}))
        result = ok(await client.call_tool("ask_claude", {"prompt": "turn four", "conversation_id": conversation_id}))
    assert result["turns_omitted"] == 1
    sent = messages_of(standin.requests[-1])
    assert [text for role, text in sent if role == "user"] == ["turn two", "turn three", "turn four"]


async def test_ask_many_saves_one_turn_per_answer(make_settings: SettingsFactory, standin: StandIn) -> None:
    """ask_many adds one turn per answering target; continuing sends each of them."""
    standin.script_model("gpt-a", Reply(text="from A"))
    standin.script_model("claude-b", Reply(text="from B"))
    async with connect(make_settings()) as client:
        many = ok(
            await client.call_tool("ask_many", {"prompt": "Opinions?", "targets": ["openai:gpt-a", "claude:claude-b"]})
        )
        conversation_id = many["conversation_id"]
        ok(await client.call_tool("ask_claude", {"prompt": "Which is right?", "conversation_id": conversation_id}))
        detail = ok(await client.call_tool("get_conversation", {"conversation_id": conversation_id}))
    assert [t["answer"] for t in detail["turns"]] == ["from A", "from B", standin.default_reply.text]
    assert messages_of(standin.requests[-1])[:4] == [
        ("user", "Opinions?"),
        ("assistant", "from A"),
        ("user", "Opinions?"),
        ("assistant", "from B"),
    ]


async def test_truncated_answer_stays_whole_in_the_conversation(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """An answer cut to the output cap points to get_conversation, which returns it whole."""
    standin.script(Reply(text="word " * 400))
    async with connect(make_settings(max_output_chars=1000)) as client:
        result = await client.call_tool("ask_openai", {"prompt": "Write a lot"})
        structured = ok(result)
        detail = ok(await client.call_tool("get_conversation", {"conversation_id": structured["conversation_id"]}))
    assert structured["truncated"] is True and "get_conversation" in structured["truncation_note"]
    assert structured["conversation_id"] in structured["truncation_note"]
    assert detail["turns"][0]["answer"] == "word " * 400
