"""JSON Schema helpers for `extract_json`: check a caller's schema, shape it for each provider, find JSON in text.

Everything here but `extract_within` is pure (no I/O, no SDK): the caller's schema is checked once
(`check_schema`), which yields a `CheckedSchema` that knows the forms providers get (`provider_schema`,
`strict_schema`) and validates answers against the caller's *original* schema (`CheckedSchema.extract`;
`extract_within` runs it off the event loop, within the call's deadline).

Validation cost is bounded, so a caller's schema cannot stall the server:
- `check_schema` refuses `$ref` loops that never descend into the value (`{"$ref": "#"}`) and schemas that
  expand to more than `EXPANSION_LIMIT` subschemas once every `$ref` is written out (nested anyOf/oneOf/allOf
  branches multiplied by references to the same definitions);
- answers are validated by `jsonschema-rs` (Rust): `pattern`/`patternProperties` run on the `regex` crate
  (linear time), and only patterns using lookaround or back-references fall back to backtracking, capped at
  `BACKTRACK_LIMIT` steps per match;
- the full error list (whose `anyOf` contexts cost ~10 µs per error object, under the GIL) is only collected
  when the answer's size times the schema's in-place fan-out stays within `_ERROR_BUDGET`; otherwise the
  first error is reported alone;
- `extract_within` validates in a worker thread when the answer's size times the schema's expansion is small
  (`_THREAD_BUDGET`: the Rust validator holds the GIL, briefly), otherwise in a child process; either way
  the event loop keeps serving other calls, and the work stops at the call's deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import jsonschema_rs
import referencing
import referencing.exceptions
import referencing.jsonschema

__all__ = [
    "BACKTRACK_LIMIT",
    "EXPANSION_LIMIT",
    "CheckedSchema",
    "Extraction",
    "Issue",
    "SchemaProblem",
    "ValidationTimeout",
    "check_schema",
    "check_schema_async",
    "closed_objects",
    "extract_within",
    "json_candidates",
    "json_depth",
    "parse_schema",
    "strictify",
    "wrap_schema",
]

WRAP_KEY = "data"
_ROOT_URI = "urn:mcp-llm-server:extract-schema"
_MAX_ISSUES = 20
_MAX_MESSAGE_CHARS = 300

EXPANSION_LIMIT = 10_000
"""Most subschemas a schema may expand to with every `$ref` written out (a recursive one counted once)."""
BACKTRACK_LIMIT = 100_000
"""Most backtracking steps one match of a lookaround/back-reference `pattern` may take (a few µs each)."""
_ERROR_BUDGET = 20_000  # answer nodes x in-place fan-out up to which every error is collected (~0.2 s worst)
# Answer nodes x schema expansion up to which an answer is validated in a thread of this process. A Rust call
# holds the GIL throughout, at worst a few µs per unit (a lookaround pattern hitting its backtracking limit);
# past this, validation runs in a child process, killed at the deadline.
_THREAD_BUDGET = 50_000


class SchemaProblem(ValueError):
    """The caller's schema cannot be used; the message says why and what to do."""


class ValidationTimeout(TimeoutError):
    """Validating an answer did not end within the call's deadline; the message says what to change."""

    def __init__(self) -> None:
        super().__init__(
            "Validating the model's answer against the schema ran out of the call's time limit: the schema is too "
            "costly to check on this answer (deeply nested anyOf/oneOf, expensive `pattern`s, or a very long "
            "answer). Simplify the schema or ask for a shorter answer, or raise `timeout_s`."
        )


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation error: where (a JSON path such as `$.items[0].name`) and what."""

    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass(slots=True)
class Extraction:
    """What one answer yielded: a valid value, or why not (`parse_error` when no JSON was found at all)."""

    ok: bool
    value: Any = None
    issues: list[Issue] = field(default_factory=list)
    parse_error: str | None = None


# --- parsing and limits -----------------------------------------------------------------------------------


def parse_schema(raw: object) -> dict[str, Any]:
    """The schema as a dict: an object as is, a string parsed as JSON."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise SchemaProblem(f"`schema` is a string but not JSON ({exc}). Send a JSON Schema object.") from None
    if not isinstance(raw, dict):
        raise SchemaProblem(
            f"`schema` must be a JSON Schema object (got {type(raw).__name__}), "
            'e.g. {"type": "object", "properties": {...}}.'
        )
    return raw


def json_depth(value: object) -> int:
    """Nesting depth of JSON containers (a scalar is 0, `{}` is 1); iterative, so any depth is safe."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in node)
    return deepest


# --- walking schemas ----------------------------------------------------------------------------------------

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_ONE = (
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems", "items")


def _subschemas(node: dict[str, Any]) -> Iterator[object]:
    """The schemas directly inside `node` (not data such as `enum`, `const` or `default`)."""
    for key in _SCHEMA_MAPS:
        children = node.get(key)
        if isinstance(children, dict):
            yield from children.values()
    for key in _SCHEMA_ONE:
        child = node.get(key)
        if isinstance(child, dict | bool):
            yield child
    for key in _SCHEMA_LISTS:
        children = node.get(key)
        if isinstance(children, list):
            yield from children


def _walk(schema: object) -> Iterator[dict[str, Any]]:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(_subschemas(node))


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def is_object_root(schema: dict[str, Any]) -> bool:
    """Whether the schema only admits objects (providers want an object at the root)."""
    return _types(schema) == {"object"}


def wrap_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema providers get: an object root as is, anything else as `{"data": <schema>}`.

    `$schema` and a root `$id` are left out; root `$defs`/`definitions` move to the wrapper so `#/$defs/...`
    references keep resolving.
    """
    inner = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    if is_object_root(schema):
        return inner
    wrapper: dict[str, Any] = {
        "type": "object",
        "properties": {WRAP_KEY: inner},
        "required": [WRAP_KEY],
        "additionalProperties": False,
    }
    for key in ("$defs", "definitions"):
        if key in inner:
            wrapper[key] = inner.pop(key)
    return wrapper


def closed_objects(schema: object) -> bool:
    """Whether every object in the schema can be closed (`additionalProperties: false`) without losing data.

    Native structured output (Anthropic always, OpenAI in strict mode) forbids undeclared properties; a map
    (`additionalProperties: {schema}`), `patternProperties` or an object with no declared properties would
    then be forced empty, silently dropping what the caller asked for.
    """
    for node in _walk(schema):
        if "object" not in _types(node) and "properties" not in node:
            continue
        extra = node.get("additionalProperties", True)
        if isinstance(extra, dict) or "patternProperties" in node:
            return False
        if extra is not False and not node.get("properties"):
            return False
    return True


# --- OpenAI strict form -------------------------------------------------------------------------------------

_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "anyOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "title",
        "description",
    }
)
_DROPPED_KEYWORDS = frozenset({"default", "examples", "$comment", "deprecated", "readOnly", "writeOnly"})
_STRICT_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
_JSON_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


class _NotStrict(Exception):
    pass


def strictify(schema: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI's strict form of a root-object schema, or None when it has none.

    Strict form: every object `additionalProperties: false` with all its properties required, the optional
    ones made nullable (`anyOf [S, {"type": "null"}]`); annotations such as `default` are dropped. Any keyword
    strict mode does not support (`oneOf`, `allOf`, `minLength`, `patternProperties`, maps, untyped parts…)
    means None: the schema is then sent non-strict. The answer is validated against the original schema
    either way; a null the model put in an optional property is removed before that (`CheckedSchema`).
    """
    if not is_object_root(schema):
        return None
    try:
        return _strict(schema)
    except _NotStrict:
        return None


def _strict(node: object) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise _NotStrict
    unknown = set(node) - _STRICT_KEYWORDS - _DROPPED_KEYWORDS
    if unknown:
        raise _NotStrict
    ref = node.get("$ref")
    if ref is not None:
        if not isinstance(ref, str) or not ref.startswith("#") or set(node) - {"$ref", "title", "description"}:
            raise _NotStrict
        return {"$ref": ref}
    out: dict[str, Any] = {k: v for k, v in node.items() if k in ("title", "description")}
    types = _types(node)
    kind = node.get("type")
    if kind is not None:
        if not types or not types <= _JSON_TYPES or (isinstance(kind, list) and len(types) != len(kind)):
            raise _NotStrict
        out["type"] = kind
    for key in ("enum", "const", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in node:
            out[key] = node[key]
    for key in ("multipleOf", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "format" in node:
        if node["format"] not in _STRICT_FORMATS:
            raise _NotStrict
        out["format"] = node["format"]
    for key in ("$defs", "definitions"):
        if key in node:
            defs = node[key]
            if not isinstance(defs, dict):
                raise _NotStrict
            out[key] = {name: _strict(sub) for name, sub in defs.items()}
    if "anyOf" in node:
        branches = node["anyOf"]
        if not isinstance(branches, list) or not branches:
            raise _NotStrict
        out["anyOf"] = [_strict(branch) for branch in branches]
    is_object = "object" in types or "properties" in node
    if is_object:
        _strict_object(node, out)
    if "array" in types or "items" in node:
        if not isinstance(node.get("items"), dict):
            raise _NotStrict
        out["items"] = _strict(node["items"])
    if not types and "enum" not in node and "const" not in node and "anyOf" not in node:
        raise _NotStrict  # an untyped part admits anything: strict mode cannot express it
    return out


def _strict_object(node: dict[str, Any], out: dict[str, Any]) -> None:
    props = node.get("properties", {})
    required = node.get("required", [])
    extra = node.get("additionalProperties", True)
    if not isinstance(props, dict) or not isinstance(required, list) or isinstance(extra, dict):
        raise _NotStrict
    if extra is not False and not props:
        raise _NotStrict  # a free-form object would be forced empty
    if not set(required) <= set(props):
        raise _NotStrict
    strict_props: dict[str, Any] = {}
    for name, sub in props.items():
        converted = _strict(sub)
        strict_props[name] = converted if name in required or _admits_null(converted) else _nullable(converted)
    out["properties"] = strict_props
    out["required"] = list(props)
    out["additionalProperties"] = False


def _admits_null(node: dict[str, Any]) -> bool:
    if "null" in _types(node):
        return True
    enum = node.get("enum")
    return (isinstance(enum, list) and None in enum) or ("const" in node and node["const"] is None)


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [node, {"type": "null"}]}


# --- finding JSON in text -----------------------------------------------------------------------------------

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_MAX_SCAN_STARTS = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def json_candidates(text: str) -> tuple[list[Any], str | None]:
    """The JSON values found in a model's answer, most likely first, and why the whole text is not JSON.

    Tried in order: the whole text, each Markdown code fence (the first 64), then every value starting at a
    `{` or `[` in the prose (the first 64 starts outside values already found).
    """
    values: list[Any] = []
    whole_error: str | None = None
    try:
        return [_loads(text.strip())], None
    except (ValueError, RecursionError) as exc:
        whole_error = str(exc)
    for fences, match in enumerate(_FENCE.finditer(text)):
        if fences >= _MAX_SCAN_STARTS:
            break
        with contextlib.suppress(ValueError, RecursionError):
            values.append(_loads(match.group(1).strip()))
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    covered = 0
    starts = 0
    for match in re.finditer(r"[\[{]", text):
        position = match.start()
        if position < covered:
            continue
        starts += 1
        if starts > _MAX_SCAN_STARTS:
            break
        try:
            value, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError):
            continue
        values.append(value)
        covered = end
    return values, whole_error


# --- the checked schema -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckedSchema:
    """A caller's schema that passed `check_schema`, with the forms providers get and its validators.

    `validator` is the compiled schema; null-dropping also needs one for each subschema, compiled on first
    use (in the worker thread) and found by the JSON pointer that `pointers` gives each subschema's `id`.
    """

    schema: dict[str, Any]
    validator: jsonschema_rs.Validator
    pointers: dict[int, str]
    resolver: referencing._core.Resolver[Any]
    expansion: int
    fan_out: int
    provider_schema: dict[str, Any]
    strict_schema: dict[str, Any] | None
    closed: bool
    _subschemas: list[jsonschema_rs.ValidatorMap] = field(default_factory=list)

    @property
    def wrapped(self) -> bool:
        return not is_object_root(self.schema)

    def issues(self, value: Any) -> list[Issue]:
        """Validation errors of `value` against the caller's schema, with JSON paths (at most 20).

        Every error when collecting them is cheap; otherwise (a large answer against a schema with a wide
        in-place fan-out) only the first one.
        """
        root = self.validator
        try:
            if _json_nodes(value) * self.fan_out <= _ERROR_BUDGET:
                errors = list(root.iter_errors(value))
            else:
                try:
                    root.validate(value)
                    errors = []
                except jsonschema_rs.ValidationError as error:
                    errors = [error]
        except jsonschema_rs.ReferencingError as exc:  # pre-checked, so only a nested `$id` gets here
            return [Issue("$", f"the schema has a reference that cannot be resolved: {exc}")]
        errors.sort(key=lambda e: list(map(str, e.instance_path)))
        return [_issue(error) for error in errors[:_MAX_ISSUES]]

    def extract(self, text: str, *, deadline: float = float("inf"), max_units: float = float("inf")) -> Extraction:
        """The first valid value in `text`; otherwise the errors of the most likely one (or a parse error).

        `deadline` is a `time.monotonic()` time: past it, `ValidationTimeout` is raised between steps.
        `_TooCostly` is raised before validating when the answer's JSON nodes times the schema's expansion
        exceed `max_units`.
        """
        candidates, parse_error = json_candidates(text)
        if not candidates:
            return Extraction(ok=False, parse_error=parse_error or "no JSON value found")
        if sum(map(_json_nodes, candidates)) * self.expansion > max_units:
            raise _TooCostly
        root = self.validator
        failing: list[Any] = []
        for candidate in candidates:
            for variant in self._variants(candidate):
                _check_time(deadline)
                value = self._drop_optional_nulls(variant, self.schema, 0, deadline) if _has_null(variant) else variant
                if root.is_valid(value):
                    return Extraction(ok=True, value=value)
                if not failing:
                    failing.append(value)
        _check_time(deadline)
        return Extraction(ok=False, issues=self.issues(failing[0]))

    def _variants(self, candidate: Any) -> list[Any]:
        if self.wrapped and isinstance(candidate, dict) and set(candidate) == {WRAP_KEY}:
            return [candidate[WRAP_KEY], candidate]
        return [candidate]

    def _accepts(self, node: object, value: Any) -> bool:
        """Whether the subschema `node` accepts `value`; an unknown subschema accepts anything."""
        if not self._subschemas:
            self._subschemas.append(jsonschema_rs.validator_map_for(self.schema, **_options()))
        pointer = self.pointers.get(id(node))
        validator = self._subschemas[0].get(pointer) if pointer is not None else None
        return validator is None or validator.is_valid(value)

    def _drop_optional_nulls(self, value: Any, node: object, depth: int, deadline: float) -> Any:
        """`value` without the nulls a model put in optional properties whose schema does not admit null."""
        if not isinstance(node, dict) or depth > 64:
            return value
        _check_time(deadline)
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            try:
                target = self.resolver.lookup(ref).contents
            except referencing.exceptions.Unresolvable:
                return value
            value = self._drop_optional_nulls(value, target, depth + 1, deadline)
        props = node.get("properties")
        if isinstance(value, dict) and isinstance(props, dict):
            required = node.get("required", [])
            kept: dict[str, Any] = {}
            for key, item in value.items():
                sub = props.get(key)
                if sub is None:
                    kept[key] = item
                elif item is None and key not in required and not self._accepts(sub, None):
                    continue
                else:
                    kept[key] = self._drop_optional_nulls(item, sub, depth + 1, deadline)
            value = kept
        items = node.get("items")
        if isinstance(value, list) and isinstance(items, dict):
            value = [self._drop_optional_nulls(item, items, depth + 1, deadline) for item in value]
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and not self._accepts(node, value):
                for branch in branches:
                    pruned = self._drop_optional_nulls(value, branch, depth + 1, deadline)
                    if self._accepts(branch, pruned):
                        return pruned
        return value


class _TooCostly(Exception):
    pass


async def extract_within(checked: CheckedSchema, text: str, *, deadline: float) -> Extraction:
    """`checked.extract(text)` off the event loop, so it keeps serving other calls meanwhile.

    In a worker thread when the answer is cheap to validate, else in a child process. `deadline` is an
    `anyio.current_time()` time; raises `ValidationTimeout` when it passes first: the caller gets control
    back at the deadline, the child process is killed, a worker thread stops at its next (bounded) step.
    """
    remaining = deadline - anyio.current_time()
    if remaining <= 0:
        raise ValidationTimeout
    work = partial(checked.extract, text, deadline=time.monotonic() + remaining, max_units=_THREAD_BUDGET)
    with anyio.move_on_after(remaining):
        try:
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except _TooCostly:
            return await _extract_in_child(checked.schema, text, seconds=deadline - anyio.current_time())
    raise ValidationTimeout


async def _extract_in_child(schema: dict[str, Any], text: str, *, seconds: float) -> Extraction:
    job = json.dumps({"schema": schema, "text": text, "seconds": seconds}, ensure_ascii=False).encode()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    done = await anyio.run_process([sys.executable, "-m", __name__], input=job, check=False, env=env)
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        reply = None
    if done.returncode != 0 or not isinstance(reply, dict):
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise RuntimeError(f"the validation process failed: {detail[0]}")
    if reply.get("timeout"):
        raise ValidationTimeout
    issues = [Issue(item["path"], item["message"]) for item in reply["issues"]]
    return Extraction(ok=reply["ok"], value=reply["value"], issues=issues, parse_error=reply["parse_error"])


def _child_main() -> None:
    """`python -m mcp_llm_server.jsonschema_tools`: one extraction, the job on stdin, the result on stdout."""
    job = json.load(sys.stdin.buffer)
    checked = check_schema(job["schema"], max_bytes=sys.maxsize, max_depth=sys.maxsize)
    try:
        result = checked.extract(job["text"], deadline=time.monotonic() + job["seconds"])
    except ValidationTimeout:
        sys.stdout.write(json.dumps({"timeout": True}))
        return
    issues = [issue.as_dict() for issue in result.issues]
    reply = {"ok": result.ok, "value": result.value, "issues": issues, "parse_error": result.parse_error}
    sys.stdout.write(json.dumps(reply, ensure_ascii=False))


def _check_time(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise ValidationTimeout


def _has_null(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if node is None:
            return True
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _json_nodes(value: Any) -> int:
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


_JSON_PATH_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


def _json_path(location: Iterable[str | int]) -> str:
    """A JSON path such as `$.items[0].name` (`$['a b']` for names that are not identifiers)."""
    path = "$"
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _JSON_PATH_NAME.match(part):
            path += "." + part
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            path += f"['{escaped}']"
    return path


def _issue(error: jsonschema_rs.ValidationError) -> Issue:
    return Issue(_json_path(error.instance_path), _short(_message(error)))


def _message(error: jsonschema_rs.ValidationError) -> str:
    """The validator's message; for `enum`, every option (the validator elides all but two)."""
    if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Enum):
        return f"{_compact(error.instance)} is not one of {_compact(error.kind.options)}"
    return error.message


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


# --- what validation can cost -------------------------------------------------------------------------------

# Keywords applying a subschema to the same value (in place), or to a part of it (descending).
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_MAPS = ("dependentSchemas", "dependencies")
_DESCENDING_ONE = (
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_DESCENDING_MAPS = ("properties", "patternProperties")
_DESCENDING_LISTS = ("prefixItems", "items")
_REFERENCES = ("$ref", "$dynamicRef", "$recursiveRef")

_Edges = dict[int, list[tuple[dict[str, Any], bool]]]  # node id -> (subschema, descends into the value)


def _applied(node: dict[str, Any], resolve: Callable[[str], object]) -> Iterator[tuple[object, bool]]:
    """The subschemas validation applies at `node` (references resolved), each with whether it descends."""
    for key in _IN_PLACE_ONE:
        yield node.get(key), False
    for key in _IN_PLACE_LISTS:
        yield from ((child, False) for child in _as_list(node.get(key)))
    for key in _IN_PLACE_MAPS:
        yield from ((child, False) for child in _as_map(node.get(key)))
    for key in _REFERENCES:
        ref = node.get(key)
        if isinstance(ref, str):
            yield resolve(ref), False
    for key in _DESCENDING_ONE:
        yield node.get(key), True
    for key in _DESCENDING_LISTS:
        yield from ((child, True) for child in _as_list(node.get(key)))
    for key in _DESCENDING_MAPS:
        yield from ((child, True) for child in _as_map(node.get(key)))


def _as_list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _as_map(value: object) -> list[object]:
    return list(value.values()) if isinstance(value, dict) else []


def _edges(schema: dict[str, Any], resolver: referencing._core.Resolver[Any]) -> _Edges:
    """Every subschema validation can reach from the root, with the subschemas each applies."""
    targets: dict[str, object] = {}

    def resolve(ref: str) -> object:
        if ref not in targets:
            try:
                targets[ref] = resolver.lookup(ref).contents
            except referencing.exceptions.Unresolvable:
                targets[ref] = None
        return targets[ref]

    edges: _Edges = {}
    stack = [schema]
    while stack:
        node = stack.pop()
        if id(node) in edges:
            continue
        children = [(child, descends) for child, descends in _applied(node, resolve) if isinstance(child, dict)]
        edges[id(node)] = children
        stack.extend(child for child, _ in children if id(child) not in edges)
    return edges


def _pointers(schema: dict[str, Any]) -> dict[int, str]:
    """The URI-fragment JSON pointer (`#/$defs/A`) of every object in the schema, by `id`."""
    pointers: dict[int, str] = {}
    stack: list[tuple[object, str]] = [(schema, "#")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, dict):
            pointers[id(node)] = pointer
            stack.extend((child, f"{pointer}/{_escape(key)}") for key, child in node.items())
        elif isinstance(node, list):
            stack.extend((child, f"{pointer}/{index}") for index, child in enumerate(node))
    return pointers


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _in_place_loop(edges: _Edges) -> list[int] | None:
    """A loop of in-place references (ids along it, first one repeated at the end), if there is one."""
    done: set[int] = set()
    for start in edges:
        if start in done:
            continue
        path = [start]
        pending = [iter([child for child, descends in edges[start] if not descends])]
        while pending:
            child = next(pending[-1], None)
            if child is None:
                done.add(path.pop())
                pending.pop()
                continue
            if id(child) in path:
                return [*path[path.index(id(child)) :], id(child)]
            if id(child) not in done:
                path.append(id(child))
                pending.append(iter([sub for sub, descends in edges[id(child)] if not descends]))
    return None


def _expansions(edges: _Edges, start: int, in_place_only: bool, memo: dict[int, int], cap: int) -> int:
    """How many subschemas validation applies from `start`, with every reference written out (up to `cap`).

    A reference back to a schema being expanded (recursion through `properties`/`items`, the in-place loops
    having been refused) is counted once: each repetition needs a deeper value.
    """
    if start in memo:
        return memo[start]

    def children(node_id: int) -> Iterator[int]:
        return (id(child) for child, descends in edges[node_id] if not (in_place_only and descends))

    sizes = {start: 1}
    stack = [(start, children(start))]
    while stack:
        node_id, pending = stack[-1]
        child = next(pending, None)
        if child is None:
            stack.pop()
            memo[node_id] = sizes.pop(node_id)
            if stack:
                parent = stack[-1][0]
                sizes[parent] = min(cap, sizes[parent] + memo[node_id])
        elif child in memo:
            sizes[node_id] = min(cap, sizes[node_id] + memo[child])
        elif child in sizes:
            sizes[node_id] = min(cap, sizes[node_id] + 1)
        else:
            sizes[child] = 1
            stack.append((child, children(child)))
    return memo[start]


def _check_cost(
    schema: dict[str, Any], resolver: referencing._core.Resolver[Any], pointers: dict[int, str]
) -> tuple[int, int]:
    """Refuse schemas whose validation could loop or explode; their expansion and in-place fan-out otherwise."""
    edges = _edges(schema, resolver)
    loop = _in_place_loop(edges)
    if loop is not None:
        where = " → ".join(pointers.get(node_id, "?") for node_id in loop)
        raise SchemaProblem(
            f"The schema's references loop without descending into the value ({where}), so validating an answer "
            "against it would never end. Put each recursive `$ref` under `properties`, `items` or another "
            "keyword that moves into the value, or remove the loop."
        )
    memo: dict[int, int] = {}
    cap = EXPANSION_LIMIT + 1
    expansion = _expansions(edges, id(schema), False, memo, cap)
    if expansion > EXPANSION_LIMIT:
        too_big = {node_id for node_id in edges if _expansions(edges, node_id, False, memo, cap) == cap}
        innermost = next(n for n in too_big if not any(id(child) in too_big for child, _ in edges[n]))
        raise SchemaProblem(
            f"The schema expands to more than {EXPANSION_LIMIT:,} subschemas once its `$ref`s are written out "
            f"(from {pointers.get(innermost, '#')} on: nested anyOf/oneOf/allOf branches multiply the references "
            "to the same definitions), so validating an answer against it could take minutes. Reference each "
            "definition from fewer places, or flatten the nesting."
        )
    in_place: dict[int, int] = {}
    return expansion, max(_expansions(edges, node_id, True, in_place, cap) for node_id in edges)


# --- checking -----------------------------------------------------------------------------------------------


def check_schema(raw: object, *, max_bytes: int, max_depth: int) -> CheckedSchema:
    """Parse and check a caller's schema (Draft 2020-12 unless `$schema` names another draft).

    Raises `SchemaProblem` when it is not JSON, too large or too deep, invalid against its metaschema, has a
    `$ref` that does not resolve inside the schema (remote references are never fetched), a `pattern` the
    regex engine cannot compile, a reference loop that never descends into the value, or expands to more
    than `EXPANSION_LIMIT` subschemas. Synchronous and cheap: linear in the schema's size (capped by
    `max_bytes`), about 50 ms at 64 KB.
    """
    schema = parse_schema(raw)
    depth = json_depth(schema)
    if depth > max_depth:
        raise SchemaProblem(
            f"The schema is nested {depth} levels deep; this server accepts at most {max_depth} "
            "(MCP_LLM_EXTRACT_MAX_SCHEMA_DEPTH). Flatten it or move parts into `$defs`."
        )
    size = len(json.dumps(schema, ensure_ascii=False).encode())
    if size > max_bytes:
        raise SchemaProblem(
            f"The schema is {size:,} bytes as JSON; this server accepts at most {max_bytes:,} "
            "(MCP_LLM_EXTRACT_MAX_SCHEMA_BYTES). Send a smaller schema."
        )
    specification = _specification(schema.get("$schema", _DRAFT_2020_12))
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        raise _invalid(exc) from None
    resource = referencing.Resource.from_contents(schema, default_specification=specification)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(_ROOT_URI, resource)
    resolver = registry.resolver(base_uri=_ROOT_URI)
    _check_references(schema, resolver)
    pointers = _pointers(schema)
    expansion, fan_out = _check_cost(schema, resolver, pointers)
    provider_schema = wrap_schema(schema)
    return CheckedSchema(
        schema=schema,
        validator=_compile(schema),
        pointers=pointers,
        resolver=resolver,
        expansion=expansion,
        fan_out=fan_out,
        provider_schema=provider_schema,
        strict_schema=strictify(provider_schema),
        closed=closed_objects(provider_schema),
    )


async def check_schema_async(raw: object, *, max_bytes: int, max_depth: int) -> CheckedSchema:
    """`check_schema` in a worker thread: at the largest sizes a server may allow it takes seconds."""
    return await anyio.to_thread.run_sync(partial(check_schema, raw, max_bytes=max_bytes, max_depth=max_depth))


def _check_references(schema: dict[str, Any], resolver: referencing._core.Resolver[Any]) -> None:
    for node in _walk(schema):
        ref = node.get("$ref")
        if not isinstance(ref, str):
            continue
        if not ref.startswith("#"):
            raise SchemaProblem(
                f"The schema refers to {ref!r}; only local references (`#/$defs/...`) are supported. "
                "Inline the referenced schema under `$defs`."
            )
        try:
            resolver.lookup(ref)
        except referencing.exceptions.Unresolvable:
            raise SchemaProblem(f"The schema's reference {ref!r} points to nothing inside the schema.") from None


def _options() -> dict[str, Any]:
    return {
        "validate_formats": True,
        "offline": True,
        "base_uri": _ROOT_URI,
        "pattern_options": jsonschema_rs.FancyRegexOptions(backtrack_limit=BACKTRACK_LIMIT),
    }


def _compile(schema: dict[str, Any]) -> jsonschema_rs.Validator:
    try:
        return jsonschema_rs.validator_for(schema, **_options())
    except jsonschema_rs.ValidationError as exc:  # a `pattern` the regex engine cannot compile
        raise _invalid(exc) from None
    except jsonschema_rs.ReferencingError as exc:
        raise SchemaProblem(f"The schema has a reference that cannot be resolved: {_short(str(exc))}") from None


def _invalid(error: jsonschema_rs.ValidationError) -> SchemaProblem:
    return SchemaProblem(
        f"The schema is not a valid JSON Schema: at {_json_path(error.instance_path)}: {_short(error.message)}"
    )


_DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


def _specification(dialect: object) -> referencing.Specification[Any]:
    if not isinstance(dialect, str):
        raise SchemaProblem("`$schema` must be a string: a JSON Schema draft URI.")
    try:
        return referencing.jsonschema.specification_with(dialect)
    except referencing.jsonschema.UnknownDialect:
        raise SchemaProblem(
            f"Unknown `$schema` {dialect!r}: use a JSON Schema draft URI (draft 4, 6, 7, 2019-09 or 2020-12), "
            "or leave `$schema` out for 2020-12."
        ) from None


def _short(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


if __name__ == "__main__":
    _child_main()
