"""Twenty's REST contract, checked with jsonschema against the trimmed official OpenAPI.

contracts/twenty-openapi.trimmed.json (a copy of tests/contracts/twenty/openapi.trimmed.json) is the OpenAPI
a Twenty workspace generates, trimmed to the calls billflow makes (see SOURCE.md there). A workspace's spec
lists its own stages and custom fields, so a contract is built for a workspace: `stages` replaces the opportunity
stage enum, `custom_fields` adds fields to an
object's ...ForUpdate and ...ForResponse schemas, as Twenty does when a field is created.

Two readings of the spec, both deliberate and both documented in SOURCE.md:
- requests are closed: an unknown field, at the top level or inside a composite such as `amount`, is an error
  (Twenty answers 400 for a field the object does not have; the generated spec just never says
  additionalProperties: false);
- responses are nullable: every property may be null (Twenty sends null for an empty date, relation or
  number; the generated spec has no nullability at all).
Undeclared error statuses (404: Twenty's current "Record not found") are checked against the declared 400
error shape: Twenty's exception filter answers every error status with that one body.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parent / "contracts" / "twenty-openapi.trimmed.json"
DEFAULT_STAGES = ("NEW", "SCREENING", "MEETING", "PROPOSAL", "CUSTOMER")

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_FORMATS = FormatChecker(formats=("uuid", "email"))


def _is_date_time(value: object) -> bool:
    # jsonschema only checks date-time with an optional package; this is RFC 3339, what Twenty emits.
    return not isinstance(value, str) or bool(_RFC3339.match(value))


_FORMATS.checks("date-time")(_is_date_time)


Schema = dict[str, Any]
CustomFields = Mapping[str, Mapping[str, Schema]]
# singular -> (plural, its own fields): objects a workspace created (a line-item object, say).
CustomObjects = Mapping[str, tuple[str, Mapping[str, Schema]]]
# The fields Twenty gives every object, custom ones included (as CompanyForResponse declares them).
SYSTEM_FIELDS = ("id", "createdAt", "updatedAt", "deletedAt", "position", "createdBy", "updatedBy")


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # as in the spec, e.g. /companies/{id}
    spec: dict[str, Any]
    request_spec: dict[str, Any]  # the same operation in the closed (request) reading


class TwentyContract:
    def __init__(
        self, *, stages: Sequence[str] = DEFAULT_STAGES, custom_fields: CustomFields | None = None,
        custom_objects: CustomObjects | None = None, spec_path: Path = SPEC_PATH,
    ) -> None:
        doc = copy.deepcopy(_load(spec_path))
        _set_stages(doc, stages)
        for singular, (plural, own_fields) in (custom_objects or {}).items():
            _add_object(doc, singular, plural, own_fields)
        for object_name, fields in (custom_fields or {}).items():
            _add_fields(doc, object_name, fields)
        self._doc = doc
        self.base_path = re.sub(r"^[a-z]+://[^/]+", "", doc["servers"][0]["url"]).rstrip("/")  # "/rest"
        self._request_doc = _variant(doc, "urn:twenty-openapi:request", _closed)
        self._response_doc = _variant(doc, "urn:twenty-openapi:response", _nullable)
        self._request_registry = _registry(self._request_doc, "urn:twenty-openapi:request")
        self._response_registry = _registry(self._response_doc, "urn:twenty-openapi:response")
        self._operations = [
            (re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"),
             Operation(method.upper(), template, op, self._request_doc["paths"][template][method]))
            for template, item in self._response_doc["paths"].items()
            for method, op in item.items()
        ]

    # --- lookup ----------------------------------------------------------------------------------
    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        if not path.startswith(self.base_path + "/"):
            return None
        local = path[len(self.base_path):]
        for pattern, op in self._operations:
            match = pattern.match(local)
            if match and op.method == method.upper():
                return op, match.groupdict()
        return None

    # --- requests --------------------------------------------------------------------------------
    def bearer_token(self, headers: Mapping[str, str]) -> str | None:
        """The token of an `Authorization: Bearer` header (the spec's only security scheme), or None."""
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    def check_request(
        self, method: str, path: str, query: Mapping[str, Sequence[str]], headers: Mapping[str, str],
        body: bytes,
    ) -> list[str]:
        """What the real Twenty would reject in this request, as readable problems (empty: acceptable)."""
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in Twenty's REST API"]
        op, path_params = found
        problems: list[str] = []
        for param in op.request_spec.get("parameters", []):
            param = self._resolve(self._request_doc, param)
            where, name = param["in"], param["name"]
            if where == "path":
                raw: str | None = path_params.get(name)
            elif where == "query":
                values = query.get(name)
                raw = values[-1] if values else None
            else:
                continue
            if raw is None:
                if param.get("required"):
                    problems.append(f"{where} parameter {name!r} is required")
                continue
            problems += self._errors(
                param["schema"], _coerce(raw, param["schema"]), self._request_registry,
                root=f"{where} parameter {name!r}",
            )
        problems += self._check_body(op, headers, body)
        return problems

    def check_request_body(self, method: str, path: str, body: Any) -> list[str]:
        """Just the JSON body of a request, for callers that hold a parsed body."""
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in Twenty's REST API"]
        encoded = json.dumps(body).encode()
        return self._check_body(found[0], {"content-type": "application/json"}, encoded)

    def _check_body(self, op: Operation, headers: Mapping[str, str], body: bytes) -> list[str]:
        request_body = op.request_spec.get("requestBody")
        if request_body is None:
            return [f"{op.method} {op.template} takes no body"] if body else []
        if not body:
            return ["the request body is required"] if request_body.get("required") else []
        content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
        media = request_body["content"].get(content_type)
        if media is None:
            return [f"content type {content_type or 'none'!r} is not accepted; send application/json"]
        try:
            document = json.loads(body)
        except ValueError as exc:
            return [f"the body is not JSON: {exc}"]
        return self._errors(media["schema"], document, self._request_registry)

    # --- responses -------------------------------------------------------------------------------
    def check_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """What in this answer differs from what Twenty documents for the operation."""
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in Twenty's REST API"]
        op = found[0]
        responses = op.spec["responses"]
        declared = responses.get(str(status))
        if declared is None:
            if status < 400:
                return [f"status {status} is not a documented answer of {method} {op.template}"]
            declared = responses["400"]  # the one error body Twenty's exception filter sends
        declared = self._resolve(self._response_doc, declared)
        content = declared.get("content")
        if not content:
            return [] if body is None else [f"status {status} has no documented body"]
        return self._errors(content["application/json"]["schema"], body, self._response_registry)

    def response_schema_errors(self, object_name: str, record: Any) -> list[str]:
        """A record as Twenty returns it (and as webhooks carry it), against {Object}ForResponse."""
        name = f"{_schema_name(object_name)}ForResponse"
        schema = {"$ref": f"urn:twenty-openapi:response#/components/schemas/{name}"}
        return self._errors(schema, record, self._response_registry)

    def field_schema(self, object_name: str, path: Sequence[str]) -> dict[str, Any] | None:
        """The schema of a field (or a composite's sub-field: amount.amountMicros) an object's records
        have, as list filters and order_by name it; None for no such field, and for a relation (an embedded
        record or list, which Twenty filters through its ...Id field, not by itself)."""
        node: dict[str, Any] | None = self._doc["components"]["schemas"].get(f"{_schema_name(object_name)}ForResponse")
        for key in path:
            properties = node.get("properties") if isinstance(node, dict) else None
            node = properties.get(key) if isinstance(properties, dict) else None
            if not isinstance(node, dict) or "oneOf" in node or node.get("type") == "array" or "$ref" in node:
                return None
        if node is None or node.get("type") == "object":
            return None  # a composite as a whole is no value to compare
        return node

    # --- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = doc
            for part in node["$ref"].split("#", 1)[1].lstrip("/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    @staticmethod
    def _errors(schema: Schema, instance: Any, registry: Registry[Any], root: str = "body") -> list[str]:
        validator = Draft202012Validator(schema, registry=registry, format_checker=_FORMATS)
        leaves = (leaf for error in validator.iter_errors(instance) for leaf in _leaves(error))
        return sorted({f"{'.'.join(str(p) for p in e.absolute_path) or root}: {e.message}" for e in leaves})


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The errors that explain an anyOf/oneOf failure, without "is not null" from the nullable wrapper."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        meaningful = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")]
        if meaningful:
            for inner in meaningful:
                yield from _leaves(inner)
            return
    yield error


# --- building the two readings -------------------------------------------------------------------
@cache
def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def _schema_name(object_name: str) -> str:
    return object_name[:1].upper() + object_name[1:]


def _set_stages(doc: dict[str, Any], stages: Sequence[str]) -> None:
    # A workspace that renames its stages gets a spec with its own enum; so does the fake's workspace.
    for suffix in ("ForUpdate", "ForResponse"):
        doc["components"]["schemas"][f"Opportunity{suffix}"]["properties"]["stage"]["enum"] = list(stages)


def _add_fields(doc: dict[str, Any], object_name: str, fields: Mapping[str, Schema]) -> None:
    schemas = doc["components"]["schemas"]
    for suffix in ("ForUpdate", "ForResponse"):
        key = f"{_schema_name(object_name)}{suffix}"
        if key not in schemas:
            raise KeyError(f"the trimmed spec has no {key}; is {object_name!r} an object billflow reads?")
        schemas[key]["properties"].update(copy.deepcopy(dict(fields)))


def _add_object(doc: dict[str, Any], singular: str, plural: str, fields: Mapping[str, Schema]) -> None:
    """What Twenty adds to a workspace's spec when a custom object is created: {Name}ForResponse (the
    system fields and the object's own), {Name}ForUpdate, and the list, get and update operations, shaped
    exactly as the standard objects' (here: copied from the company's, names replaced)."""
    schemas = doc["components"]["schemas"]
    name = _schema_name(singular)
    company = schemas["CompanyForResponse"]["properties"]
    schemas[f"{name}ForResponse"] = {"type": "object", "properties": {
        **{key: copy.deepcopy(company[key]) for key in SYSTEM_FIELDS}, **copy.deepcopy(dict(fields))}}
    schemas[f"{name}ForUpdate"] = {"type": "object", "properties": {"position": {"type": "number"},
                                                                    **copy.deepcopy(dict(fields))}}
    for template, own in (("/companies", f"/{plural}"), ("/companies/{id}", f"/{plural}/{{id}}")):
        text = json.dumps(doc["paths"][template])
        for old, new in (("CompanyForResponse", f"{name}ForResponse"), ("CompanyForUpdate", f"{name}ForUpdate"),
                         ('"updateCompany"', f'"update{name}"'), ('"companies"', f'"{plural}"'),
                         ('"company"', f'"{singular}"')):
            text = text.replace(old, new)
        doc["paths"][own] = json.loads(text)


def _variant(doc: dict[str, Any], uri: str, transform: Callable[[Schema], Schema]) -> dict[str, Any]:
    """A copy with every schema transformed and every local $ref made absolute (so subschemas stand alone)."""
    out = copy.deepcopy(doc)
    _rebase_refs(out, uri)
    components = out["components"]
    for name, schema in components.get("schemas", {}).items():
        components["schemas"][name] = _walk(schema, transform)
    for response in components.get("responses", {}).values():
        _transform_content(response, transform)
    for item in out["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                if "schema" in param:
                    param["schema"] = _walk(param["schema"], transform)
            if "requestBody" in op:
                _transform_content(op["requestBody"], transform)
            for response in op.get("responses", {}).values():
                _transform_content(response, transform)
    return out


def _transform_content(holder: dict[str, Any], transform: Callable[[Schema], Schema]) -> None:
    for media in (holder.get("content") or {}).values():
        if "schema" in media:
            media["schema"] = _walk(media["schema"], transform)


def _rebase_refs(node: Any, uri: str) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            node["$ref"] = uri + ref
        for value in node.values():
            _rebase_refs(value, uri)
    elif isinstance(node, list):
        for value in node:
            _rebase_refs(value, uri)


def _walk(schema: Schema, transform: Callable[[Schema], Schema]) -> Schema:
    """Apply transform bottom-up to a schema and every subschema (properties, items, xxxOf)."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _walk(v, transform) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _walk(out["items"], transform)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _walk(out["additionalProperties"], transform)
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(out.get(key), list):
            out[key] = [_walk(s, transform) for s in out[key]]
    return transform(out)


def _closed(schema: Schema) -> Schema:
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        return {**schema, "additionalProperties": False}
    return schema


def _nullable(schema: Schema) -> Schema:
    if isinstance(schema.get("properties"), dict):
        props = {k: {"anyOf": [{"type": "null"}, v]} for k, v in schema["properties"].items()}
        return {**schema, "properties": props}
    return schema


def _registry(doc: dict[str, Any], uri: str) -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource(uri, resource)
    return registry


def _coerce(raw: str, schema: Schema) -> Any:
    """Query and path values are text; read them as the parameter's declared type, as Twenty does."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        return raw
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw
