"""The limits a call is held to, read from the settings: its time limit, retries, budget caps, worst-case cost."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from ..pricing import NANOS_PER_USD, Pricing, estimate_input_tokens
from ..providers.base import LLMRequest, ProviderId, output_allowance
from ..providers_config import PROVIDERS_VARIABLE
from ..resilience import RetryPolicy
from ..settings import Settings
from ..store import CALLER_SCOPE_PREFIX, BudgetCap

__all__ = [
    "CHARS_PER_TOKEN_CAP",
    "CallLimits",
    "answer_char_cap",
    "budget_caps",
    "call_limits",
    "caller_caps",
    "retry_policy",
    "worst_case_nanos",
]

# No tokenizer makes a token longer than this many characters: an upstream sending more text than
# `allowance * CHARS_PER_TOKEN_CAP` is not answering within the tokens asked for.
CHARS_PER_TOKEN_CAP = 32


@dataclass(frozen=True, slots=True)
class CallLimits:
    timeout_s: float
    stall_s: float
    policy: RetryPolicy


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s,
        retry_after_max_s=settings.retry_after_max_s,
    )


def call_limits(settings: Settings, timeout_s: float | None) -> CallLimits:
    return CallLimits(
        timeout_s=min(timeout_s or settings.call_timeout_s, settings.max_call_timeout_s),
        stall_s=settings.stall_timeout_s,
        policy=retry_policy(settings),
    )


def answer_char_cap(request: LLMRequest) -> int:
    """The most answer text one call collects: what its output allowance could hold, generously counted."""
    return output_allowance(request) * CHARS_PER_TOKEN_CAP + 1024


_BUDGET_VARIABLES: dict[tuple[str, str], str] = {
    ("global", "day"): "MCP_LLM_BUDGET_DAILY_USD",
    ("global", "month"): "MCP_LLM_BUDGET_MONTHLY_USD",
    ("openai", "day"): "MCP_LLM_OPENAI_BUDGET_DAILY_USD",
    ("openai", "month"): "MCP_LLM_OPENAI_BUDGET_MONTHLY_USD",
    ("anthropic", "day"): "MCP_LLM_ANTHROPIC_BUDGET_DAILY_USD",
    ("anthropic", "month"): "MCP_LLM_ANTHROPIC_BUDGET_MONTHLY_USD",
}


def budget_caps(settings: Settings, provider_id: ProviderId, caller: str) -> list[BudgetCap]:
    """The budget caps a call by `caller` to `provider_id` must fit (none when no budget is set)."""
    caps = []
    for scope in ("global", provider_id):
        for period in ("day", "month"):
            usd, variable = _budget(settings, scope, period)
            if usd is not None:
                caps.append(BudgetCap(scope, period, round(usd * NANOS_PER_USD), variable))
    return caps + caller_caps(settings, caller)


def _budget(settings: Settings, scope: str, period: str) -> tuple[float | None, str]:
    """A shared cap in USD (None: no cap) and the variable that sets it."""
    spec = settings.providers.get(scope)
    if spec is not None:
        field = "budget_daily_usd" if period == "day" else "budget_monthly_usd"
        return getattr(spec, field), f'{PROVIDERS_VARIABLE}["{scope}"].{field}'
    variable = _BUDGET_VARIABLES[(scope, period)]
    usd: float | None = getattr(settings, variable.removeprefix("MCP_LLM_").lower())
    return usd, variable


def caller_caps(settings: Settings, caller: str) -> list[BudgetCap]:
    """The caps of `caller` alone (scope `caller:<id>`): its entry in `MCP_LLM_CALLER_BUDGETS`, else the defaults."""
    given = settings.caller_budgets.get(caller, {})
    caps = []
    for period, field, default, variable in (
        ("day", "daily_usd", settings.caller_budget_daily_usd, "MCP_LLM_CALLER_BUDGET_DAILY_USD"),
        ("month", "monthly_usd", settings.caller_budget_monthly_usd, "MCP_LLM_CALLER_BUDGET_MONTHLY_USD"),
    ):
        usd = default
        if field in given:
            usd, variable = given[field], f'MCP_LLM_CALLER_BUDGETS["{caller}"].{field}'
        if usd is not None:
            caps.append(BudgetCap(CALLER_SCOPE_PREFIX + caller, period, round(usd * NANOS_PER_USD), variable))
    return caps


def worst_case_nanos(pricing: Pricing, provider_id: ProviderId, request: LLMRequest) -> int:
    """The most the call can cost: the input estimate plus its whole output allowance (the answer's `max_tokens`
    and, with `reasoning_effort`, the reasoning budget on top), at the model's price."""
    rates = pricing.rates(provider_id, request.model)
    if rates is None:
        return 0
    usd = (
        estimate_input_tokens(request) * rates.input_per_mtok + output_allowance(request) * rates.output_per_mtok
    ) / Decimal(1_000_000)
    return math.ceil(usd * NANOS_PER_USD)
