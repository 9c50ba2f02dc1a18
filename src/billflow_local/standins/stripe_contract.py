"""Validates requests to (and answers from) Stripe against Stripe's own OpenAPI document.

Stripe's request bodies are application/x-www-form-urlencoded with nested fields in bracket notation
(`metadata[k]=v`, `lines[0][amount]=1`), which openapi-core cannot decode (it raises on deepObject) and
Prism is too slow to load. So: decode the brackets into JSON, shape it by the operation's schema, and
validate it with jsonschema, where integer, number and boolean also accept their string spellings (a form
carries only strings). Query parameters are validated the same way, as one object of all parameters.

Stripe rejects what its schema does not name, nested objects included ("Received unknown parameter"), so
request schemas are closed: an object schema with properties and no additionalProperties gets
additionalProperties: false.

Only contracts/stripe-spec3.trimmed.json is read: a copy of tests/contracts/stripe/spec3.trimmed.json (see
SOURCE.md there), kept equal by tests/contract/test_standin_contracts.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import jsonschema
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parent / "contracts" / "stripe-spec3.trimmed.json"
FORM = "application/x-www-form-urlencoded"
_SPEC_URI = "urn:stripe:spec3"
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_INTEGER = re.compile(r"^-?\d+$")


class FormDecodeError(ValueError):
    """A parameter name bracket notation cannot place (Stripe answers these with a 400 too)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


# --- bracket notation -----------------------------------------------------------------------------
def decode_form(text: str) -> dict[str, Any]:
    """`a[b][0]=x&a[c]=y` -> {"a": {"b": ["x"], "c": "y"}}. Objects keyed 0..n-1 become lists."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(text, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(raw_key)
        if not match:
            raise FormDecodeError(f"Invalid parameter name: {raw_key}", raw_key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        _place(root, path, value, raw_key)
    result = _listify(root)
    assert isinstance(result, dict)
    return result


class _Appended(list[Any]):
    """A list built from `key[]=` entries, told apart from objects keyed by index while decoding."""


def _place(node: dict[str, Any], path: list[str], value: str, raw_key: str) -> None:
    *parents, last = path
    for i, part in enumerate(parents):
        following = path[i + 1]
        if part == "":
            raise FormDecodeError(f"Invalid array parameter: {raw_key}", raw_key)
        child = node.get(part)
        if child is None:
            child = _Appended() if following == "" else {}
            node[part] = child
        if following == "" and not isinstance(child, _Appended):
            raise FormDecodeError(f"Conflicting parameters for {raw_key}", raw_key)
        if following != "" and not isinstance(child, dict):
            raise FormDecodeError(f"Conflicting parameters for {raw_key}", raw_key)
        if isinstance(child, _Appended):
            if i + 1 != len(path) - 1:  # `a[][b]=` would need guessing which element b belongs to
                raise FormDecodeError(f"Unsupported array parameter: {raw_key}", raw_key)
            child.append(value)
            return
        node = child
    if last == "":
        raise FormDecodeError(f"Invalid parameter name: {raw_key}", raw_key)
    if last in node:
        raise FormDecodeError(f"Received duplicate parameter: {raw_key}", raw_key)
    node[last] = value


def _listify(node: Any) -> Any:
    if isinstance(node, _Appended):
        return list(node)
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and sorted(converted) == sorted(str(i) for i in range(len(converted))):
            return [converted[str(i)] for i in range(len(converted))]
        return converted
    return node


def bracket_name(path: Iterator[Any] | list[Any] | tuple[Any, ...]) -> str:
    """("lines", 0, "amount") -> "lines[0][amount]", as Stripe names a param in its errors."""
    parts = [str(p) for p in path]
    if not parts:
        return ""
    return parts[0] + "".join(f"[{p}]" for p in parts[1:])


# --- schema helpers -------------------------------------------------------------------------------
def _closed(schema: Any) -> Any:
    """Request schemas: an object with named properties and no additionalProperties admits no others."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _nullable(schema: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` -> JSON Schema `anyOf [schema, null]` (jsonschema knows no nullable)."""
    if isinstance(schema, dict):
        out = {k: _nullable(v) for k, v in schema.items() if k != "nullable"}
        if schema.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(schema, list):
        return [_nullable(v) for v in schema]
    return schema


def _is_integer(checker: Any, value: Any) -> bool:
    return _draft4_types.is_type(value, "integer") or (isinstance(value, str) and bool(_INTEGER.match(value)))


def _is_number(checker: Any, value: Any) -> bool:
    if _draft4_types.is_type(value, "number"):
        return True
    if not isinstance(value, str):
        return False
    try:
        return Decimal(value).is_finite()
    except InvalidOperation:
        return False


def _is_boolean(checker: Any, value: Any) -> bool:
    return isinstance(value, bool) or value in ("true", "false")


_draft4_types = jsonschema.Draft4Validator.TYPE_CHECKER
_form_types = _draft4_types.redefine_many(
    {"integer": _is_integer, "number": _is_number, "boolean": _is_boolean}
)
# Draft 4 is the JSON Schema dialect OpenAPI 3.0 schemas are closest to.
FormValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, type_checker=_form_types)


def _shape(value: Any, schema: Any) -> Any:
    """Give decoded form data the structure the schema expects where bracket notation was ambiguous.

    The decoder turns objects keyed 0..n-1 into lists; under a schema that wants an object (metadata keyed
    "0", "1"...) they turn back into objects.
    """
    if not isinstance(schema, dict):
        return value
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        for strict in (True, False):  # a list prefers an array branch, then an object keyed by index
            for branch in branches:
                if _wants(branch, value, strict):
                    return _shape(value, branch)
        return value
    if isinstance(value, list) and _schema_type(schema) == "object":
        value = {str(i): v for i, v in enumerate(value)}
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        fallback = extra if isinstance(extra, dict) else None
        return {k: _shape(v, props.get(k, fallback)) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, schema.get("items")) for v in value]
    return value


def _schema_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


def _wants(schema: Any, value: Any, strict: bool) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = _schema_type(schema)
    if isinstance(value, dict):
        return kind == "object"
    if isinstance(value, list):
        return kind == "array" or (not strict and kind == "object")
    return kind not in ("object", "array")


# --- problems -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One reason Stripe would refuse a request, worded as Stripe words it."""

    message: str
    param: str | None = None


def _problems(errors: list[ValidationError], location: tuple[Any, ...] = ()) -> list[Problem]:
    found: list[Problem] = []
    for error in errors:
        if error.validator in ("anyOf", "oneOf") and error.context:
            # Report the branch the value was meant for (an object for an object), not the nearest miss.
            for strict in (True, False):
                meant = [i for i, b in enumerate(error.validator_value) if _wants(b, error.instance, strict)]
                if meant:
                    break
            chosen = [e for e in error.context if meant and e.schema_path and e.schema_path[0] == meant[0]]
            found.extend(_problems(chosen or [best_match(error.context)], location))
            continue
        path = (*location, *error.absolute_path)
        param = bracket_name(path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            for name in error.instance:
                if name not in allowed:
                    unknown = bracket_name((*path, name))
                    found.append(Problem(f"Received unknown parameter: {unknown}", unknown))
        elif error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            name = bracket_name((*path, *missing[:1]))
            found.append(Problem(f"Missing required param: {name}.", name))
        elif error.validator == "type":
            found.append(Problem(f"Invalid {error.validator_value}: {_short(error.instance)}", param))
        elif error.validator == "enum":
            options = ", ".join(repr(v) for v in error.validator_value)
            found.append(Problem(f"Invalid {param}: must be one of {options}", param))
        elif error.validator == "maxLength":
            limit = error.validator_value
            found.append(Problem(f"Invalid {param}: must be at most {limit} characters", param))
        else:
            found.append(Problem(f"Invalid {param or 'request'}: {error.message}", param or None))
    return found


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- operations -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # the template, e.g. /v1/invoices/{invoice}/finalize
    operation_id: str
    pattern: re.Pattern[str]
    body_schema: dict[str, Any]
    query_schema: dict[str, Any]
    path_schemas: dict[str, dict[str, Any]]
    response_schema: dict[str, Any]


@dataclass
class CheckedRequest:
    operation: Operation | None
    params: dict[str, Any]  # the decoded, schema-shaped form body or query (what the handler works on)
    path_params: dict[str, str]
    problems: list[Problem]


class StripeContract:
    """The operations of the trimmed spec, each able to check a request and a response."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.api_version: str = spec["info"]["version"]
        nullable_spec = _nullable(spec)
        self._registry: Registry[Any] = Registry().with_resource(
            _SPEC_URI, DRAFT4.create_resource(nullable_spec)
        )
        self.operations: list[Operation] = []
        for path, methods in spec["paths"].items():
            for method, op in methods.items():
                self.operations.append(self._operation(path, method.upper(), op))
        # A literal segment wins over a template (/v1/customers/search is not customer "search").
        self.operations.sort(key=lambda o: (o.path.count("{"), -len(o.path)))

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> StripeContract:
        return _load(str(path))

    def _operation(self, path: str, method: str, op: dict[str, Any]) -> Operation:
        body = op.get("requestBody", {}).get("content", {}).get(FORM, {}).get("schema", {"type": "object"})
        query: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        path_schemas: dict[str, dict[str, Any]] = {}
        for param in op.get("parameters", []):
            if param["in"] == "query":
                query["properties"][param["name"]] = param["schema"]
                if param.get("required"):
                    query["required"].append(param["name"])
            elif param["in"] == "path":
                path_schemas[param["name"]] = param["schema"]
        if not query["required"]:
            del query["required"]  # Draft 4 wants a non-empty list
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        response = op["responses"]["200"]["content"]["application/json"]["schema"]
        return Operation(
            method, path, op["operationId"], re.compile(f"^{regex}$"), _closed(copy.deepcopy(body)),
            _closed(query), path_schemas, response,
        )

    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in self.operations:
            match = op.pattern.match(path)
            if match and op.method == method.upper():
                return op, match.groupdict()
        return None

    def by_id(self, operation_id: str) -> Operation:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        known = ", ".join(sorted(o.operation_id for o in self.operations))
        raise KeyError(f"no operation {operation_id!r} in the trimmed spec; known: {known}")

    # --- requests --------------------------------------------------------------------------------
    def check_request(
        self, method: str, path: str, query: str = "", body: bytes = b"", content_type: str | None = None
    ) -> CheckedRequest:
        found = self.operation(method, path)
        if found is None:
            return CheckedRequest(None, {}, {}, [Problem(f"Unrecognized request URL ({method}: {path}).")])
        op, path_params = found
        problems: list[Problem] = []
        for name, value in path_params.items():
            problems += self._validate(value, self.path_schema(op, name), (name,))
        try:
            query_params = decode_form(query)
            body_params = decode_form(body.decode("utf-8")) if body else {}
        except (FormDecodeError, UnicodeDecodeError) as err:
            param = err.param if isinstance(err, FormDecodeError) else None
            return CheckedRequest(op, {}, path_params, [Problem(str(err), param)])
        if body_params and (content_type or "").split(";")[0].strip().lower() != FORM:
            problems.append(Problem(f"Request bodies must be {FORM}, not {content_type or 'untyped'}."))
        query_params = _shape(query_params, op.query_schema)
        problems += self._validate(query_params, op.query_schema)
        body_params = _shape(body_params, op.body_schema)
        problems += self._validate(body_params, op.body_schema)
        params = body_params if op.method == "POST" else query_params
        return CheckedRequest(op, params, path_params, problems)

    @staticmethod
    def path_schema(op: Operation, name: str) -> dict[str, Any]:
        return op.path_schemas.get(name, {"type": "string"})

    @staticmethod
    def _validate(value: Any, schema: dict[str, Any], location: tuple[Any, ...] = ()) -> list[Problem]:
        validator = FormValidator(schema)
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        return _problems(errors, location)

    # --- responses -------------------------------------------------------------------------------
    def check_response(self, op: Operation, body: Any) -> list[str]:
        """What in a 200 body does not match the operation's response schema (for checking fakes)."""
        schema = {"$ref": f"{_SPEC_URI}#/paths/{_pointer(op.path)}/{op.method.lower()}/responses/200"
                  "/content/application~1json/schema"}
        validator = jsonschema.Draft4Validator(schema, registry=self._registry)
        return [f"{bracket_name(e.absolute_path) or '<body>'}: {e.message[:300]}"
                for e in validator.iter_errors(body)]

    def check_error(self, body: Any) -> list[str]:
        """An error answer against components/schemas/error."""
        schema = {"$ref": f"{_SPEC_URI}#/components/schemas/error"}
        validator = jsonschema.Draft4Validator(schema, registry=self._registry)
        return [e.message[:300] for e in validator.iter_errors(body)]


def _pointer(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


@cache
def _load(path: str) -> StripeContract:
    return StripeContract(json.loads(Path(path).read_text()))
