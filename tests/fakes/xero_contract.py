"""Validates requests to (and answers from) Xero's accounting API against Xero's own OpenAPI document.

Request bodies are JSON: each is validated with jsonschema against the operation's requestBody schema, with
the `$ref`s resolved inside the trimmed spec. Query parameters are decoded by their declared style (arrays
are comma separated: style form, explode false) and validated against their schemas; headers marked
required (xero-tenant-id) must be present.

The request schemas are closed and honest about readOnly:
  - an object schema with properties and no additionalProperties gets additionalProperties: false. Xero
    itself drops unknown elements silently, so a misspelt field would be lost without a word; here it is a
    violation, which is the point of checking;
  - a readOnly property (SubTotal, Total, UpdatedDateUTC...) may not be sent.
Answers are checked against the open schemas (Xero answers more than its schemas name, e.g. DateString).
`format: uuid` is enforced, as Xero refuses an id that is not a GUID.

Only tests/contracts/xero/xero_accounting.trimmed.json is read (see SOURCE.md there).
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parents[1] / "contracts" / "xero" / "xero_accounting.trimmed.json"
JSON = "application/json"
_REQUEST_URI = "urn:xero:accounting:request"
_ANSWER_URI = "urn:xero:accounting:answer"
_READ_ONLY = "x-billflow-read-only"
_INTEGER = re.compile(r"^-?\d+$")


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the type keyword reports non-strings
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("uuid")(_is_uuid)


# --- schema transforms ------------------------------------------------------------------------------
def _closed(schema: Any) -> Any:
    """Request schemas: no unknown properties, no readOnly ones."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        props = out.get("properties")
        if isinstance(props, dict):
            for name, prop in props.items():
                if isinstance(prop, dict) and prop.get("readOnly") is True:
                    props[name] = {"not": {}, _READ_ONLY: True}
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    """A parameter or response given as {"$ref": "#/components/..."} -> the thing itself."""
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


# --- problems -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One reason Xero would refuse a request; `where` is a dotted path (Invoices.0.Contact.ContactID)."""

    message: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


def _dotted(path: Any) -> str:
    return ".".join(str(p) for p in path)


def _problems(errors: list[ValidationError], prefix: str = "") -> list[Problem]:
    found: list[Problem] = []
    for error in errors:
        where = ".".join(p for p in (prefix, _dotted(error.absolute_path)) if p)
        schema = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "not" and schema.get(_READ_ONLY):
            found.append(Problem("is read-only and cannot be sent", where))
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = schema.get("properties", {})
            for name in error.instance:
                if name not in allowed:
                    found.append(Problem("is not an element of this object", f"{where}.{name}".lstrip(".")))
        elif error.validator == "required":
            found.append(Problem(error.message, where))
        elif error.validator == "type":
            found.append(Problem(f"{_short(error.instance)} is not of type {error.validator_value}", where))
        elif error.validator == "enum":
            allowed = [str(v) for v in error.validator_value]
            options = ", ".join(allowed) if len(allowed) <= 12 else f"the {len(allowed)} values the spec lists"
            found.append(Problem(f"{_short(error.instance)} is not one of {options}", where))
        elif error.validator == "format":
            found.append(Problem(f"{_short(error.instance)} is not a valid {error.validator_value}", where))
        elif error.validator == "maxLength":
            found.append(Problem(f"must be at most {error.validator_value} characters", where))
        else:
            found.append(Problem(error.message[:300], where))
    return found


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


# --- operations -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryParam:
    name: str
    schema: dict[str, Any]
    comma_separated: bool


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    pattern: re.Pattern[str]
    body_required: bool
    has_body: bool
    query: dict[str, QueryParam]
    required_headers: tuple[str, ...]
    headers: tuple[str, ...]


@dataclass
class CheckedRequest:
    operation: Operation | None
    body: Any = None
    query: dict[str, Any] = field(default_factory=dict)  # decoded and typed (booleans, ints, lists)
    problems: list[Problem] = field(default_factory=list)


class XeroContract:
    """The operations of the trimmed spec, each able to check a request; answers checked by schema."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.version: str = spec["info"]["version"]
        self._request_registry: Registry[Any] = Registry().with_resource(
            _REQUEST_URI, DRAFT4.create_resource(_closed(copy.deepcopy(spec)))
        )
        self._answer_registry: Registry[Any] = Registry().with_resource(
            _ANSWER_URI, DRAFT4.create_resource(spec)
        )
        self.operations: list[Operation] = []
        for path, entry in spec["paths"].items():
            shared = entry.get("parameters", [])
            for method, op in entry.items():
                if method != "parameters":
                    self.operations.append(self._operation(path, method.upper(), op, shared))

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> XeroContract:
        return _load(str(path))

    def _operation(self, path: str, method: str, op: dict[str, Any], shared: list[Any]) -> Operation:
        query: dict[str, QueryParam] = {}
        required_headers: list[str] = []
        headers: list[str] = []
        for raw in [*shared, *op.get("parameters", [])]:
            param = _resolve(self.spec, raw)
            if param["in"] == "query":
                comma = param.get("schema", {}).get("type") == "array" and param.get("explode") is False
                query[param["name"]] = QueryParam(param["name"], param.get("schema", {}), comma)
            elif param["in"] == "header":
                headers.append(param["name"].lower())
                if param.get("required"):
                    required_headers.append(param["name"].lower())
        body = op.get("requestBody")
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
        return Operation(
            method, path, op["operationId"], re.compile(f"^{regex}$"),
            bool(body and body.get("required")), body is not None, query, tuple(required_headers),
            tuple(headers),
        )

    def operation(self, method: str, path: str) -> Operation | None:
        for op in self.operations:
            if op.method == method.upper() and op.pattern.match(path):
                return op
        return None

    def by_id(self, operation_id: str) -> Operation:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        known = ", ".join(sorted(o.operation_id for o in self.operations))
        raise KeyError(f"no operation {operation_id!r} in the trimmed spec; known: {known}")

    # --- requests --------------------------------------------------------------------------------
    def check_request(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> CheckedRequest:
        """Path, headers, query and JSON body of one request (headers with lower-case names)."""
        op = self.operation(method, path)
        if op is None:
            return CheckedRequest(None, problems=[Problem(f"no operation {method} {path} in the API")])
        checked = CheckedRequest(op)
        for name in op.required_headers:
            if not headers.get(name):
                checked.problems.append(Problem(f"the {name} header is required"))
        checked.query, problems = self._check_query(op, query)
        checked.problems += problems
        if not op.has_body:
            if body:
                checked.problems.append(Problem(f"{op.method} {op.path} takes no request body"))
            return checked
        if not body:
            if op.body_required:
                checked.problems.append(Problem("a request body is required"))
            return checked
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != JSON:
            checked.problems.append(Problem(f"the body must be {JSON}, not {content_type or 'untyped'}"))
        try:
            checked.body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            checked.problems.append(Problem(f"the body is not JSON: {err}"))
            return checked
        checked.problems += self.check_body(op, checked.body)
        return checked

    def check_body(self, op: Operation, body: Any) -> list[Problem]:
        schema = {"$ref": f"{_REQUEST_URI}#{self._body_pointer(op)}"}
        validator = jsonschema.Draft4Validator(schema, registry=self._request_registry, format_checker=FORMATS)
        return _problems(sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path))))

    def _body_pointer(self, op: Operation) -> str:
        return f"/paths/{_pointer(op.path)}/{op.method.lower()}/requestBody/content/application~1json/schema"

    def _check_query(
        self, op: Operation, query: dict[str, list[str]]
    ) -> tuple[dict[str, Any], list[Problem]]:
        typed: dict[str, Any] = {}
        problems: list[Problem] = []
        for name, values in query.items():
            param = op.query.get(name)
            if param is None:
                problems.append(Problem(f"unknown query parameter (known: {', '.join(sorted(op.query))})", name))
                continue
            if len(values) > 1:
                problems.append(Problem("given more than once", name))
            value = _typed(values[-1], param)
            typed[name] = value
            validator = jsonschema.Draft4Validator(param.schema, format_checker=FORMATS)
            problems += _problems(list(validator.iter_errors(value)), name)
        return typed, problems

    # --- answers ---------------------------------------------------------------------------------
    def check_response(self, op: Operation, status: int, body: Any) -> list[str]:
        """What in an answer does not match the operation's response schema for that status."""
        responses = self.spec["paths"][op.path][op.method.lower()]["responses"]
        response = _resolve(self.spec, responses.get(str(status)))
        if response is None:
            return [f"{op.operation_id} declares no {status} answer"]
        schema = response["content"][JSON]["schema"]
        validator = jsonschema.Draft4Validator(
            {"$ref": f"{_ANSWER_URI}#/components/schemas/{schema['$ref'].rsplit('/', 1)[-1]}"},
            registry=self._answer_registry, format_checker=FORMATS,
        )
        return [f"{_dotted(e.absolute_path) or '<body>'}: {e.message[:300]}" for e in validator.iter_errors(body)]

    def check_error(self, body: Any) -> list[str]:
        """An error answer against components/schemas/Error."""
        validator = jsonschema.Draft4Validator(
            {"$ref": f"{_ANSWER_URI}#/components/schemas/Error"}, registry=self._answer_registry,
            format_checker=FORMATS,
        )
        return [e.message[:300] for e in validator.iter_errors(body)]


def _typed(raw: str, param: QueryParam) -> Any:
    """A query string value in the type its schema declares (what Xero's model binder does)."""
    kind = param.schema.get("type")
    if param.comma_separated:
        return [v for v in raw.split(",") if v != ""]
    if kind == "boolean" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if kind == "integer" and _INTEGER.match(raw):
        return int(raw)
    return raw


def _pointer(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


@cache
def _load(path: str) -> XeroContract:
    return XeroContract(json.loads(Path(path).read_text()))
