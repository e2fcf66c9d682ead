"""Costs, the ledger and budgets end to end: the real MCP client and server against the stand-in upstream."""

from __future__ import annotations

import json
from decimal import Decimal

import anyio
import pytest
from conftest import SettingsFactory, error_details, server_env, stdio_params, text_of
from genai_prices import Usage, calc_price
from helpers import connect, ok
from mcp import Client
from mcp.types import CallToolResult

from mcp_llm_server._standin import Reply, StandIn

pytestmark = pytest.mark.anyio

NOON = 1_795_000_000.0  # 2026-11-18 ~ 03:06 UTC; any fixed instant will do
DAY = 86_400.0


class Clock:
    """A settable wall clock for the budget windows."""

    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def nanos(usd: Decimal) -> int:
    return int((usd * 1_000_000_000).to_integral_value())


def model_calls(standin: StandIn) -> int:
    return sum(1 for r in standin.requests if r.method == "POST" and r.model)


async def test_openai_cost_equals_genai_prices(make_settings: SettingsFactory, standin: StandIn) -> None:
    """An OpenAI answer's cost_usd is what genai-prices computes for its input, cached input and output."""
    standin.script(Reply(input_tokens=12_000, cached_input_tokens=3_000, output_tokens=700))
    async with connect(make_settings()) as client:
        result = ok(await client.call_tool("ask_openai", {"prompt": "Hi", "model": "gpt-4o"}))
    expected = calc_price(
        Usage(input_tokens=12_000, cache_read_tokens=3_000, output_tokens=700), "gpt-4o", provider_id="openai"
    )
    assert result["cost_usd"] == nanos(expected.total_price) / 1e9
    assert result["cost_note"] is None


async def test_anthropic_cost_counts_cache_reads_as_input(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Anthropic reports cache reads apart from input_tokens: both are priced, the cached ones at the cache rate."""
    standin.script(Reply(input_tokens=5_000, cached_input_tokens=2_000, output_tokens=300))
    async with connect(make_settings()) as client:
        result = ok(await client.call_tool("ask_claude", {"prompt": "Hi", "model": "claude-haiku-4-5"}))
    usage = Usage(input_tokens=7_000, cache_read_tokens=2_000, output_tokens=300)
    expected = calc_price(usage, "claude-haiku-4-5", provider_id="anthropic")
    assert result["cost_usd"] == nanos(expected.total_price) / 1e9


async def test_unknown_model_costs_null_with_a_reason(make_settings: SettingsFactory, standin: StandIn) -> None:
    """A model genai-prices does not know gives cost_usd null and a note naming it."""
    async with connect(make_settings()) as client:
        result = ok(await client.call_tool("ask_openai", {"prompt": "Hi", "model": "llama3.2"}))
    assert result["cost_usd"] is None
    assert "llama3.2" in result["cost_note"] and "MCP_LLM_MODEL_PRICES" in result["cost_note"]


async def test_price_override_from_settings(make_settings: SettingsFactory, standin: StandIn) -> None:
    """MCP_LLM_MODEL_PRICES prices a model the table lacks (and wins over the table)."""
    standin.script(Reply(input_tokens=1_000, output_tokens=2_000), Reply(input_tokens=1_000, output_tokens=2_000))
    prices = {
        "llama3.2": {"input_per_mtok": 0, "output_per_mtok": 0},
        "gpt-4o": {"input_per_mtok": 1, "output_per_mtok": 3},
    }
    async with connect(make_settings(model_prices=prices)) as client:
        free = ok(await client.call_tool("ask_openai", {"prompt": "Hi", "model": "llama3.2"}))
        cheap = ok(await client.call_tool("ask_openai", {"prompt": "Hi", "model": "gpt-4o"}))
    assert free["cost_usd"] == 0.0
    assert cheap["cost_usd"] == (1_000 * 1 + 2_000 * 3) / 1e6


async def test_ledger_totals_after_a_mixed_run(
    make_settings: SettingsFactory, standin: StandIn, database_url: str
) -> None:
    """ask, a failed extract_json repair attempt, and each fan-out target are all in the ledger; totals add up."""
    prices = {
        "priced-a": {"input_per_mtok": 3, "output_per_mtok": 15},
        "priced-b": {"input_per_mtok": 1, "output_per_mtok": 2},
    }
    standin.script_model("priced-a", Reply(input_tokens=1_000, output_tokens=100))
    standin.script_model(
        "priced-b",
        Reply(text="not json at all", input_tokens=2_000, output_tokens=50),  # the failed attempt
        Reply(text='{"name": "Ann"}', input_tokens=2_500, output_tokens=20),
    )
    standin.script_model("priced-a", Reply(input_tokens=400, output_tokens=40))
    standin.script_model("priced-c", Reply(input_tokens=300, output_tokens=30))
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    async with connect(make_settings(model_prices=prices, database_url=database_url)) as client:
        asked = ok(await client.call_tool("ask_openai", {"prompt": "Hi", "model": "priced-a"}))
        extracted = await client.call_tool(
            "extract_json", {"text": "Ann", "schema": schema, "provider": "openai", "model": "priced-b"}
        )
        assert not extracted.is_error, text_of(extracted)
        many = ok(
            await client.call_tool("ask_many", {"prompt": "Hi", "targets": ["openai:priced-a", "anthropic:priced-c"]})
        )
        report = ok(await client.call_tool("usage_report", {}))
    assert extracted.meta is not None
    summary = next(v for v in extracted.meta.values() if isinstance(v, dict) and "attempts" in v)
    a_first, a_second = (3_000 + 1_500) * 1_000, (1_200 + 600) * 1_000  # nano-dollars: tokens x $/Mtok x 1000
    b_failed, b_ok = (2_000 + 100) * 1_000, (2_500 + 40) * 1_000
    assert asked["cost_usd"] == a_first / 1e9
    assert summary["cost_usd"] == (b_failed + b_ok) / 1e9 and summary["attempts"] == 2
    assert many["answers"][0]["cost_usd"] == a_second / 1e9
    assert many["answers"][1]["cost_usd"] is None and many["cost_usd"] is None  # priced-c has no price
    today = report["today"]
    assert today["calls"] == 5
    assert today["cost_nanos"] == a_first + b_failed + b_ok + a_second
    assert today["input_tokens"] == 1_000 + 2_000 + 2_500 + 400 + 300
    assert today["output_tokens"] == 100 + 50 + 20 + 40 + 30
    by_model = {(m["provider"], m["model"]): m for m in today["by_model"]}
    assert by_model[("openai", "priced-a")]["cost_nanos"] == a_first + a_second
    assert by_model[("anthropic", "priced-c")]["unpriced_calls"] == 1
    assert report["this_month"]["cost_nanos"] == today["cost_nanos"]
    top = report["top_conversations_this_month"]
    assert top[0]["conversation_id"] == asked["conversation_id"] and top[0]["cost_nanos"] == a_first
    assert {t["conversation_id"] for t in top} == {asked["conversation_id"], many["conversation_id"]}
    async with connect(make_settings(model_prices=prices, database_url=database_url)) as client:
        resource = await client.read_resource("llm://usage")
    assert f'"cost_nanos": {today["cost_nanos"]}' in str(resource.contents[0])


async def test_budget_holds_under_50_concurrent_calls(
    make_settings: SettingsFactory, standin: StandIn, database_url: str
) -> None:
    """A daily cap paying for ~10 calls: spend never passes it, refusals send nothing and say why; next day passes."""
    # $1 per 1000 tokens; each call reserves (40/4 + 16) input + 100 output = 126 tokens = $0.126, spends $0.076.
    prices = {"metered": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    settings = make_settings(
        model_prices=prices, budget_daily_usd=1.26, openai_concurrency=50, database_url=database_url
    )
    standin.default_reply = Reply(input_tokens=26, output_tokens=50)
    clock = Clock()
    results: list[CallToolResult] = []
    async with connect(settings, clock=clock) as client:

        async def one() -> None:
            args = {"prompt": "x" * 40, "model": "metered", "max_tokens": 100}
            results.append(await client.call_tool("ask_openai", args))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
        passed = [r for r in results if not r.is_error]
        refused = [r for r in results if r.is_error]
        report = ok(await client.call_tool("usage_report", {}))
        assert 10 <= len(passed) < 50 and len(passed) + len(refused) == 50
        assert model_calls(standin) == len(passed)  # no upstream request for a refused call
        assert report["today"]["cost_nanos"] == len(passed) * 76_000_000 <= 1_260_000_000
        assert report["budgets"][0]["spent_usd"] == report["today"]["cost_usd"]
        for result in refused:
            text = text_of(result)
            assert "MCP_LLM_BUDGET_DAILY_USD" in text and "resets at" in text and "No request was sent" in text
            error = error_details(result)["error"]
            assert error["kind"] == "budget_exceeded" and error["period"] == "day" and error["scope"] == "global"
        clock.now += DAY
        assert ok(await client.call_tool("ask_openai", {"prompt": "x" * 40, "model": "metered", "max_tokens": 100}))


async def test_provider_cap_refuses_only_its_provider(
    make_settings: SettingsFactory, standin: StandIn, database_url: str
) -> None:
    """A per-provider monthly cap refuses that provider's calls (in ask_many, that target alone)."""
    prices = {"metered": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    settings = make_settings(model_prices=prices, openai_budget_monthly_usd=0.01, database_url=database_url)
    async with connect(settings, clock=Clock()) as client:
        many = ok(
            await client.call_tool(
                "ask_many", {"prompt": "Hi", "targets": ["openai:metered", "anthropic:metered"], "max_tokens": 100}
            )
        )
    assert many["answers"][0]["error"]["kind"] == "budget_exceeded"
    assert "MCP_LLM_OPENAI_BUDGET_MONTHLY_USD" in many["answers"][0]["error"]["message"]
    assert many["answers"][1]["error"] is None
    assert [r.model for r in standin.requests if r.method == "POST"] == ["metered"]


async def test_two_server_processes_share_one_cap(
    make_settings: SettingsFactory, standin: StandIn, database_url: str
) -> None:
    """Two stdio server processes on one database, 25 concurrent calls each: the daily cap holds across both."""
    prices = {"metered": {"input_per_mtok": 1000, "output_per_mtok": 1000}}
    env = server_env(
        standin,
        MCP_LLM_DATABASE_URL=database_url,
        MCP_LLM_BUDGET_DAILY_USD="1.26",
        MCP_LLM_MODEL_PRICES=json.dumps(prices),
        MCP_LLM_OPENAI_CONCURRENCY="50",
    )
    standin.default_reply = Reply(input_tokens=26, output_tokens=50)
    results: list[CallToolResult] = []

    async def one_server() -> None:
        async with Client(stdio_params(env)) as client:

            async def one() -> None:
                args = {"prompt": "x" * 40, "model": "metered", "max_tokens": 100}
                results.append(await client.call_tool("ask_openai", args))

            async with anyio.create_task_group() as tg:
                for _ in range(25):
                    tg.start_soon(one)

    async with anyio.create_task_group() as tg:
        tg.start_soon(one_server)
        tg.start_soon(one_server)
    passed = sum(1 for r in results if not r.is_error)
    assert len(results) == 50 and 10 <= passed < 50
    assert model_calls(standin) == passed
    assert all("MCP_LLM_BUDGET_DAILY_USD" in text_of(r) for r in results if r.is_error)
    async with connect(make_settings(database_url=database_url)) as client:
        report = ok(await client.call_tool("usage_report", {}))
    assert report["today"]["cost_nanos"] == passed * 76_000_000 <= 1_260_000_000
