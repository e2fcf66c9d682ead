"""Per-caller budgets and usage by caller: the settings, each caller's own windows under concurrency (SQLite and
PostgreSQL), the report scoped to its reader, and the stdio caller's caps through the real pipeline."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from conftest import SettingsFactory, text_of
from helpers import connect, error_of, ok
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextResourceContents

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.callers import Caller
from mcp_llm_server.pipeline import budget_caps
from mcp_llm_server.settings import Settings, SettingsError, load_settings
from mcp_llm_server.state import build_state
from mcp_llm_server.store import BudgetCap, BudgetExceeded, Database, LedgerEntry, SpendStore
from mcp_llm_server.tools.usage import _render, usage_report

pytestmark = pytest.mark.anyio

NOON = 1_795_000_000.0  # 2026-11-18 ~ 03:06 UTC
DAY = 86_400.0
LONG = 172_800.0  # a lease outlasting the test
NANO_USD = 1e-9
ALICE, BOB = "token:alice", "token:bob"
# Two OAuth subjects longer than the budget scope columns of schema 4 (32 characters), alike in their first 40.
LONG_A = "oauth:" + "0f8fad5b-d9cb-469f-a165-70867728950e" + "-a"
LONG_B = "oauth:" + "0f8fad5b-d9cb-469f-a165-70867728950e" + "-b"


def settings_of(**values: Any) -> Settings:
    return load_settings(_env_file=None, **values)


def entry(caller: str, nanos: int, conversation: str | None = None) -> LedgerEntry:
    return LedgerEntry("openai", "m", 10, 0, 5, None, nanos, conversation, "ask_openai", caller)


def model_calls(standin: StandIn) -> int:
    return sum(1 for r in standin.requests if r.method == "POST" and r.model)


# --- settings -----------------------------------------------------------------------------------------------


def test_caller_budgets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults and the per-caller JSON read from the environment; a field left out keeps the default."""
    monkeypatch.setenv("MCP_LLM_CALLER_BUDGET_DAILY_USD", "2.5")
    monkeypatch.setenv("MCP_LLM_CALLER_BUDGET_MONTHLY_USD", " ")
    monkeypatch.setenv(
        "MCP_LLM_CALLER_BUDGETS",
        json.dumps({ALICE: {"daily_usd": 5, "monthly_usd": 40.5}, "oauth:sub-1": {"daily_usd": None}, "stdio": {}}),
    )
    settings = load_settings(_env_file=None)
    assert (settings.caller_budget_daily_usd, settings.caller_budget_monthly_usd) == (2.5, None)
    assert settings.caller_budgets == {
        ALICE: {"daily_usd": 5.0, "monthly_usd": 40.5},
        "oauth:sub-1": {"daily_usd": None},
        "stdio": {},
    }
    monkeypatch.setenv("MCP_LLM_CALLER_BUDGETS", "")
    assert load_settings(_env_file=None).caller_budgets == {}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{not json", "not JSON"),
        ('["token:alice"]', "expected a JSON object"),
        ('{"alice": {"daily_usd": 1}}', "entry 1: its key is not a caller id"),
        ('{"token:": {"daily_usd": 1}}', "entry 1: its key is not a caller id"),
        ('{"token:alice": 5}', 'entry "token:alice": expected an object'),
        ('{"token:alice": {"daily": 5}}', "entry \"token:alice\": unknown field 'daily'"),
        ('{"stdio": {}, "token:alice": {"daily_usd": -1}}', 'entry "token:alice", field daily_usd'),
        ('{"token:alice": {"monthly_usd": "5"}}', 'entry "token:alice", field monthly_usd'),
        ('{"token:alice": {"monthly_usd": true}}', 'entry "token:alice", field monthly_usd'),
        ('{"token:alice": {"daily_usd": NaN}}', 'entry "token:alice", field daily_usd'),
    ],
)
def test_malformed_caller_budgets_fail_naming_the_entry(monkeypatch: pytest.MonkeyPatch, value: str, says: str) -> None:
    monkeypatch.setenv("MCP_LLM_CALLER_BUDGETS", value)
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert str(failed.value).startswith("MCP_LLM_CALLER_BUDGETS: ") and says in str(failed.value)


def test_a_bad_key_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key that is no caller id may be a secret pasted into the wrong place: the message does not show it."""
    monkeypatch.setenv("MCP_LLM_CALLER_BUDGETS", '{"sk-secret-0123456789abcdef": {"daily_usd": 1}}')
    with pytest.raises(SettingsError) as failed:
        load_settings(_env_file=None)
    assert "sk-secret" not in str(failed.value)


def test_a_negative_default_cap_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_LLM_CALLER_BUDGET_MONTHLY_USD", "-1")
    with pytest.raises(SettingsError, match="MCP_LLM_CALLER_BUDGET_MONTHLY_USD"):
        load_settings(_env_file=None)


def test_caps_per_caller_name_the_setting_that_set_them() -> None:
    """Every caller has the default caps in windows of its own; its entry overrides them, null lifting one."""
    settings = settings_of(
        budget_daily_usd=10,
        caller_budget_daily_usd=1,
        caller_budget_monthly_usd=20,
        caller_budgets={ALICE: {"daily_usd": 3}, BOB: {"monthly_usd": None}},
    )

    def own(caller: str) -> list[tuple[str, str, int, str]]:
        caps = budget_caps(settings, "openai", caller)
        assert caps[0] == BudgetCap("global", "day", 10_000_000_000, "MCP_LLM_BUDGET_DAILY_USD")
        return [(c.scope, c.period, c.cap_nanos, c.variable) for c in caps[1:]]

    assert own("stdio") == [
        ("caller:stdio", "day", 1_000_000_000, "MCP_LLM_CALLER_BUDGET_DAILY_USD"),
        ("caller:stdio", "month", 20_000_000_000, "MCP_LLM_CALLER_BUDGET_MONTHLY_USD"),
    ]
    assert own(ALICE) == [
        ("caller:token:alice", "day", 3_000_000_000, 'MCP_LLM_CALLER_BUDGETS["token:alice"].daily_usd'),
        ("caller:token:alice", "month", 20_000_000_000, "MCP_LLM_CALLER_BUDGET_MONTHLY_USD"),
    ]
    assert own(BOB) == [("caller:token:bob", "day", 1_000_000_000, "MCP_LLM_CALLER_BUDGET_DAILY_USD")]
    assert budget_caps(settings_of(), "anthropic", ALICE) == []


# --- the store: each caller its own windows ---------------------------------------------------------------------


async def test_one_callers_concurrent_calls_cannot_overspend_its_cap(database_url: str) -> None:
    """40 concurrent calls of alice over two engines (as two replicas) against her cap of 10 such calls: exactly 10
    pass, each refusal names her own budget; meanwhile all 20 of bob's pass in his own window, untouched by hers."""
    settings = settings_of(
        caller_budget_daily_usd=1000 * NANO_USD, caller_budgets={BOB: {"daily_usd": 5000 * NANO_USD}}
    )
    stores = [SpendStore(Database(database_url), clock=lambda: NOON) for _ in range(2)]
    passed: dict[str, int] = {ALICE: 0, BOB: 0}
    refusals: list[BudgetExceeded] = []

    async def one(store: SpendStore, caller: str) -> None:
        try:
            held = await store.reserve(budget_caps(settings, "openai", caller), 100, lease_s=LONG)
        except BudgetExceeded as exc:
            refusals.append(exc)
            return
        passed[caller] += 1
        await store.settle(held, 100, entry(caller, 100))

    async with anyio.create_task_group() as tg:
        for n in range(40):
            tg.start_soon(one, stores[n % 2], ALICE)
            if n < 20:
                tg.start_soon(one, stores[n % 2], BOB)
    assert passed == {ALICE: 10, BOB: 20} and len(refusals) == 30
    for refused in refusals:
        assert refused.cap.scope == "caller:token:alice" and refused.spent_nanos == 1000
        assert str(refused).startswith("Refused by your daily budget as caller token:alice")
    assert await stores[0].spent("caller:token:alice", "day") == 1000
    assert await stores[1].spent("caller:token:bob", "day") == 2000
    assert await stores[0].spent("caller:token:bob", "month") == 0  # no monthly cap: no window kept
    for store in stores:
        await store.db.aclose()


async def test_long_caller_ids_get_windows_of_their_own(database_url: str) -> None:
    """Two OAuth callers whose scopes overflowed schema 4's 32-character scope column, alike for 40 characters: each
    is held to its own cap (on PostgreSQL the scope used to overflow the column, failing every call)."""
    settings = settings_of(caller_budget_daily_usd=300 * NANO_USD)
    store = SpendStore(Database(database_url), clock=lambda: NOON)
    for caller in (LONG_A, LONG_B):
        caps = budget_caps(settings, "anthropic", caller)
        await store.settle(await store.reserve(caps, 200, lease_s=LONG), 200, entry(caller, 200))
    with pytest.raises(BudgetExceeded) as refused:
        await store.reserve(budget_caps(settings, "anthropic", LONG_A), 200, lease_s=LONG)
    assert f"your daily budget as caller {LONG_A} " in str(refused.value) and refused.value.spent_nanos == 200
    assert await store.spent("caller:" + LONG_B, "day") == 200
    report = await store.report()
    assert {row["caller"] for row in report["today"]["by_caller"]} == {LONG_A, LONG_B}
    await store.db.aclose()


async def test_report_of_one_caller_and_by_caller(database_url: str) -> None:
    """report(caller=...) holds that caller's rows alone (no breakdown); report() every row and the breakdown."""
    now = [NOON - DAY]
    store = SpendStore(Database(database_url), clock=lambda: now[0])
    settle = store.settle
    await settle(await store.reserve([], 0, lease_s=LONG), 0, entry(ALICE, 7, "c-alice-old"))  # yesterday
    now[0] = NOON
    for caller, nanos, conversation in ((ALICE, 30, "c-alice"), (ALICE, 20, "c-alice"), (BOB, 100, "c-bob")):
        await settle(await store.reserve([], 0, lease_s=LONG), 0, entry(caller, nanos, conversation))
    alice = await store.report(caller=ALICE)
    assert (alice["today"]["calls"], alice["today"]["cost_nanos"]) == (2, 50)
    assert (alice["this_month"]["calls"], alice["this_month"]["cost_nanos"]) == (3, 57)
    assert "by_caller" not in alice["today"] and "by_caller" not in alice["this_month"]
    assert [c["conversation_id"] for c in alice["top_conversations_this_month"]] == ["c-alice", "c-alice-old"]
    everyone = await store.report()
    assert everyone["today"]["cost_nanos"] == 150
    assert [(r["caller"], r["calls"], r["cost_nanos"], r["input_tokens"]) for r in everyone["today"]["by_caller"]] == [
        (BOB, 1, 100, 10),
        (ALICE, 2, 50, 20),
    ]
    assert [(r["caller"], r["calls"]) for r in everyone["this_month"]["by_caller"]] == [(BOB, 1), (ALICE, 3)]
    await store.db.aclose()


# --- usage_report as its reader may see it ------------------------------------------------------------------------


async def test_usage_report_shows_a_caller_its_own_usage_only(make_settings: SettingsFactory) -> None:
    """Alice sees her rows and her caps in full, of the shared caps (filled by bob) only the cap and whether it has
    room, and nothing of bob's; a caller who sees everything gets every row, the breakdown and every cap in full."""
    settings = make_settings(budget_daily_usd=900 * NANO_USD, caller_budget_monthly_usd=800 * NANO_USD)
    state = build_state(settings, clock=lambda: NOON)
    try:
        for caller, nanos in ((ALICE, 200), (BOB, 300), (BOB, 400)):
            held = await state.spend.reserve(budget_caps(settings, "openai", caller), nanos, lease_s=LONG)
            await state.spend.settle(held, nanos, entry(caller, nanos, f"c-{caller}"))
        mine = await usage_report(state, Caller(ALICE, sees_all=False))
        admin = await usage_report(state, Caller("token:ops", sees_all=True))
    finally:
        await state.aclose()
    assert (mine["caller"], mine["all_callers"], mine["today"]["cost_nanos"]) == (ALICE, False, 200)
    assert mine["budgets"] == [
        {"scope": "global", "period": "day", "setting": "MCP_LLM_BUDGET_DAILY_USD", "cap_usd": 9e-7, "has_room": False},
        {
            "scope": "caller:token:alice",
            "period": "month",
            "setting": "MCP_LLM_CALLER_BUDGET_MONTHLY_USD",
            "cap_usd": 8e-7,
            "spent_usd": 2e-7,
            "remaining_usd": 6e-7,
        },
    ]
    assert "bob" not in json.dumps(mine) and "900" not in json.dumps(mine)
    text = _render(mine)
    assert text.startswith("Your own usage, as caller token:alice:") and "By caller" not in text
    assert "MCP_LLM_BUDGET_DAILY_USD (shared with other callers): $0.00; it is used up until it resets." in text
    assert admin["all_callers"] and admin["today"]["cost_nanos"] == 900
    assert [(r["caller"], r["cost_nanos"]) for r in admin["today"]["by_caller"]] == [(BOB, 700), (ALICE, 200)]
    assert admin["budgets"][0]["spent_usd"] == 9e-7 and "has_room" not in admin["budgets"][0]
    assert admin["budgets"][1]["scope"] == "caller:token:ops" and admin["budgets"][1]["spent_usd"] == 0
    assert "  - token:bob: $0.0000, 2 calls, 20 input and 10 output tokens" in _render(admin)


# --- through the real pipeline: the stdio caller ------------------------------------------------------------------

PRICES = {"metered": {"input_per_mtok": 1000, "output_per_mtok": 1000}}  # $1 per 1000 tokens
ASK = {"prompt": "x" * 40, "model": "metered", "max_tokens": 100}  # reserves $0.126; with the reply below, costs $0.076


async def test_stdio_callers_cap_refuses_before_any_request(make_settings: SettingsFactory, standin: StandIn) -> None:
    """The default caller cap refuses the stdio caller's call in words naming its own budget, with no upstream
    request; its entry in MCP_LLM_CALLER_BUDGETS sets another cap, or (null) lifts it."""
    async with connect(make_settings(model_prices=PRICES, caller_budget_daily_usd=0.1)) as client:
        refused = await client.call_tool("ask_openai", ASK)
    assert "Refused by your daily budget as caller stdio (MCP_LLM_CALLER_BUDGET_DAILY_USD = $0.1000)" in text_of(
        refused
    )
    error = error_of(refused)
    assert (error["kind"], error["scope"], error["period"], error["cap_usd"]) == (
        "budget_exceeded",
        "caller:stdio",
        "day",
        0.1,
    )
    assert model_calls(standin) == 0
    overridden = make_settings(
        model_prices=PRICES, caller_budget_daily_usd=0.1, caller_budgets={"stdio": {"daily_usd": 0.05}}
    )
    async with connect(overridden) as client:
        refused = await client.call_tool("ask_openai", ASK)
    assert 'MCP_LLM_CALLER_BUDGETS["stdio"].daily_usd = $0.0500' in text_of(refused)
    lifted = make_settings(
        model_prices=PRICES, caller_budget_daily_usd=0.1, caller_budgets={"stdio": {"daily_usd": None}}
    )
    async with connect(lifted) as client:
        ok(await client.call_tool("ask_openai", ASK))
    assert model_calls(standin) == 1


async def test_stdio_callers_cap_holds_under_50_concurrent_calls(
    make_settings: SettingsFactory, standin: StandIn, database_url: str
) -> None:
    """50 concurrent calls of the stdio caller against its own cap of ~10: its spend never passes the cap, and
    usage_report shows the spend by caller and the caller's cap with what is left."""
    settings = make_settings(
        model_prices=PRICES, caller_budget_daily_usd=1.26, openai_concurrency=50, database_url=database_url
    )
    standin.default_reply = Reply(input_tokens=26, output_tokens=50)
    results: list[CallToolResult] = []
    async with connect(settings, clock=lambda: NOON) as client:

        async def one() -> None:
            results.append(await client.call_tool("ask_openai", ASK))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
        report = ok(await client.call_tool("usage_report", {}))
        text = text_of(await client.call_tool("usage_report", {}))
    passed = sum(1 for r in results if not r.is_error)
    assert 10 <= passed < 50 and model_calls(standin) == passed
    assert all("your daily budget as caller stdio" in text_of(r) for r in results if r.is_error)
    assert report["today"]["cost_nanos"] == passed * 76_000_000 <= 1_260_000_000
    assert report["today"]["by_caller"] == [
        {
            "caller": "stdio",
            "calls": passed,
            "cost_nanos": passed * 76_000_000,
            "cost_usd": passed * 76_000_000 / 1e9,
            "input_tokens": passed * 26,
            "output_tokens": passed * 50,
        }
    ]
    (cap,) = report["budgets"]
    assert (cap["scope"], cap["setting"], cap["spent_usd"]) == (
        "caller:stdio",
        "MCP_LLM_CALLER_BUDGET_DAILY_USD",
        report["today"]["cost_usd"],
    )
    assert f"  - stdio: ${passed * 0.076:.4f}, {passed} calls" in text


async def test_usage_resource_for_a_single_user_and_refused_when_callers_are_told_apart(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """llm://usage cannot tell who reads it: with one user it is everything (as usage_report); once callers are
    told apart it serves no one and points to the usage_report tool."""
    async with connect(make_settings(model_prices=PRICES, caller_budget_daily_usd=5)) as client:
        ok(await client.call_tool("ask_openai", ASK))
        contents = (await client.read_resource("llm://usage")).contents[0]
    assert isinstance(contents, TextResourceContents)
    resource = json.loads(contents.text)
    assert [row["caller"] for row in resource["today"]["by_caller"]] == ["stdio"]
    assert [cap["scope"] for cap in resource["budgets"]] == []  # the reader, hence its own caps, is unknown
    told_apart = make_settings(http_tokens={"alice": "alice-token-0123456789"})
    async with connect(told_apart) as client:
        with pytest.raises(MCPError, match="usage_report tool"):
            await client.read_resource("llm://usage")
