"""Per-caller budgets (`MCP_LLM_CALLER_BUDGETS`): reading them from settings.

`{"token:alice": {"daily_usd": 5, "monthly_usd": 50}, "oauth:bob": {"daily_usd": null}}` overrides, for the callers
named, the caps every caller has (`MCP_LLM_CALLER_BUDGET_DAILY_USD`, `..._MONTHLY_USD`). A field left out keeps
the default; `null` means no cap for that period, even when a default is set.
"""

from __future__ import annotations

import math
import re

from .json_setting import json_object

__all__ = ["CALLER_BUDGET_FIELDS", "CallerBudgets", "parse_caller_budgets"]

# Caller id -> the fields given for it ("daily_usd", "monthly_usd"), each a cap in USD or None (no cap).
CallerBudgets = dict[str, dict[str, float | None]]

CALLER_BUDGET_FIELDS = ("daily_usd", "monthly_usd")

# The caller ids `callers` defines: a bare `alice` would never match anyone, so it is refused rather than ignored.
_CALLER_ID = re.compile(r"stdio|http:open|http:token|(token|oauth):.+", re.DOTALL)
_SHAPE = '{"<caller id>": {"daily_usd": 5, "monthly_usd": 50}}'


def parse_caller_budgets(value: object) -> CallerBudgets:
    """A JSON string (blank: none) or a mapping, to caller id -> the fields given. Messages name the entry and
    the field at fault."""
    entries = json_object(value, _SHAPE)
    return {_caller_id(n, caller): _entry(caller, entry) for n, (caller, entry) in enumerate(entries.items(), 1)}


def _caller_id(number: int, caller: object) -> str:
    if not isinstance(caller, str) or not _CALLER_ID.fullmatch(caller):  # not echoed: it may be a pasted secret
        raise ValueError(
            f"entry {number}: its key is not a caller id (stdio, http:open, http:token, token:<name> or "
            "oauth:<subject>)"
        )
    return caller


def _entry(caller: str, entry: object) -> dict[str, float | None]:
    if not isinstance(entry, dict):
        raise ValueError(f'entry "{caller}": expected an object {{"daily_usd": ..., "monthly_usd": ...}}')
    unknown = sorted(str(key) for key in entry if key not in CALLER_BUDGET_FIELDS)
    if unknown:
        raise ValueError(f'entry "{caller}": unknown field {unknown[0]!r} (use daily_usd and monthly_usd)')
    return {field: _usd(caller, field, usd) for field, usd in entry.items()}


def _usd(caller: str, field: str, usd: object) -> float | None:
    if usd is None:
        return None
    if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd) or usd < 0:
        raise ValueError(f'entry "{caller}", field {field}: expected a number of USD >= 0, or null for no cap')
    return float(usd)
