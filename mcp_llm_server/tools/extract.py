"""`extract_json`: free text to a JSON value that validates against the caller's JSON Schema, or a clear error.

The schema is checked before any upstream request. Each attempt asks the model with the provider's native
structured output (falling back, on a 400, to weaker forms down to plain prompt instructions); its answer is
always validated against the caller's original schema. An answer that is not JSON or does not validate is sent
back with the validator's errors, up to `max_attempts` attempts. Upstream retries (429, 5xx...) happen inside
each attempt (`run_call`) and do not count as attempts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from ..aliases import ModelRef, resolve_alias
from ..client_roots import ClientRoots, root_paths
from ..errors import UpstreamFailure
from ..pipeline import CallRefused, Metered, ModelCall, model_call, refusal_result
from ..pipeline.call import model_of
from ..pipeline.failover import noted, refused_after, skipped_for, switches, targets_to_ask
from ..pipeline.targets import provider_named
from ..pricing import nanos_to_usd
from ..progress import SendProgress
from ..providers.base import OutputFormat, ProviderId
from ..providers_config import ApiStyle
from ..render import ERROR_META_KEY, error_result
from ..results import SkippedTarget
from ..sdk_adapter import app_state
from ..state import AppState
from .detached import DETACH_NOTE, detachable
from .params import Files, Model, TimeoutS

if TYPE_CHECKING:  # `jsonschema` is imported on the first call: the server must list its tools fast
    from ..jsonschema_tools import CheckedSchema, Extraction

__all__ = ["META_KEY", "extract_json", "format_ladder", "register_extract_tool"]

logger = logging.getLogger(__name__)

META_KEY = "mcp-llm-server/extract_json"
_FORMAT_NAME = "extracted_data"
_PREVIOUS_ANSWER_CHARS = 4000
_LAST_OUTPUT_CHARS = 2000
_ISSUES_SHOWN = 10
_FILES_NOTE = "The files above are part of the text to extract from.\n\n"
_WRAP_KEY = "data"  # = jsonschema_tools.WRAP_KEY (checked by the tests)

_SYSTEM = (
    "You extract structured data from text. Reply with one JSON value and nothing else: no prose, no Markdown "
    "code fence. The value must validate against the JSON Schema you are given. Take the facts from the text; "
    "do not invent what it does not say."
)

Text = Annotated[str, Field(min_length=1, description="The free text to extract the data from.")]
Schema = Annotated[
    dict[str, Any] | str,
    Field(
        description="The JSON Schema the result must validate against, as a JSON string (an object is accepted "
        "too). Draft 2020-12 unless its `$schema` names another draft; only local `$ref`s (`#/$defs/...`). "
        'Any root type works: {"type": "object", ...}, {"type": "array", ...}, {"type": "string"}...'
    ),
]
Instructions = Annotated[
    str | None,
    Field(description="Optional guidance for the extraction (what to pick, how to normalise values, units...)."),
]
ExtractProvider = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=64,
        description="Which provider does the extraction (`openai`, `anthropic`, or a named one `list_models` "
        "shows). Omit for the server's default (MCP_LLM_EXTRACT_PROVIDER).",
    ),
]
MaxAttempts = Annotated[
    int,
    Field(
        ge=1,
        le=10,
        description="Model answers to try before giving up: a non-JSON or schema-invalid answer is sent back "
        "with the validator's errors for another try. Upstream retries (rate limits, 5xx) do not count.",
    ),
]


def format_ladder(checked: CheckedSchema, api: ApiStyle) -> list[OutputFormat | None]:
    """The native output formats to try, best first; a 400 moves one rung down (None: prompt instructions only).

    OpenAI's APIs: strict JSON Schema (when the schema has a strict form), non-strict JSON Schema, JSON mode.
    The Messages API: its JSON Schema output when every object of the schema can be closed, otherwise none (closing
    a map or free-form object would force it empty).
    """
    if api == "messages":
        return [OutputFormat(checked.provider_schema, _FORMAT_NAME), None] if checked.closed else [None]
    ladder: list[OutputFormat | None] = []
    if checked.strict_schema is not None:
        ladder.append(OutputFormat(checked.strict_schema, _FORMAT_NAME, strict=True))
    ladder += [OutputFormat(checked.provider_schema, _FORMAT_NAME), OutputFormat(None, _FORMAT_NAME), None]
    return ladder


@dataclass(frozen=True, slots=True)
class _Prompt:
    """What every attempt is built from."""

    text: str
    schema_json: str
    instructions: str | None


@dataclass
class _Run:
    """What the attempts of one call have gathered so far."""

    checked: CheckedSchema
    max_attempts: int
    attempts: int = 0
    upstream_requests: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str = ""
    last_output: str = ""
    last_stop_reason: str | None = None
    cost_nanos: int = 0
    cost_note: str | None = None  # set when an attempt's price is unknown (then the total is null)
    answers: int = 0  # answers received (valid or not)

    def add(self, metered: Metered) -> None:
        self.answers += 1
        outcome = metered.outcome
        if metered.cost.nanos is None:
            self.cost_note = metered.cost.note
        else:
            self.cost_nanos += metered.cost.nanos
        completion = outcome.completion
        self.upstream_requests += outcome.attempts
        self.model = completion.model
        self.last_output = completion.text
        self.last_stop_reason = completion.stop_reason
        if completion.usage.input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + completion.usage.input_tokens
        if completion.usage.output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + completion.usage.output_tokens

    def usage(self) -> dict[str, int | None]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}

    def summary(self, provider_id: ProviderId) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "upstream_requests": self.upstream_requests,
            "provider": provider_id,
            "model": self.model,
            "usage": self.usage(),
            "cost_usd": None if self.cost_note is not None else nanos_to_usd(self.cost_nanos),
            "cost_note": self.cost_note,
        }


def _counting(send: SendProgress | None) -> SendProgress | None:
    """One rising `progress` count across the relays of every attempt."""
    if send is None:
        return None
    count = 0

    async def relay(_progress: float, message: str) -> None:
        nonlocal count
        count += 1
        await send(float(count), message)

    return relay


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit:,} more characters]"


def _prompt_path(path: str, wrapped: bool) -> str:
    """A caller-schema path as seen in the schema the model was shown (inside `data` when wrapped)."""
    return f"$.{_WRAP_KEY}{path[1:]}" if wrapped else path


def _build_prompt(text: str, schema_json: str, instructions: str | None, run: _Run, previous: Extraction | None) -> str:
    parts = [
        "Extract a JSON value from the text below. It must validate against this JSON Schema:",
        f"<json_schema>\n{schema_json}\n</json_schema>",
    ]
    if instructions:
        parts.append(f"Instructions for this extraction:\n<instructions>\n{instructions}\n</instructions>")
    parts.append(f"<text>\n{text}\n</text>")
    if previous is not None:
        answer = _truncate(run.last_output, _PREVIOUS_ANSWER_CHARS)
        parts.append(f"Your previous answer was rejected:\n<previous_answer>\n{answer}\n</previous_answer>")
        if run.last_stop_reason == "max_tokens":
            parts.append("It was cut off at the token limit: answer more compactly.")
        if previous.parse_error is not None:
            parts.append(f"It is not valid JSON ({previous.parse_error}).")
        else:
            wrapped = run.checked.wrapped
            lines = [f"- {_prompt_path(i.path, wrapped)}: {i.message}" for i in previous.issues]
            parts.append("It does not validate against the schema:\n" + "\n".join(lines))
        parts.append("Reply again with the corrected JSON value only.")
    return "\n\n".join(parts)


def _describe_problem(extraction: Extraction) -> str:
    if extraction.parse_error is not None:
        return f"not JSON ({extraction.parse_error})"
    count = len(extraction.issues)
    if extraction.parse_error is not None or not extraction.issues:
        return f"not JSON ({extraction.parse_error})"
    count = len(extraction.issues)
    first = extraction.issues[0]
    more = f" and {count - 1} more" if count > 1 else ""
    return f"{count} validation error{'s' if count != 1 else ''} ({first.path}: {first.message}{more})"


def _success(run: _Run, provider_id: ProviderId, value: Any) -> CallToolResult:
    structured = value if isinstance(value, dict) else {_WRAP_KEY: value}
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(value, ensure_ascii=False))],
        structured_content=structured,
        _meta={META_KEY: run.summary(provider_id)},
    )


def _exhausted(call: ModelCall, run: _Run, last: Extraction, provider_id: ProviderId) -> CallToolResult:
    if last.parse_error is not None:
        kind, why = "not_json", f"The last answer was not JSON ({last.parse_error})."
    else:
        shown = "\n".join(f"- {i.path}: {i.message}" for i in last.issues[:_ISSUES_SHOWN])
        hidden = len(last.issues) - _ISSUES_SHOWN
        more = f"\n- … and {hidden} more" if hidden > 0 else ""
        kind, why = "schema_violation", f"The last answer did not validate against the schema:\n{shown}{more}"
    last_output = _truncate(run.last_output, _LAST_OUTPUT_CHARS)
    message = (
        f"extract_json: no schema-valid JSON after {run.attempts} attempt{'s' if run.attempts != 1 else ''} "
        f"({call.state.slots[provider_id].label}, {run.model}). {why}\n\nLast output:\n{last_output}\n\n"
        "Check that the text holds what the schema requires, loosen the schema (fewer required properties, wider "
        "types), add `instructions`, or raise `max_attempts`."
    )
    structured = {
        "error": {
            "kind": kind,
            "message": message,
            "errors": [i.as_dict() for i in last.issues],
            "parse_error": last.parse_error,
            "last_output": last_output,
            **run.summary(provider_id),
        }
    }
    return error_result(call.state, message, structured)


def _upstream_error(
    state: AppState, run: _Run, failure: UpstreamFailure, provider_id: ProviderId, model: str
) -> CallToolResult:
    logger.warning("extract_json call to %s failed: %s", model, failure.describe_briefly())
    message = f"{failure.describe()} (extract_json attempt {run.attempts} of {run.max_attempts})"
    structured = failure.as_structured()
    structured["error"].update(extract_attempts=run.attempts, provider_id=provider_id, model=model)
    structured["error"]["usage"] = run.usage()
    structured["error"]["cost_usd"] = run.summary(provider_id)["cost_usd"]
    return error_result(state, message, structured)


def _extract_targets(state: AppState, provider: str | None, model: str | None) -> tuple[ModelRef, ...]:
    """The models to ask, in failover order: the provider named (or the model's alias's, or the server's default)
    with `model`, or, with no provider named, a failover alias's models."""
    if provider is not None:
        provider_id = provider_named(provider, state)
        if provider_id is None:
            raise CallRefused(
                "invalid_provider", f"`provider`: unknown provider `{provider}` (providers: {', '.join(state.slots)})."
            )
    else:
        refs = resolve_alias(state.settings.model_aliases, model) if model else None
        if refs is not None and len(refs) > 1:
            return refs
        provider_id = refs[0].provider if refs else state.settings.extract_provider
    return (ModelRef(provider_id, model_of(state, provider_id, model)),)


async def _first_extraction(
    call: ModelCall, refs: tuple[ModelRef, ...], new_run: Callable[[str], _Run], prompt: _Prompt
) -> CallToolResult:
    """`_attempts` with each target in turn until one answers (failover moves on only before its first answer)."""
    skipped: list[SkippedTarget] = []
    for index, last in targets_to_ask(call, refs, skipped):
        ref = refs[index]
        run = new_run(ref.model)
        try:
            call.provider(ref.provider)
            result = await _attempts(call, run, ref.provider, prompt, may_switch=not last)
            if run.answers:
                noted(call, ref, None)
            return _with_skipped(result, skipped)
        except (UpstreamFailure, CallRefused) as error:
            noted(call, ref, error)
            if isinstance(error, CallRefused) and (last or run.answers or not switches(error)):
                raise refused_after(error, skipped) from None
            skipped.append(skipped_for(ref, error))
            logger.warning("extract_json: %s could not answer (%s); asking %s", ref, error.kind, refs[index + 1])
    raise AssertionError("_first_extraction needs at least one target")


def _with_skipped(result: CallToolResult, skipped: list[SkippedTarget]) -> CallToolResult:
    """The result, with the failover targets passed over in its `_meta` (the structured content is the value)."""
    if not skipped:
        return result
    meta = dict(result.meta or {})
    key = META_KEY if META_KEY in meta else ERROR_META_KEY
    meta[key] = {**meta.get(key, {}), "skipped": [s.model_dump() for s in skipped]}
    return result.model_copy(update={"meta": meta})


async def extract_json(
    ctx: Context[AppState],
    *,
    text: str,
    schema: dict[str, Any] | str,
    instructions: str | None,
    provider: ProviderId | None,
    model: str | None,
    max_attempts: int,
    timeout_s: float | None,
    files: list[str] | None = None,
    client_roots: Sequence[Path] = (),
) -> CallToolResult:
    from ..jsonschema_tools import SchemaProblem, check_schema_async

    state = app_state(ctx)
    settings = state.settings
    try:
        refs = _extract_targets(state, provider, model)
        async with model_call(
            ctx,
            tool="extract_json",
            timeout_s=timeout_s,
            files=files,
            client_roots=client_roots,
            saves_turns=False,
        ) as call:
            with call.deadline.bound("checking the schema"):
                try:
                    checked = await check_schema_async(
                        schema, max_bytes=settings.extract_max_schema_bytes, max_depth=settings.extract_max_schema_depth
                    )
                except SchemaProblem as exc:
                    raise CallRefused("invalid_schema", str(exc)) from None
            schema_json = json.dumps(checked.provider_schema, ensure_ascii=False)
            call.check_prompt_size(
                len(text) + len(instructions or "") + len(schema_json), "The text, instructions and schema together"
            )
            call.send = _counting(call.send)

            def new_run(ref_model: str) -> _Run:
                return _Run(checked=checked, max_attempts=max_attempts, model=ref_model)

            return await _first_extraction(call, refs, new_run, _Prompt(text, schema_json, instructions))
    except CallRefused as refused:
        return refusal_result(state, refused)


async def _attempts(
    call: ModelCall, run: _Run, provider_id: ProviderId, given: _Prompt, *, may_switch: bool = False
) -> CallToolResult:
    """Ask, validate, and send an invalid answer back with its errors, up to `run.max_attempts` times.

    With `may_switch`, a failure that moves failover on (`switches`) before any answer is raised instead."""
    from ..jsonschema_tools import ValidationTimeout, extract_within

    ladder = format_ladder(run.checked, call.state.slots[provider_id].api)
    last: Extraction | None = None
    while run.attempts < run.max_attempts:
        run.attempts += 1
        prompt = _build_prompt(given.text, given.schema_json, given.instructions, run, last)
        if call.context.files:
            prompt = _FILES_NOTE + prompt
        try:
            metered = await _ask(call, provider_id, ladder, prompt, run)
        except UpstreamFailure as failure:
            if may_switch and last is None and switches(failure):
                raise
            return _upstream_error(call.state, run, failure, provider_id, run.model)
        run.add(metered)
        try:
            last = await extract_within(run.checked, metered.outcome.completion.text, deadline=call.deadline.ends_at)
        except ValidationTimeout as exc:
            structured = {"error": {"kind": "validation_timeout", "message": str(exc), **run.summary(provider_id)}}
            return error_result(call.state, str(exc), structured)
        if last.ok:
            return _success(run, provider_id, last.value)
        logger.info("extract_json attempt %d: %s", run.attempts, _describe_problem(last))
        if call.send is not None:
            verdict = "asking again" if run.attempts < run.max_attempts else "giving up"
            await call.send(0.0, f"Attempt {run.attempts} of {run.max_attempts}: {_describe_problem(last)}; {verdict}")
    assert last is not None  # max_attempts >= 1
    return _exhausted(call, run, last, provider_id)


async def _ask(
    call: ModelCall, provider_id: ProviderId, ladder: list[OutputFormat | None], prompt: str, run: _Run
) -> Metered:
    """One attempt: one answer (its upstream retries included), within the call's deadline.

    A 400 while asking for a native output format drops to the next rung of `ladder` (in place, so later
    attempts start there) and asks again; that does not count as an attempt.
    """
    prefix = f"Attempt {run.attempts} of {run.max_attempts}: "
    slot = call.state.slots[provider_id]
    while True:
        output_format = ladder[0]
        request = call.request(prompt, run.model, system=_SYSTEM, output_format=output_format)
        try:
            async with call.progress(f"{slot.label} {run.model}", prefix=prefix) as progress:
                return await call.answer(provider_id, request, progress)
        except UpstreamFailure as failure:
            if failure.kind != "bad_request" or output_format is None or failure.partial_text:
                raise
            run.upstream_requests += failure.attempts
            logger.info("%s rejected the output format (%s); trying a weaker one", slot.label, failure.detail)
            ladder.pop(0)


def register_extract_tool(server: MCPServer) -> None:
    @server.tool(
        name="extract_json",
        title="Extract schema-valid JSON from text",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=True, idempotent_hint=False),
        description="Turn free text into a JSON value that validates against the JSON Schema you give (for "
        "example: pull the people, dates and amounts out of an email). The model answers with the provider's "
        "native structured output; the answer is always validated against your schema, and an invalid one is "
        "sent back with the validator's errors for another try, up to `max_attempts`. On success the text is "
        "the JSON and the structured content is the value itself (a value that is not an object comes as "
        '{"data": value}). Otherwise the error lists the last validation errors with their JSON paths and the '
        "last output. A schema that is invalid, too large or too deep is refused before any model call." + DETACH_NOTE,
    )
    async def extract_json_tool(
        ctx: Context[AppState],
        client_roots: ClientRoots,
        text: Text,
        schema: Schema,
        instructions: Instructions = None,
        provider: ExtractProvider = None,
        model: Model = None,
        max_attempts: MaxAttempts = 3,
        timeout_s: TimeoutS = None,
        files: Files = None,
    ) -> CallToolResult:
        view = {"provider": provider, "model": model}
        return await detachable(
            ctx,
            "extract_json",
            view,
            lambda: extract_json(
                ctx,
                text=text,
                schema=schema,
                instructions=instructions,
                provider=provider,
                model=model,
                max_attempts=max_attempts,
                timeout_s=timeout_s,
                files=files,
                client_roots=root_paths(client_roots),
            ),
        )
