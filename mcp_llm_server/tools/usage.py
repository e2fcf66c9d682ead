"""`usage_report` and the `llm://usage` resource: today's and this month's spend, by provider and model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_REQUEST, CallToolResult, ToolAnnotations

from ..callers import Caller
from ..pipeline import budget_caps
from ..pricing import NANOS_PER_USD
from ..render import error_result, success_result
from ..sdk_adapter import app_state, caller_identity
from ..state import AppState
from ..store import CALLER_SCOPE_PREFIX, BudgetCap, StoreError

__all__ = ["USAGE_URI", "register_usage_tools", "usage_report"]

USAGE_URI = "llm://usage"
RESOURCE_NOT_SCOPED = (
    "llm://usage is not served when callers are told apart (named tokens or OAuth): a resource cannot tell who "
    "reads it. Call the usage_report tool: it reports your own usage and budgets."
)


async def usage_report(state: AppState, caller: Caller) -> dict[str, Any]:
    """The ledger's report as `caller` may see it, with the budget caps in force for it.

    A caller who sees everything gets every ledger row, the breakdown by caller, and each cap with what is spent
    against it and what is left. Anyone else gets their own ledger rows and their own caps in full, and of the
    caps shared with others (global, per provider) only the cap and whether it has room: their spend is others'.
    Raises `StoreError` when the database cannot be read.
    """
    report = await _reading(state, caller.scope, _caps_in_force(state, caller.id), full_caps=caller.sees_all)
    # Costs are recorded after the answer has gone out: one whose write failed is missing from the ledger.
    return {"caller": caller.id, "all_callers": caller.sees_all, "unrecorded_calls": state.spend.unrecorded, **report}


async def _reading(state: AppState, scope: str | None, caps: list[BudgetCap], *, full_caps: bool) -> dict[str, Any]:
    try:
        report = await state.spend.report(caller=scope)
        report["budgets"] = [await _budget(state, cap, full_caps) for cap in caps]
        return report
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # imported by then: the database was opened (or failed to)

        if isinstance(exc, SQLAlchemyError):
            raise StoreError(f"Cannot read the ledger: {type(exc).__name__}: {exc}") from None
        raise


def _caps_in_force(state: AppState, caller_id: str | None) -> list[BudgetCap]:
    """Every cap a call by `caller_id` may meet, whatever its provider (None: the shared caps alone)."""
    caps: dict[tuple[str, str], BudgetCap] = {}
    for provider_id in state.slots:
        for cap in budget_caps(state.settings, provider_id, caller_id or ""):  # "": no one's, its caps dropped
            if caller_id is not None or not _own(cap):
                caps.setdefault((cap.scope, cap.period), cap)
    return list(caps.values())


def _own(cap: BudgetCap) -> bool:
    return cap.scope.startswith(CALLER_SCOPE_PREFIX)


async def _budget(state: AppState, cap: BudgetCap, full: bool) -> dict[str, Any]:
    spent = await state.spend.spent(cap.scope, cap.period)
    row: dict[str, Any] = {
        "scope": cap.scope,
        "period": cap.period,
        "setting": cap.variable,
        "cap_usd": cap.cap_nanos / NANOS_PER_USD,
    }
    if full or _own(cap):
        row["spent_usd"] = spent / NANOS_PER_USD
        row["remaining_usd"] = max(cap.cap_nanos - spent, 0) / NANOS_PER_USD
    else:
        row["has_room"] = spent < cap.cap_nanos
    return row


def _render(report: dict[str, Any]) -> str:
    lines = [] if report["all_callers"] else [f"Your own usage, as caller {report['caller']}:"]
    for key, label in (("today", "Today"), ("this_month", "This month")):
        part = report[key]
        lines.append(
            f"{label} ({part['window']} UTC): ${part['cost_usd']:.4f} over {part['calls']} calls, "
            f"{part['input_tokens']:,} input and {part['output_tokens']:,} output tokens."
        )
        for row in part["by_model"]:
            unpriced = f" ({row['unpriced_calls']} without a known price)" if row["unpriced_calls"] else ""
            lines.append(
                f"  - {row['provider']} {row['model']}: ${row['cost_usd']:.4f}, {row['calls']} calls{unpriced}"
            )
        if part.get("by_caller"):
            lines.append("  By caller:")
            lines.extend(
                f"  - {row['caller']}: ${row['cost_usd']:.4f}, {row['calls']} calls, "
                f"{row['input_tokens']:,} input and {row['output_tokens']:,} output tokens"
                for row in part["by_caller"]
            )
    if report["top_conversations_this_month"]:
        lines.append("Most expensive conversations this month:")
        for row in report["top_conversations_this_month"]:
            lines.append(f"  - {row['conversation_id']}: ${row['cost_usd']:.4f} over {row['calls']} calls")
    lines.extend(_render_budget(cap) for cap in report["budgets"])
    if report["unrecorded_calls"]:
        lines.append(
            f"{report['unrecorded_calls']} answers since this server process started could not have their cost "
            "recorded (the database failed when writing them; the server's log says why): they are missing above."
        )
    return "\n".join(lines)


def _render_budget(cap: dict[str, Any]) -> str:
    if "has_room" in cap:
        room = "has room left" if cap["has_room"] else "is used up until it resets"
        return f"Budget {cap['setting']} (shared with other callers): ${cap['cap_usd']:.2f}; it {room}."
    return (
        f"Budget {cap['setting']}: ${cap['spent_usd']:.4f} of ${cap['cap_usd']:.2f} spent or reserved "
        f"(${cap['remaining_usd']:.4f} left)."
    )


def register_usage_tools(server: MCPServer, running: Callable[[], AppState | None]) -> None:
    @server.tool(
        name="usage_report",
        title="Spend and token usage",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True),
        description="Report what the model calls made through this server cost: today's and this month's spend "
        "(USD) and tokens by provider and model (and by caller), the most expensive conversations, and each budget "
        "cap with what is left. When the server tells callers apart, you see your own usage and budgets only. "
        "Makes no model call.",
    )
    async def usage_report_tool(ctx: Context[AppState]) -> CallToolResult:
        state = app_state(ctx)
        try:
            report = await usage_report(state, caller_identity(ctx))
        except StoreError as exc:
            return error_result(state, str(exc))
        return success_result(_render(report), report)

    @server.resource(
        USAGE_URI,
        name="usage",
        title="Spend and token usage",
        description="JSON: today's and this month's spend and tokens by provider, model and caller (as "
        "usage_report); not served when the server tells callers apart (use usage_report).",
        mime_type="application/json",
    )
    async def usage_resource() -> str:
        # A static resource gets no Context (the SDK refuses one), so it cannot tell who reads it: the running
        # server's state, from its lifespan; and when callers are told apart it serves no one.
        state = running()
        if state is None:
            raise MCPError(INTERNAL_ERROR, "The server is not running.")
        if state.settings.callers_told_apart:
            raise MCPError(INVALID_REQUEST, RESOURCE_NOT_SCOPED)
        try:
            report = await _reading(state, None, _caps_in_force(state, None), full_caps=True)
        except StoreError as exc:
            raise MCPError(INTERNAL_ERROR, state.redact(str(exc))) from None
        return json.dumps(report, indent=2)
