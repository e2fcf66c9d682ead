"""Every upstream answer priced, recorded in the ledger and held to the budgets.

`metered_call` wraps one `run_call`: it reserves the call's worst-case cost against the budget caps (refusing, with
no upstream request, when one does not fit), runs the call, then settles the reservation to the actual cost and
writes the ledger row, both in one transaction. A failed call releases its reservation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio

from .calls import CallOutcome
from .pricing import NANOS_PER_USD, Cost, estimate_input_tokens
from .providers.base import LLMRequest, ProviderId
from .state import AppState
from .store import BudgetExceeded, LedgerEntry

__all__ = ["BudgetExceeded", "Metered", "caller_of", "metered_call", "refusal_structured"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Metered:
    outcome: CallOutcome
    cost: Cost


def caller_of(ctx: Any) -> str:
    """Who is calling: `stdio` for a local host; on HTTP `http:token` (the bearer token) or `http:open`."""
    request = getattr(ctx.request_context, "request", None)
    if request is None:
        return "stdio"
    state: AppState = ctx.request_context.lifespan_context
    return "http:token" if state.settings.http_token is not None else "http:open"


def worst_case_nanos(state: AppState, provider_id: ProviderId, request: LLMRequest) -> int:
    """The most the call can cost: the input estimate plus `max_tokens` of output, at the model's price."""
    rates = state.pricing.rates(provider_id, request.model)
    if rates is None:
        return 0
    usd = (
        estimate_input_tokens(request) * rates.input_per_mtok + request.max_tokens * rates.output_per_mtok
    ) / Decimal(1_000_000)
    return math.ceil(usd * NANOS_PER_USD)


def refusal_structured(refused: BudgetExceeded) -> dict[str, Any]:
    cap = refused.cap
    return {
        "error": {
            "kind": "budget_exceeded",
            "message": str(refused),
            "scope": cap.scope,
            "period": cap.period,
            "cap_usd": cap.cap_nanos / NANOS_PER_USD,
            "spent_usd": refused.spent_nanos / NANOS_PER_USD,
            "resets_at": refused.resets_at.isoformat(),
            "retryable": False,
        }
    }


async def metered_call(
    state: AppState,
    provider_id: ProviderId,
    request: LLMRequest,
    call: Callable[[], Awaitable[CallOutcome]],
    *,
    tool: str,
    conversation_id: str | None,
    caller: str,
) -> Metered:
    """Run `call` inside a budget reservation; raises `BudgetExceeded` (before any request) when a cap is full."""
    reservation = await state.spend.reserve(
        state.budget_caps(provider_id),
        worst_case_nanos(state, provider_id, request),
        lease_s=state.settings.max_call_timeout_s + 60.0,  # outlasts any call; the pipeline passes its deadline
    )
    try:
        outcome = await call()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _settle(state, reservation, 0, None)
        raise
    completion = outcome.completion
    usage = completion.usage
    cost = _cost(state, provider_id, completion.model, request.model, usage)
    input_tokens = (usage.input_tokens or 0) + (usage.cached_input_tokens or 0 if provider_id == "anthropic" else 0)
    entry = LedgerEntry(
        provider=provider_id,
        model=completion.model,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_nanos=cost.nanos,
        conversation_id=conversation_id,
        tool=tool,
        caller=caller,
    )
    actual = state.pricing.budget_nanos(provider_id, completion.model, cost, usage.output_tokens, input_tokens)
    with anyio.CancelScope(shield=True):
        await _settle(state, reservation, actual, entry)
    return Metered(outcome, cost)


def _cost(state: AppState, provider_id: ProviderId, answered: str, asked: str, usage: Any) -> Cost:
    """Priced by the model that answered, or by the one asked for when the table knows only that name."""
    cost = Cost(None, None)
    for model in dict.fromkeys((answered, asked)):
        cost = state.pricing.cost(
            provider_id,
            model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
        )
        if cost.usd is not None:
            return cost
    return cost


async def _settle(state: AppState, reservation: Any, actual: int, entry: LedgerEntry | None) -> None:
    try:
        await state.spend.settle(reservation, actual, entry)
    except Exception as exc:  # the answer was had (and paid for): do not fail the call over the ledger
        logger.warning("could not record the cost of a call: %s", exc)
