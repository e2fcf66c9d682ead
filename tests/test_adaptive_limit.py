"""The adaptive per-provider limit: the limiter on its own (growth, back-off, ceiling, floor, retry-after hold,
cancellation), and the whole server against a stand-in that refuses requests beyond a cap on open ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import pytest
from conftest import SettingsFactory, error_details
from helpers import connect, wait_until
from test_concurrency import call_many

from mcp_llm_server import state as state_module
from mcp_llm_server._standin import RateLimit, Reply, StandIn
from mcp_llm_server.adaptive_limit import AdaptiveLimiter
from mcp_llm_server.errors import UpstreamFailure
from mcp_llm_server.settings import SettingsError
from mcp_llm_server.state import AppState

pytestmark = pytest.mark.anyio


def overload(retry_after_s: float | None = None, kind: str = "rate_limited") -> UpstreamFailure:
    return UpstreamFailure("OpenAI", kind, status=429, retryable=True, retry_after_s=retry_after_s)  # type: ignore[arg-type]


@asynccontextmanager
async def held(limiter: AdaptiveLimiter, n: int) -> AsyncIterator[list[AsyncExitStack]]:
    """`n` slots taken at once, each released (successfully) when its stack is closed, or at the end."""
    stacks = [AsyncExitStack() for _ in range(n)]
    for stack in stacks:
        await stack.enter_async_context(limiter.slot())
    try:
        yield stacks
    finally:
        for stack in stacks:
            await stack.aclose()


async def refused(limiter: AdaptiveLimiter, stack: AsyncExitStack, failure: UpstreamFailure) -> None:
    """Close a held slot as a request the provider refused."""
    with pytest.raises(UpstreamFailure):
        async with stack:
            raise failure


async def fill(limiter: AdaptiveLimiter, rounds: int) -> None:
    """`rounds` times: take every slot the limit allows at once, then release them all successfully."""
    for _ in range(rounds):
        async with held(limiter, limiter.limit):
            pass


# --- the limiter ---------------------------------------------------------------------------------------------


async def test_grows_on_success_up_to_the_ceiling() -> None:
    limiter = AdaptiveLimiter(initial=2, ceiling=5)
    await fill(limiter, 1)
    assert limiter.limit == 3  # slow start: +1 per success while at least half the limit was open
    await fill(limiter, 5)
    assert (limiter.limit, limiter.open) == (5, 0)


async def test_does_not_grow_when_the_limit_is_not_used() -> None:
    """One request at a time proves nothing about sixteen."""
    limiter = AdaptiveLimiter(initial=16, ceiling=64)
    for _ in range(50):
        async with limiter.slot():
            pass
    assert limiter.limit == 16


async def test_shrinks_on_refusals_once_per_limit_and_one_per_further_refusal() -> None:
    limiter = AdaptiveLimiter(initial=10, ceiling=64)
    async with held(limiter, 10) as stacks:
        await refused(limiter, stacks[0], overload())
        assert limiter.limit == 9  # 10 open x 0.9
        await refused(limiter, stacks[1], overload(kind="overloaded"))
        await refused(limiter, stacks[2], overload())
        assert (limiter.limit, limiter.open) == (7, 7)  # two more refused of the same burst: 1 off each
        await stacks[3].aclose()  # a success with 7 open: +1/7
        assert (limiter.limit, limiter.open) == (7, 6)
        async with held(limiter, 1) as (later,):  # sent after the shrink, and refused too
            await refused(limiter, later, overload())
        assert limiter.limit == 6  # min(7.14, 7 open) x 0.9 = 6.3
        await refused(limiter, stacks[4], overload())  # sent two shrinks ago: it changes nothing
        assert (limiter.limit, limiter.open) == (6, 5)


async def test_growth_after_a_back_off_is_one_per_limit_of_successes() -> None:
    limiter = AdaptiveLimiter(initial=10, ceiling=64)
    async with held(limiter, 10) as stacks:
        await refused(limiter, stacks[0], overload())
    assert limiter.limit == 9
    await fill(limiter, 1)  # nine more successes: in slow start they would have added 5 (the top half's)
    assert limiter.limit == 10
    await fill(limiter, 4)
    assert 10 <= limiter.limit <= 12


async def test_never_below_one() -> None:
    limiter = AdaptiveLimiter(initial=3, ceiling=8)
    for _ in range(20):
        async with held(limiter, limiter.limit) as stacks:
            for stack in stacks:
                await refused(limiter, stack, overload())
    assert (limiter.limit, limiter.open) == (1, 0)
    async with limiter.slot():  # still usable
        pass


async def test_other_failures_neither_grow_nor_shrink() -> None:
    limiter = AdaptiveLimiter(initial=4, ceiling=8)
    async with held(limiter, 4) as stacks:
        await refused(limiter, stacks[0], UpstreamFailure("OpenAI", "server_error", status=500))
        with pytest.raises(RuntimeError):
            async with stacks[1]:
                raise RuntimeError("not the provider's")
    assert limiter.limit == 5  # a success at half the limit open grew it; the failures did nothing
    with pytest.raises(ValueError, match="between 1 and the ceiling"):
        AdaptiveLimiter(initial=9, ceiling=8)


async def test_retry_after_holds_back_every_new_request_until_then() -> None:
    """A refusal asking for 1 s: no request, waiting or new, is sent before then; afterwards no more than the
    shrunk limit allows, and a waiting retry goes before requests that came first."""
    limiter = AdaptiveLimiter(initial=4, ceiling=8)
    sent: list[tuple[str, float, int, int]] = []

    async def request(name: str, retry: bool = False) -> None:
        async with limiter.slot(retry=retry):
            sent.append((name, anyio.current_time(), limiter.open, limiter.limit))
            await anyio.sleep(0.05)

    async with held(limiter, 4) as stacks, anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(request, f"new {i}")
        await wait_until(lambda: limiter.waiting == 5)
        before = anyio.current_time()
        await refused(limiter, stacks[0], overload(retry_after_s=1.0))
        assert 0 < limiter.hold_remaining() <= 1.0
        assert limiter.limit == 3  # 4 open x 0.9
        await stacks[1].aclose()  # two slots free up during the hold: still nothing is sent
        await stacks[2].aclose()
        tg.start_soon(request, "retry", True)
        await wait_until(lambda: limiter.waiting == 6)
        assert sent == []
    # The first wave after the hold (3: the limit of 4 grown back, one still held), the retry in it.
    assert sorted(name for name, *_ in sent[:3]) == ["new 0", "new 1", "retry"]
    assert sorted(name for name, *_ in sent) == ["new 0", "new 1", "new 2", "new 3", "new 4", "retry"]
    assert all(at >= before + 1.0 for _, at, _, _ in sent)
    assert all(open_now <= limit for _, _, open_now, limit in sent)
    assert (limiter.open, limiter.waiting) == (0, 0)


async def test_a_hold_is_never_longer_than_the_most_a_call_waits() -> None:
    limiter = AdaptiveLimiter(initial=2, ceiling=2, max_hold_s=0.5)
    async with held(limiter, 1) as stacks:
        await refused(limiter, stacks[0], overload(retry_after_s=3600))
    assert 0 < limiter.hold_remaining() <= 0.5


async def test_cancelled_waiters_leave_no_trace() -> None:
    """Cancelled while queued, while held back by a retry-after, or just after being granted a slot (before it
    could run): the slot goes to the next waiter and nothing leaks."""
    limiter = AdaptiveLimiter(initial=1, ceiling=1)
    got: list[str] = []

    async def request(name: str) -> None:
        async with limiter.slot():
            got.append(name)

    async with held(limiter, 1) as (stack,):
        tasks = {name: asyncio.create_task(request(name)) for name in ("queued", "granted", "next")}
        await wait_until(lambda: limiter.waiting == 3)
        tasks["queued"].cancel()
        await wait_until(lambda: limiter.waiting == 2)
        await stack.aclose()  # grants "granted" its slot ...
        assert (limiter.open, limiter.waiting) == (1, 1)
        tasks["granted"].cancel()  # ... and it is cancelled before it runs (anyio's scopes wait for a checkpoint)
        await asyncio.wait(tasks.values())
    assert got == ["next"]
    assert [tasks[name].cancelled() for name in ("queued", "granted", "next")] == [True, True, False]
    assert (limiter.open, limiter.waiting) == (0, 0)

    async with held(limiter, 1) as (stack,), anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def held_back() -> None:
            with scope:
                await request("held back")

        tg.start_soon(held_back)
        await wait_until(lambda: limiter.waiting == 1)
        await refused(limiter, stack, overload(retry_after_s=30))
        await anyio.sleep(0.05)
        scope.cancel()
    assert got == ["next"]
    assert (limiter.open, limiter.waiting) == (0, 0)


async def test_a_limit_shrinking_below_the_open_requests_lets_them_finish() -> None:
    """20 open, one refused: the limit drops to 18 with 19 still open. They all finish; a new request waits until
    fewer than the limit are open (after two of them), and is then sent."""
    limiter = AdaptiveLimiter(initial=20, ceiling=20)
    seen: list[tuple[int, int]] = []
    async with held(limiter, 20) as stacks:
        await refused(limiter, stacks[0], overload())
        assert (limiter.limit, limiter.open) == (18, 19)
        async with anyio.create_task_group() as tg:

            async def late() -> None:
                async with limiter.slot():
                    seen.append((limiter.open, limiter.limit))

            tg.start_soon(late)
            await wait_until(lambda: limiter.waiting == 1)
            waiting_after_each = []
            for stack in stacks[1:]:
                await stack.aclose()
                waiting_after_each.append(limiter.waiting)
    assert waiting_after_each == [1] + [0] * 18
    assert len(seen) == 1 and seen[0][0] <= seen[0][1]
    assert (limiter.open, limiter.waiting) == (0, 0)


# --- the server against a rate-limited stand-in ---------------------------------------------------------------


async def test_ten_concurrent_calls_go_out_at_once_by_default(make_settings: SettingsFactory, standin: StandIn) -> None:
    """The old fixed limit of 8 sent ten concurrent calls in two waves."""
    standin.default_reply = Reply(delay_s=0.5)
    async with connect(make_settings()) as client:
        results = await call_many(client, [("ask_openai", {"prompt": f"q{i}"}) for i in range(10)])
    assert not any(r.is_error for r in results)
    assert standin.peak_open_requests == 10


async def test_sixty_calls_against_ten_open_at_most_all_succeed(
    make_settings: SettingsFactory, standin: StandIn, states: list[AppState]
) -> None:
    """The stand-in refuses (429, retry-after 0.1 s) beyond 10 open requests; the server starts at 16. All 60 calls
    are answered, the refusals stay few (six of the first 16, then a probe now and then: 8 in three runs), and the
    limit settles at about 10: the stand-in did have 10 open at once."""
    standin.rate_limit = RateLimit(max_open=10, retry_after_s=0.1)
    standin.default_reply = Reply(delay_s=0.5)  # long enough for a busy machine to send 16 meanwhile
    async with connect(make_settings()) as client:
        results = await call_many(client, [("ask_openai", {"prompt": f"q{i}"}) for i in range(60)])
    assert [r.is_error for r in results] == [False] * 60
    assert standin.peak_admitted_requests == 10
    assert standin.peak_open_requests <= 16  # never more sent than the initial limit
    refusals = standin.refused_requests
    assert 1 <= refusals <= 16
    assert len(standin.requests) == 60 + refusals
    (state,) = states
    limiter = state.slots["openai"].limiter
    assert 6 <= limiter.limit <= 13  # about the cap (the last answers, coming in with none left to send, add a little)
    assert (limiter.open, limiter.waiting) == (0, 0)


async def test_a_retry_after_holds_back_the_other_calls_to_that_provider(
    make_settings: SettingsFactory, standin: StandIn
) -> None:
    """One call is refused with retry-after 30 s (it gives up: that would not fit its 1 s). A second call to the same
    provider, made meanwhile, is not sent at all: its deadline ends while it waits, and it says why. A call to the
    other provider goes through."""
    standin.script_model("first", Reply.error(429, retry_after=30))
    async with connect(make_settings()) as client:
        first = await client.call_tool("ask_openai", {"prompt": "hi", "model": "first", "timeout_s": 1})
        second = await client.call_tool("ask_openai", {"prompt": "hi", "model": "second", "timeout_s": 0.5})
        claude = await client.call_tool("ask_claude", {"prompt": "hi"})
    assert error_details(first)["error"]["kind"] == "rate_limited"
    error = error_details(second)["error"]
    assert (error["kind"], error["attempts"]) == ("deadline", 0)
    assert "OpenAI asked (retry-after) that no request be sent for another" in error["message"]
    assert not claude.is_error
    assert [r.model for r in standin.requests] == ["first", "claude-sonnet-5-5"]


async def test_claude_calls_back_off_on_529(make_settings: SettingsFactory, standin: StandIn) -> None:
    """Anthropic's overloaded answer (529) shrinks the limit like a 429."""
    standin.rate_limit = RateLimit(max_open=4, retry_after_s=0.1, anthropic_status=529)
    standin.default_reply = Reply(delay_s=0.3)
    async with connect(make_settings(anthropic_initial_concurrency=8)) as client:
        results = await call_many(client, [("ask_claude", {"prompt": f"q{i}"}) for i in range(24)])
        catalog = await client.call_tool("list_models", {})
    assert not any(r.is_error for r in results)
    assert 4 <= standin.refused_requests <= 12
    refusal = next(r for r in standin.requests if r.reply is not None and r.reply.status == 529)
    assert refusal.reply is not None and refusal.reply.headers["retry-after-ms"] == "100"
    anthropic = next(p for p in (catalog.structured_content or {})["providers"] if p["id"] == "anthropic")
    assert anthropic["concurrency_ceiling"] == 64
    assert 2 <= anthropic["concurrency_limit"] <= 5


async def test_rate_limit_refusals_have_the_providers_shape(standin: StandIn) -> None:
    from anthropic import AsyncAnthropic, RateLimitError
    from openai import AsyncOpenAI
    from openai import RateLimitError as OpenAIRateLimitError

    standin.rate_limit = RateLimit(max_open=0, retry_after_s=1.5)
    openai = AsyncOpenAI(api_key="sk-test", base_url=standin.openai_base_url, max_retries=0)
    with pytest.raises(OpenAIRateLimitError) as openai_error:
        await openai.responses.create(model="gpt-standin", input="hi")
    assert openai_error.value.code == "rate_limit_exceeded"
    assert openai_error.value.response.headers["retry-after"] == "2"
    assert openai_error.value.response.headers["retry-after-ms"] == "1500"
    anthropic = AsyncAnthropic(api_key="sk-ant-test", base_url=standin.anthropic_base_url, max_retries=0)
    with pytest.raises(RateLimitError) as anthropic_error:
        await anthropic.messages.create(
            model="claude-standin", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert anthropic_error.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert standin.refused_requests == 2
    await openai.close()
    await anthropic.close()


def test_an_initial_limit_above_the_ceiling_is_refused(make_settings: SettingsFactory) -> None:
    with pytest.raises(SettingsError, match=r"MCP_LLM_ANTHROPIC_INITIAL_CONCURRENCY.*MCP_LLM_ANTHROPIC_CONCURRENCY=4"):
        make_settings(anthropic_concurrency=4, anthropic_initial_concurrency=5)
    state = state_module.build_state(make_settings(openai_concurrency=4, anthropic_initial_concurrency=2))
    assert [(s.limiter.limit, s.limiter.ceiling) for s in state.slots.values()] == [(4, 4), (2, 64)]
