"""JSON Schema helpers for `extract_json`: check a caller's schema, shape it for each provider, find JSON in text.

Everything here is pure (no I/O, no SDK): the caller's schema is checked once (`check_schema`), which yields a
`CheckedSchema` that knows the forms providers get (`provider_schema`, `strict_schema`) and validates answers
against the caller's *original* schema (`CheckedSchema.extract`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

__all__ = [
    "CheckedSchema",
    "Extraction",
    "Issue",
    "SchemaProblem",
    "check_schema",
    "closed_objects",
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


class SchemaProblem(ValueError):
    """The caller's schema cannot be used; the message says why and what to do."""


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

    Tried in order: the whole text, each Markdown code fence, then every value starting at a `{` or `[` in
    the prose (the first 64 starts outside values already found).
    """
    values: list[Any] = []
    whole_error: str | None = None
    try:
        return [_loads(text.strip())], None
    except (ValueError, RecursionError) as exc:
        whole_error = str(exc)
    for match in _FENCE.finditer(text):
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
    """A caller's schema that passed `check_schema`, with the forms providers get and a validator."""

    schema: dict[str, Any]
    validator: Validator
    resolver: referencing._core.Resolver[Any]
    provider_schema: dict[str, Any]
    strict_schema: dict[str, Any] | None
    closed: bool

    @property
    def wrapped(self) -> bool:
        return not is_object_root(self.schema)

    def issues(self, value: Any) -> list[Issue]:
        """Validation errors of `value` against the caller's schema, with JSON paths (at most 20)."""
        try:
            errors = sorted(self.validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
        except referencing.exceptions.Unresolvable as exc:  # pre-checked, so only a nested `$id` gets here
            return [Issue("$", f"the schema has a reference that cannot be resolved: {exc}")]
        return [_issue(error) for error in errors[:_MAX_ISSUES]]

    def extract(self, text: str) -> Extraction:
        """The first valid value in `text`; otherwise the errors of the most likely one (or a parse error)."""
        candidates, parse_error = json_candidates(text)
        if not candidates:
            return Extraction(ok=False, parse_error=parse_error or "no JSON value found")
        first: list[Issue] | None = None
        for candidate in candidates:
            for variant in self._variants(candidate):
                value = self._drop_optional_nulls(variant, self.schema, 0)
                issues = self.issues(value)
                if not issues:
                    return Extraction(ok=True, value=value)
                if first is None:
                    first = issues
        return Extraction(ok=False, issues=first or [])

    def _variants(self, candidate: Any) -> list[Any]:
        if self.wrapped and isinstance(candidate, dict) and set(candidate) == {WRAP_KEY}:
            return [candidate[WRAP_KEY], candidate]
        return [candidate]

    def _accepts(self, node: object, value: Any) -> bool:
        return bool(self.validator.evolve(schema=node).is_valid(value))

    def _drop_optional_nulls(self, value: Any, node: object, depth: int) -> Any:
        """`value` without the nulls a model put in optional properties whose schema does not admit null."""
        if not isinstance(node, dict) or depth > 64:
            return value
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            try:
                target = self.resolver.lookup(ref).contents
            except referencing.exceptions.Unresolvable:
                return value
            value = self._drop_optional_nulls(value, target, depth + 1)
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
                    kept[key] = self._drop_optional_nulls(item, sub, depth + 1)
            value = kept
        items = node.get("items")
        if isinstance(value, list) and isinstance(items, dict):
            value = [self._drop_optional_nulls(item, items, depth + 1) for item in value]
        for key in ("anyOf", "oneOf"):
            branches = node.get(key)
            if isinstance(branches, list) and not self._accepts(node, value):
                for branch in branches:
                    pruned = self._drop_optional_nulls(value, branch, depth + 1)
                    if self._accepts(branch, pruned):
                        return pruned
        return value


def _issue(error: ValidationError) -> Issue:
    message = error.message
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[: _MAX_MESSAGE_CHARS - 1] + "…"
    return Issue(error.json_path, message)


def check_schema(raw: object, *, max_bytes: int, max_depth: int) -> CheckedSchema:
    """Parse and check a caller's schema (Draft 2020-12 unless `$schema` names another draft).

    Raises `SchemaProblem` when it is not JSON, too large or too deep, invalid against its metaschema, or
    has a `$ref` that does not resolve inside the schema (remote references are never fetched).
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
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise SchemaProblem(
            f"The schema is not a valid JSON Schema: at {exc.json_path}: {_short(exc.message)}"
        ) from None
    resource = referencing.Resource.from_contents(schema, default_specification=specification)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(_ROOT_URI, resource)
    resolver = registry.resolver(base_uri=_ROOT_URI)
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
    validator = cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER)
    provider_schema = wrap_schema(schema)
    return CheckedSchema(
        schema=schema,
        validator=validator,
        resolver=resolver,
        provider_schema=provider_schema,
        strict_schema=strictify(provider_schema),
        closed=closed_objects(provider_schema),
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
