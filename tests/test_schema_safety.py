"""`extract_json` cannot stall the server (issue 12, item 2): costly schemas are refused before any request, and
answers are validated off the event loop, within the call's deadline. End to end: the real MCP client and server,
the real SDKs, the stand-in upstream (which records every request)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

# Imported up front so the server's lazy SDK import costs nothing inside the calls.
import anthropic  # noqa: F401
import anyio
import openai  # noqa: F401
import pytest
from conftest import SettingsFactory, error_details, server_env, stdio_params, text_of
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server

pytestmark = pytest.mark.anyio

# A blocked event loop stalls every request for the whole validation: 8 to 20 s for the cases below before the fix.
# A served one answers in milliseconds; this bound is generous for a loaded machine.
PROMPT_S = 3.0

CATASTROPHIC = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
    "required": ["code"],
}
ANSWER_29 = json.dumps({"code": "a" * 28 + "!"})  # the value is 29 characters; Python's `re` backtracks 2^28 ways


def explosive(levels: int) -> dict[str, Any]:
    """The issue's schema: `levels` nested anyOf, each branching to the next level twice through `$ref` (~1 KB)."""
    defs: dict[str, Any] = {
        f"L{i}": {"anyOf": [{"$ref": f"#/$defs/L{i + 1}"}, {"$ref": f"#/$defs/L{i + 1}"}]} for i in range(levels)
    }
    defs[f"L{levels}"] = {"type": "string"}
    return {"type": "object", "properties": {"v": {"$ref": "#/$defs/L0"}}, "required": ["v"], "$defs": defs}


@asynccontextmanager
async def connect(make_settings: SettingsFactory) -> AsyncIterator[Client]:
    async with Client(build_server(make_settings(anthropic_model="claude-standin")), raise_exceptions=True) as c:
        yield c


def error_of(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, text_of(result)
    error: dict[str, Any] = error_details(result)["error"]
    return error


async def wait_until(condition: Callable[[], bool], within: float) -> None:
    with anyio.fail_after(within):
        while True:
            if condition():
                return
            await anyio.sleep(0.01)


async def extract_while_pinging(client: Client, arguments: dict[str, Any]) -> tuple[CallToolResult, float]:
    """`extract_json` while "pinging" the same server over and over (`tools/list`: the 2026 protocol has no ping):
    its result, and the longest wait for an answer.

    The wait is measured between consecutive answers (sleeps included), so a loop blocked while no request is in
    flight counts too.
    """
    result: list[CallToolResult] = []

    async def call() -> None:
        result.append(await client.call_tool("extract_json", arguments))

    longest = 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        last = anyio.current_time()
        while not result:
            await client.list_tools()
            await anyio.sleep(0.01)
            now = anyio.current_time()
            longest, last = max(longest, now - last), now
    return result[0], longest


# --- refused before any request -------------------------------------------------------------------------------


async def test_explosive_schema_is_refused_before_any_request(make_settings: SettingsFactory, standin: StandIn) -> None:
    """13 levels of anyOf x 2 `$ref`s (24,000 subschemas written out) is refused at once, naming where and why."""
    standin.default_reply = Reply(text='{"v": 42}')
    async with connect(make_settings) as client:
        result, longest = await extract_while_pinging(client, {"text": "x", "schema": explosive(13), "max_attempts": 1})
    error = error_of(result)
    assert error["kind"] == "invalid_schema"
    assert "expands to more than 10,000 subschemas" in error["message"] and "#/$defs/L1" in error["message"]
    assert standin.requests == []
    assert longest < PROMPT_S


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},
        {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"},
        {"type": "object", "properties": {"x": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"not": {"$ref": "#/$defs/x"}}}},
    ],
    ids=["self", "mutual", "under-not"],
)
async def test_reference_loops_are_refused_before_any_request(
    client: Client, standin: StandIn, schema: dict[str, Any]
) -> None:
    """A `$ref` loop that never descends into the value is refused with the loop's path, costing no request."""
    result = await client.call_tool("extract_json", {"text": "x", "schema": schema})
    error = error_of(result)
    assert error["kind"] == "invalid_schema"
    assert "loop without descending into the value" in error["message"] and " → " in error["message"]
    assert standin.requests == []


async def test_recursion_through_properties_is_accepted(client: Client, standin: StandIn) -> None:
    """A recursive schema whose `$ref` sits under `items` (a tree) is fine: each repetition needs a deeper value."""
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["name"],
            }
        },
        "$ref": "#/$defs/node",
    }
    bad = {"name": "a", "children": [{"name": "b", "children": [{"name": 3}]}]}
    good = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    standin.script(Reply(text=json.dumps(bad)), Reply(text=json.dumps(good)))
    result = await client.call_tool("extract_json", {"text": "a tree", "schema": tree})
    assert result.structured_content == good
    assert len(standin.requests) == 2
    assert "$.data.children[0].children[0].name" in json.dumps(standin.requests[1].body)


# --- validated without stalling --------------------------------------------------------------------------------


async def test_catastrophic_pattern_is_checked_promptly(make_settings: SettingsFactory, standin: StandIn) -> None:
    """`^(a+)+$` against a 29-character value: an ordinary validation error, and other requests keep being served."""
    standin.script(Reply(text='{"code": "aaa"}'))  # a first call opens the database, which is not measured here
    standin.default_reply = Reply(text=ANSWER_29)
    async with connect(make_settings) as client:
        assert not (await client.call_tool("extract_json", {"text": "x", "schema": CATASTROPHIC})).is_error
        arguments = {"text": "x", "schema": CATASTROPHIC, "max_attempts": 1}
        result, longest = await extract_while_pinging(client, arguments)
    error = error_of(result)
    assert error["kind"] == "schema_violation"
    assert [e["path"] for e in error["errors"]] == ["$.code"] and "does not match" in error["errors"][0]["message"]
    assert longest < PROMPT_S


async def test_enum_errors_list_every_option(client: Client, standin: StandIn) -> None:
    """The repair prompt shows every allowed value of an enum (the validator itself names only two)."""
    schema = {"type": "object", "properties": {"tier": {"enum": ["free", "pro", "team", "enterprise", None]}}}
    standin.script(Reply(text='{"tier": "gold"}'), Reply(text='{"tier": "pro"}'))
    result = await client.call_tool("extract_json", {"text": "x", "schema": schema})
    assert result.structured_content == {"tier": "pro"}
    repair = standin.requests[1].body["input"]
    assert '- $.tier: "gold" is not one of ["free", "pro", "team", "enterprise", null]' in json.loads(
        json.dumps(repair)
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [("s", None), (42, "schema_violation")],
)
async def test_costly_answers_are_validated_in_a_child_process(
    client: Client, standin: StandIn, value: Any, kind: str | None
) -> None:
    """An answer whose size times the schema's expansion is large is validated in a child process, with the same
    outcome: a valid value, or the validator's errors with their paths."""
    schema = explosive(11)  # 6,000 subschemas written out: accepted
    answer = {"v": value, "padding": list(range(20))}
    standin.default_reply = Reply(text=json.dumps(answer))
    result = await client.call_tool("extract_json", {"text": "x", "schema": schema, "max_attempts": 1})
    if kind is None:
        assert result.structured_content == answer
    else:
        error = error_of(result)
        assert error["kind"] == kind
        assert error["errors"] == [
            {"path": "$.v", "message": "42 is not valid under any of the schemas listed in the 'anyOf' keyword"}
        ]


async def test_extraction_stops_at_its_deadline() -> None:
    """Past its deadline an extraction stops at its next step, and `extract_within` does not start one."""
    from mcp_llm_server.jsonschema_tools import ValidationTimeout, check_schema, extract_within

    checked = check_schema(CATASTROPHIC, max_bytes=65_536, max_depth=32)
    with pytest.raises(ValidationTimeout, match="ran out of the call's time limit"):
        checked.extract(ANSWER_29, deadline=time.monotonic() - 1)
    with pytest.raises(ValidationTimeout):
        await extract_within(checked, ANSWER_29, deadline=anyio.current_time())


async def test_other_calls_are_served_while_a_costly_validation_runs(standin: StandIn) -> None:
    """Over stdio: while an answer takes the validator longer than the call's time limit, other requests are
    answered at once, and the call then ends at its deadline with a clear `validation_timeout` error."""
    patterns = [{"type": "string", "pattern": f"^(a|a)*(?!x{i})$"} for i in range(500)]
    schema = {"type": "object", "properties": {"codes": {"type": "array", "items": {"anyOf": patterns}}}}
    answer = json.dumps({"codes": ["a" * 21 + "!"] * 8000})  # ~20 s of lookaround backtracking at 100,000 steps
    standin.default_reply = Reply(text=answer, chunks=[answer])  # one delta: the upstream part takes no time
    result: list[CallToolResult] = []
    finished = anyio.Event()

    async def call(client: Client) -> None:
        arguments = {"text": "x", "schema": schema, "max_attempts": 1, "timeout_s": 10}
        result.append(await client.call_tool("extract_json", arguments))
        finished.set()

    # The session closes (and stops the server) before the task group ends, so a blocked server fails the test
    # at the `fail_after` below instead of hanging it.
    env = server_env(standin, MCP_LLM_MAX_TOKENS="20000")  # the answer (~200 KB) fits its token allowance
    async with anyio.create_task_group() as tg, Client(stdio_params(env)) as client:
        await client.list_tools()
        tg.start_soon(call, client)
        # Once the answer has been sent, validation starts.
        await wait_until(lambda: bool(standin.requests) and standin.requests[0].outcome is not None, within=30)
        await anyio.sleep(0.5)
        with anyio.fail_after(20):
            await client.list_tools()
        assert not result, "the extraction should still be validating"
        with anyio.fail_after(60):
            await finished.wait()
    error = error_of(result[0])
    assert error["kind"] == "validation_timeout"
    assert "ran out of the call's time limit" in error["message"] and "timeout_s" in error["message"]
