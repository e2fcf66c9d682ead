"""What validating an `extract_json` answer costs: Python `jsonschema` (used up to 8e10e4e) beside `jsonschema-rs`
(used since), on a realistic schema and answer and on the pathological cases of issue 12 item 2; then, through
the real MCP server in memory, how long other requests wait while `extract_json` handles each pathological case.

Run: `python -m bench.schema_validation [--skip-slow]`. `--skip-slow` leaves out the Python `jsonschema` runs of
the pathological cases (each takes 5 to 60 s). The event-loop figures are for the code checked out: run them on
8e10e4e too (`git checkout 8e10e4e -- mcp_llm_server/jsonschema_tools.py mcp_llm_server/tools/extract.py`) for
the figures before the change, with `--skip-heavy`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

# Imported up front: the server imports the SDKs on the first call, which would stall the first case.
import anthropic  # noqa: F401
import anyio
import jsonschema
import jsonschema_rs
import openai  # noqa: F401
from mcp import Client
from mcp_llm_server.tools.common import ERROR_META_KEY

from mcp_llm_server._standin import Reply, StandIn
from mcp_llm_server.server import build_server
from mcp_llm_server.settings import load_settings

ADDRESS = {
    "type": "object",
    "properties": {
        "street": {"type": "string", "minLength": 1},
        "city": {"type": "string"},
        "postcode": {"type": "string", "pattern": "^[0-9]{5}(-[0-9]{4})?$"},
        "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
    },
    "required": ["street", "city", "country"],
}
INVOICE: dict[str, Any] = {
    "type": "object",
    "$defs": {"address": ADDRESS, "money": {"type": "number", "minimum": 0, "multipleOf": 0.01}},
    "properties": {
        "number": {"type": "string", "pattern": "^INV-[0-9]{4,}$"},
        "issued": {"type": "string", "format": "date"},
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "format": "email"},
                "billing": {"$ref": "#/$defs/address"},
                "shipping": {"anyOf": [{"$ref": "#/$defs/address"}, {"type": "null"}]},
                "tier": {"enum": ["free", "pro", "team", "enterprise"]},
            },
            "required": ["name", "email", "billing", "tier"],
        },
        "lines": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{2,4}-[0-9]{3,6}$"},
                    "description": {"type": "string", "maxLength": 200},
                    "quantity": {"type": "integer", "minimum": 1},
                    "unit_price": {"$ref": "#/$defs/money"},
                    "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                },
                "required": ["sku", "quantity", "unit_price"],
                "additionalProperties": False,
            },
        },
        "total": {"$ref": "#/$defs/money"},
        "notes": {"type": ["string", "null"]},
    },
    "required": ["number", "issued", "customer", "lines", "total"],
}


def invoice_answer(lines: int) -> dict[str, Any]:
    address = {"street": "1 Main St", "city": "Springfield", "postcode": "12345", "country": "US"}
    return {
        "number": "INV-20261",
        "issued": "2026-11-30",
        "customer": {
            "name": "Ann Lee",
            "email": "ann@example.com",
            "billing": address,
            "shipping": None,
            "tier": "pro",
        },
        "lines": [
            {"sku": f"AB-{100 + i}", "description": "widget", "quantity": 2, "unit_price": 9.99, "tags": ["x", "y"]}
            for i in range(lines)
        ],
        "total": 19.98 * lines,
        "notes": None,
    }


def explosive(levels: int) -> dict[str, Any]:
    """Issue 12's schema: `levels` nested anyOf, each branching to the next level twice through `$ref`."""
    defs: dict[str, Any] = {
        f"L{i}": {"anyOf": [{"$ref": f"#/$defs/L{i + 1}"}, {"$ref": f"#/$defs/L{i + 1}"}]} for i in range(levels)
    }
    defs[f"L{levels}"] = {"type": "string"}
    return {"type": "object", "properties": {"v": {"$ref": "#/$defs/L0"}}, "required": ["v"], "$defs": defs}


CATASTROPHIC = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
    "required": ["code"],
}


def timed(work: Callable[[], object], at_least_s: float = 0.3) -> float:
    """Median seconds of one `work()`, over at least `at_least_s` (a single run when one takes longer)."""
    samples: list[float] = []
    started = time.perf_counter()
    while not samples or (time.perf_counter() - started < at_least_s and len(samples) < 1000):
        t = time.perf_counter()
        work()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def python_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def rust_validator(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    options = jsonschema_rs.FancyRegexOptions(backtrack_limit=100_000)
    return jsonschema_rs.validator_for(schema, validate_formats=True, offline=True, pattern_options=options)


def fmt(seconds: float) -> str:
    return (
        f"{seconds * 1e6:,.1f} µs"
        if seconds < 1e-3
        else f"{seconds * 1e3:,.1f} ms"
        if seconds < 1
        else f"{seconds:,.2f} s"
    )


def compare(label: str, schema: dict[str, Any], value: Any, *, python: bool = True) -> None:
    rs = rust_validator(schema)
    rs_valid = timed(lambda: rs.is_valid(value))
    rs_errors = timed(lambda: list(rs.iter_errors(value)))
    if python:
        py = python_validator(schema)
        py_valid, py_errors = fmt(timed(lambda: py.is_valid(value))), fmt(timed(lambda: list(py.iter_errors(value))))
    else:
        py_valid = py_errors = "(skipped)"
    print(f"| {label} | {py_valid} | {fmt(rs_valid)} | {py_errors} | {fmt(rs_errors)} |")


def library_figures(skip_slow: bool) -> None:
    print("| case | jsonschema is_valid | jsonschema-rs is_valid | jsonschema errors | jsonschema-rs errors |")
    print("|---|---|---|---|---|")
    compare("invoice, 3 lines (valid, 1.1 KB)", INVOICE, invoice_answer(3))
    compare("invoice, 100 lines (valid, 12 KB)", INVOICE, invoice_answer(100))
    broken = invoice_answer(100)
    broken["lines"][7]["sku"], broken["customer"]["tier"] = "bad", "gold"
    compare("invoice, 100 lines, 2 errors", INVOICE, broken)
    compare("13-level anyOf x 2 $ref, {v: 42}", explosive(13), {"v": 42}, python=not skip_slow)
    compare("`^(a+)+$` vs 29 characters", CATASTROPHIC, {"code": "a" * 28 + "!"}, python=not skip_slow)
    print()


# --- event-loop responsiveness through the server ---------------------------------------------------------


async def longest_wait(schema: dict[str, Any], answer: str, timeout_s: float) -> tuple[float, float, str]:
    """`extract_json` on the in-memory server (after a first, warm-up call) while `tools/list` is sent over and
    over: the longest wait for an answer (sleeps included), how long the call took and how it ended."""
    with StandIn() as standin, tempfile.TemporaryDirectory() as tmp:
        standin.default_reply = Reply(text=answer, chunks=[answer])
        settings = load_settings(
            _env_file=None,
            openai_api_key="sk-bench-openai-key-0123456789",
            anthropic_api_key="sk-bench-anthropic-key-0123456789",
            openai_base_url=standin.openai_base_url,
            anthropic_base_url=standin.anthropic_base_url,
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
        )
        async with Client(build_server(settings)) as client:
            warm_up = Reply(text='{"code": "a"}')  # the first call opens the database: not what is measured
            standin.script(warm_up)
            await client.call_tool("extract_json", {"text": "x", "schema": CATASTROPHIC})
            ended: list[str] = []
            started = anyio.current_time()
            took = 0.0

            async def call() -> None:
                nonlocal took
                arguments = {"text": "x", "schema": schema, "max_attempts": 1, "timeout_s": timeout_s}
                result = await client.call_tool("extract_json", arguments)
                took = anyio.current_time() - started
                error = ((result.meta or {}).get(ERROR_META_KEY) or {}).get("error", {})
                ended.append(error.get("kind", "error") if result.is_error else "ok")

            longest = 0.0
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                last = anyio.current_time()
                while not ended:
                    await client.list_tools()
                    await anyio.sleep(0.01)
                    now = anyio.current_time()
                    longest, last = max(longest, now - last), now
    return longest, took, ended[0]


async def loop_figures(skip_heavy: bool) -> None:
    patterns = [{"type": "string", "pattern": f"^(a|a)*(?!x{i})$"} for i in range(500)]
    heavy = {"type": "object", "properties": {"codes": {"type": "array", "items": {"anyOf": patterns}}}}
    cases = [
        ("13-level anyOf x 2 $ref (issue 12), answer {v: 42}", explosive(13), '{"v": 42}', 120.0),
        ("`^(a+)+$`, 29-character answer", CATASTROPHIC, json.dumps({"code": "a" * 28 + "!"}), 120.0),
        (
            "500 lookaround patterns x 2,000 strings, timeout_s 5",
            heavy,
            json.dumps({"codes": ["a" * 21 + "!"] * 2000}),
            5.0,
        ),
    ]
    if skip_heavy:  # before the change, Python's `re` would backtrack on it for days
        cases.pop()
    print("| extract_json case | longest wait for tools/list | call took | ended |")
    print("|---|---|---|---|")
    for label, schema, answer, timeout_s in cases:
        longest, took, ended = await longest_wait(schema, answer, timeout_s)
        print(f"| {label} | {fmt(longest)} | {fmt(took)} | {ended} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-slow", action="store_true", help="skip jsonschema on the pathological cases")
    parser.add_argument("--loop-only", action="store_true", help="only the event-loop figures")
    parser.add_argument("--skip-heavy", action="store_true", help="leave out the lookaround case (for 8e10e4e)")
    args = parser.parse_args()
    if not args.loop_only:
        library_figures(args.skip_slow)
    anyio.run(loop_figures, args.skip_heavy)


if __name__ == "__main__":
    main()
