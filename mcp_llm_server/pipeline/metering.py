"""Every upstream answer priced, recorded in the ledger and held to the budgets.

A `Meter` reserves a call's worst-case cost against the budget caps (refusing, with no upstream request, when one
does not fit); after the answer it settles the reservation to the actual cost and writes the ledger row, both in one
transaction. A failed call releases its reservation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio

from ..pricing import NANOS_PER_USD, Cost, Pricing, estimate_input_tokens
from ..providers.base import Completion, LLMRequest, ProviderId, Usage
from ..store import BudgetCap, BudgetExceeded, LedgerEntry, Reservation, SpendStore, StoreError
from .policy import worst_case_nanos
from .run import CallOutcome, Consumed

__all__ = ["BudgetExceeded", "Meter", "Metered", "refusal_details", "shared_refusal"]

logger = logging.getLogger(__name__)

UNRECORDED_COST_NOTE = (
    "The cost of this call could not be recorded in the ledger (the database failed); usage_report will not show it."
)


@dataclass(frozen=True, slots=True)
class Metered:
    outcome: CallOutcome
    cost: Cost
    note: str | None = None  # set when the ledger row or the settlement could not be written


def refusal_details(refused: BudgetExceeded) -> dict[str, Any]:
    """What a budget refusal adds to its `CallRefused` details (which carry the kind and the message)."""
    cap = refused.cap
    return {
        "scope": cap.scope,
        "period": cap.period,
        "cap_usd": cap.cap_nanos / NANOS_PER_USD,
        "spent_usd": refused.spent_nanos / NANOS_PER_USD,
        "resets_at": refused.resets_at.isoformat(),
        "retryable": False,
    }


def shared_refusal(refused: BudgetExceeded) -> tuple[str, dict[str, Any]]:
    """A refusal by a budget shared with other callers, told to a caller who may not see their spending: the cap
    and when it resets, not what is spent."""
    cap = refused.cap
    period = "daily" if cap.period == "day" else "monthly"
    which = "all providers" if cap.scope == "global" else cap.scope
    message = (
        f"Refused by the {period} budget for {which}, shared by every caller of this server ({cap.variable}): it "
        f"has no room for this call. It resets at {refused.resets_at:%Y-%m-%d %H:%M} UTC. No request was sent; ask "
        "with a lower max_tokens or a cheaper model, or wait for the reset."
    )
    details = refusal_details(refused)
    del details["spent_usd"]
    return message, details


@dataclass(frozen=True, slots=True)
class Meter:
    """What metering needs of the server and of this call."""

    spend: SpendStore
    pricing: Pricing
    tool: str
    caller: str
    conversation_id: str | None

    async def reserve(
        self, provider_id: ProviderId, request: LLMRequest, caps: list[BudgetCap], lease_s: float
    ) -> Reservation:
        """Reserve the call's worst-case cost for `lease_s` (past it the reservation no longer counts, so a crashed
        process frees its own); raises `BudgetExceeded` (before any request) when a cap is full, `StoreError` when
        the database cannot be used."""
        if not caps:  # nothing to hold against: no pricing, no transaction
            return Reservation((), 0)
        return await self.spend.reserve(caps, worst_case_nanos(self.pricing, provider_id, request), lease_s=lease_s)

    async def release(self, reservation: Reservation) -> None:
        with anyio.CancelScope(shield=True):
            await self._settle(reservation, 0, None)

    async def settle(
        self, reservation: Reservation, provider_id: ProviderId, request: LLMRequest, outcome: CallOutcome
    ) -> Metered:
        """Replace the reservation by the answer's actual cost and write its ledger row."""
        completion = outcome.completion
        cost = self._cost(provider_id, completion, request.model)
        usage = completion.usage
        actual = self.pricing.budget_nanos(
            provider_id,
            completion.model,
            cost,
            usage.output_tokens,
            self.pricing.total_input(provider_id, usage.input_tokens, usage.cached_input_tokens),
        )
        with anyio.CancelScope(shield=True):
            failure = await self._settle(reservation, actual, self._entry(provider_id, completion, cost))
        return Metered(outcome, cost, failure)

    async def settle_consumed(
        self,
        reservation: Reservation,
        provider_id: ProviderId,
        request: LLMRequest,
        consumed: Consumed,
        latency_ms: float,
    ) -> Metered:
        """Settle a cancelled answer at an estimate of what it consumed (no usage came back): its input, and the
        text and reasoning that had streamed, at 4 characters a token."""
        output_chars = len(consumed.text) + consumed.reasoning_chars
        usage = Usage(input_tokens=estimate_input_tokens(request), output_tokens=-(-output_chars // 4))
        completion = Completion(text=consumed.text, model=request.model, stop_reason="cancelled", usage=usage)
        outcome = CallOutcome(completion, consumed.requests, latency_ms)
        return await self.settle(reservation, provider_id, request, outcome)

    def _entry(self, provider_id: ProviderId, completion: Completion, cost: Cost) -> LedgerEntry:
        usage = completion.usage
        return LedgerEntry(
            provider=provider_id,
            model=completion.model,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_nanos=cost.nanos,
            conversation_id=self.conversation_id,
            tool=self.tool,
            caller=self.caller,
        )

    def _cost(self, provider_id: ProviderId, completion: Completion, asked: str) -> Cost:
        """Priced by the model that answered, or by the one asked for when the table knows only that name."""
        usage = completion.usage
        cost = Cost(None, None)
        for model in dict.fromkeys((completion.model, asked)):
            cost = self.pricing.cost(
                provider_id,
                model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
            )
            if cost.usd is not None:
                return cost
        return cost

    async def _settle(self, reservation: Reservation, actual: int, entry: LedgerEntry | None) -> str | None:
        """Settle the reservation, after the answer has gone out when the server runs (`store.behind`: the usage
        report waits for it; until then the reservation keeps holding the worst case). Returns what could not be
        recorded when that is known now (the settlement ran inline), else None; a later failure is logged."""

        async def write() -> str | None:
            try:
                await self.spend.settle(reservation, actual, entry)
                return None
            except Exception as exc:  # a StoreError (SettlementFailed says what became of the reservation) or a bug
                logger.warning("could not record the cost of a call: %s", exc)
                self.spend.unrecorded += 1
                return str(exc) if isinstance(exc, StoreError) else UNRECORDED_COST_NOTE

        return await self.spend.db.behind.write((), write)
