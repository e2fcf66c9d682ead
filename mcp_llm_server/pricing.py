"""What a call cost: the provider's reported usage priced with `genai-prices` (a maintained price table), or with a
per-model price from MCP_LLM_MODEL_PRICES. Money is counted in whole nano-dollars (10⁻⁹ USD) so sums are exact.

Token conventions: OpenAI's `input_tokens` include the cached ones; Anthropic's exclude cache reads (reported
separately), so the priced input is `input_tokens + cached_input_tokens` there. Reasoning tokens are part of the
output tokens and priced as output.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from .providers.base import LLMRequest

__all__ = ["Cost", "ModelPrice", "Pricing", "Rates", "estimate_input_tokens", "nanos_to_usd", "priced_input_tokens"]

logger = logging.getLogger(__name__)

NANOS_PER_USD = 1_000_000_000
_MTOK = Decimal(1_000_000)


class ModelPrice(BaseModel):
    """A price set by the operator (USD per million tokens)."""

    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0)  # None: the input price


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens, for the worst-case estimate of a budget reservation."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal


@dataclass(frozen=True, slots=True)
class Cost:
    usd: Decimal | None  # None: the price of this model is unknown
    note: str | None  # why it is unknown (or where the price came from, for an override)

    @property
    def nanos(self) -> int | None:
        return None if self.usd is None else to_nanos(self.usd)

    @property
    def usd_float(self) -> float | None:
        return None if self.usd is None else nanos_to_usd(to_nanos(self.usd))


def to_nanos(usd: Decimal) -> int:
    return int((usd * NANOS_PER_USD).to_integral_value())


def nanos_to_usd(nanos: int) -> float:
    return round(nanos / NANOS_PER_USD, 9)


def priced_input_tokens(input_tokens: int | None, cached_input_tokens: int | None, *, cache_apart: bool) -> int:
    """All the input tokens of an answer, cached ones included (see the module docstring for each API's convention:
    `cache_apart` for the Messages API, whose input count leaves the cached tokens out)."""
    return (input_tokens or 0) + ((cached_input_tokens or 0) if cache_apart else 0)


def estimate_input_tokens(request: LLMRequest) -> int:
    """A generous estimate of the input: one token per 4 characters of everything sent, rounded up."""
    chars = len(request.prompt) + len(request.system or "")
    chars += sum(len(turn.prompt) + len(turn.answer) + len(turn.system or "") for turn in request.history)
    chars += sum(len(f.text) for turn in request.history for f in turn.files)
    chars += sum(f.estimated_chars() for f in request.files)
    return -(-chars // 4) + 16  # plus a little for the message framing


_RATES_KEPT = 1024


class Pricing:
    """Prices calls; overrides (keyed `model` or `provider:model`) win over the price table."""

    def __init__(
        self,
        overrides: dict[str, ModelPrice],
        unknown: ModelPrice | None = None,
        *,
        cache_apart: Collection[str] = ("anthropic",),
    ) -> None:
        self._overrides = overrides
        self._unknown = unknown
        self._cache_apart = frozenset(cache_apart)  # providers speaking the Messages API
        self._rates: dict[tuple[str, str], Rates | None] = {}  # the price table does not change while running

    def _override(self, provider: str, model: str) -> ModelPrice | None:
        return self._overrides.get(f"{provider}:{model}") or self._overrides.get(model)

    def cost(
        self,
        provider: str,
        model: str,
        *,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None = None,
    ) -> Cost:
        """The cost of one answer (`input_tokens` as the provider reported them: see the module docstring)."""
        cached = cached_input_tokens or 0
        total_input = self.total_input(provider, input_tokens, cached_input_tokens)
        output = output_tokens or 0
        override = self._override(provider, model)
        if override is not None:
            cached_rate = override.cached_input_per_mtok
            if cached_rate is None:
                cached_rate = override.input_per_mtok
            usd = (
                (total_input - cached) * override.input_per_mtok
                + cached * cached_rate
                + output * override.output_per_mtok
            ) / _MTOK
            return Cost(usd, "price from MCP_LLM_MODEL_PRICES")
        from genai_prices import Usage, calc_price

        usage = Usage(input_tokens=total_input, cache_read_tokens=cached, output_tokens=output)
        try:
            price = calc_price(usage, model, provider_id=provider)
        except LookupError:
            return Cost(
                None,
                f"genai-prices has no price for {provider} model {model!r} (set one in MCP_LLM_MODEL_PRICES)",
            )
        except ValueError as exc:  # usage the table cannot price (e.g. more cached tokens than input tokens)
            return Cost(None, f"the reported usage cannot be priced: {exc}")
        return Cost(price.total_price, None)

    def rates(self, provider: str, model: str) -> Rates | None:
        """Input and output prices per million tokens; None when unknown (and no MCP_LLM_UNKNOWN_MODEL_PRICE)."""
        key = (provider, model)
        if key not in self._rates:
            if len(self._rates) >= _RATES_KEPT:  # model names come from callers: the memo stays bounded
                self._rates.clear()
            self._rates[key] = self._find_rates(provider, model)
        return self._rates[key]

    def _find_rates(self, provider: str, model: str) -> Rates | None:
        override = self._override(provider, model)
        if override is not None:
            return Rates(override.input_per_mtok, override.output_per_mtok)
        million = 1_000_000
        per_input = self.cost(provider, model, input_tokens=million, output_tokens=0)
        per_output = self.cost(provider, model, input_tokens=0, output_tokens=million)
        if per_input.usd is None or per_output.usd is None:
            if self._unknown is None:
                return None
            return Rates(self._unknown.input_per_mtok, self._unknown.output_per_mtok)
        return Rates(per_input.usd, per_output.usd)

    def total_input(self, provider: str, input_tokens: int | None, cached_input_tokens: int | None) -> int:
        """All the input tokens of an answer from `provider`, cached ones included."""
        return priced_input_tokens(input_tokens, cached_input_tokens, cache_apart=provider in self._cache_apart)

    def budget_nanos(self, provider: str, model: str, cost: Cost, output_tokens: int | None, input_tokens: int) -> int:
        """What a call counts against the budgets: its cost, or at MCP_LLM_UNKNOWN_MODEL_PRICE (else 0)."""
        if cost.nanos is not None:
            return cost.nanos
        if self._unknown is None:
            return 0
        usd = (
            input_tokens * self._unknown.input_per_mtok + (output_tokens or 0) * self._unknown.output_per_mtok
        ) / _MTOK
        return to_nanos(usd)
