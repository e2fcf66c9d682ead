"""`usage_report` and the `llm://usage` resource: today's and this month's spend, by provider and model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, CallToolResult, ToolAnnotations

from ..pipeline import budget_caps
from ..pricing import NANOS_PER_USD
from ..render import error_result, success_result
from ..sdk_adapter import app_state
from ..state import AppState
from ..store import StoreError

__all__ = ["USAGE_URI", "register_usage_tools", "usage_report"]

USAGE_URI = "llm://usage"


async def usage_report(state: AppState) -> dict[str, Any]:
    """The ledger's report, with every budget cap in force, what is spent against it and what is left.

    Raises `StoreError` when the database cannot be read.
    """
    try:
        return await _usage_report(state)
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError  # imported by then: the database was opened (or failed to)

        if isinstance(exc, SQLAlchemyError):
            raise StoreError(f"Cannot read the ledger: {type(exc).__name__}: {exc}") from None
        raise


async def _usage_report(state: AppState) -> dict[str, Any]:
    report = await state.spend.report()
    budgets = []
    seen: set[tuple[str, str]] = set()
    for provider_id in ("openai", "anthropic"):
        for cap in budget_caps(state.settings, provider_id):
            if (cap.scope, cap.period) in seen:
                continue
            seen.add((cap.scope, cap.period))
            spent = await state.spend.spent(cap.scope, cap.period)
            budgets.append(
                {
                    "scope": cap.scope,
                    "period": cap.period,
                    "setting": cap.variable,
                    "cap_usd": cap.cap_nanos / NANOS_PER_USD,
                    "spent_usd": spent / NANOS_PER_USD,
                    "remaining_usd": max(cap.cap_nanos - spent, 0) / NANOS_PER_USD,
                }
            )
    report["budgets"] = budgets
    return report


def _render(report: dict[str, Any]) -> str:
    lines = []
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
    if report["top_conversations_this_month"]:
        lines.append("Most expensive conversations this month:")
        for row in report["top_conversations_this_month"]:
            lines.append(f"  - {row['conversation_id']}: ${row['cost_usd']:.4f} over {row['calls']} calls")
    for cap in report["budgets"]:
        lines.append(
            f"Budget {cap['setting']}: ${cap['spent_usd']:.4f} of ${cap['cap_usd']:.2f} spent or reserved "
            f"(${cap['remaining_usd']:.4f} left)."
        )
    return "\n".join(lines)


def register_usage_tools(server: MCPServer, running: Callable[[], AppState | None]) -> None:
    @server.tool(
        name="usage_report",
        title="Spend and token usage",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True),
        description="Report what the model calls made through this server cost: today's and this month's spend "
        "(USD) and tokens by provider and model, the most expensive conversations, and each budget cap with what "
        "is left. Makes no model call.",
    )
    async def usage_report_tool(ctx: Context[AppState]) -> CallToolResult:
        state = app_state(ctx)
        try:
            report = await usage_report(state)
        except StoreError as exc:
            return error_result(state, str(exc))
        return success_result(_render(report), report)

    @server.resource(
        USAGE_URI,
        name="usage",
        title="Spend and token usage",
        description="JSON: today's and this month's spend and tokens by provider and model (as usage_report).",
        mime_type="application/json",
    )
    async def usage_resource() -> str:
        # A static resource gets no Context: the running server's state, from its lifespan.
        state = running()
        if state is None:
            raise MCPError(INTERNAL_ERROR, "The server is not running.")
        try:
            report = await usage_report(state)
        except StoreError as exc:
            raise MCPError(INTERNAL_ERROR, state.redact(str(exc))) from None
        return json.dumps(report, indent=2)
