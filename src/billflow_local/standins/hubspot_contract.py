"""HubSpot's official CRM v3 / associations v4 contracts, trimmed (contracts/hubspot/*.trimmed.json, see
tests/contracts/hubspot/SOURCE.md), as a request and response checker for the HubSpot stand-in.

Two readings beyond the letter of the documents, both what HubSpot itself does:
- the deals spec names the object by its type id (/crm/v3/objects/0-3/...); HubSpot answers the same
  operations under the object's name (/crm/v3/objects/deals/...), which billflow calls;
- quotes, commerce payments and invoices have no spec in the collection copied here; they are CRM v3 objects
  served by the same generic operations, so their calls are checked against the deals operations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACTS = Path(__file__).resolve().parent / "contracts" / "hubspot"
SPECS = ("deals", "companies", "contacts", "lineItems", "associations-v4")
# Object path segments checked against the deals operations (see the module docstring).
_AS_DEALS = re.compile(r"^/crm/v3/objects/(deals|quotes|commerce_payments|invoices)(?=/|$)")


@dataclass(frozen=True)
class Operation:
    spec: str
    method: str
    template: str
    pattern: re.Pattern[str]
    doc: dict[str, Any]


class HubSpotContract:
    def __init__(self, directory: Path = CONTRACTS) -> None:
        self._docs = {name: _load(directory / f"{name}.trimmed.json") for name in SPECS}
        registry: Registry[Any] = Registry()
        for name, doc in self._docs.items():
            registry = registry.with_resource(f"urn:hubspot:{name}",
                                              Resource.from_contents(doc, default_specification=DRAFT202012))
        self._registry = registry
        self._operations = [
            Operation(name, method.upper(), template,
                      re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"), op)
            for name, doc in self._docs.items()
            for template, item in doc["paths"].items()
            for method, op in item.items()
        ]

    def operation(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        spec_path = _AS_DEALS.sub("/crm/v3/objects/0-3", path)
        for op in self._operations:
            match = op.pattern.match(spec_path)
            if match and op.method == method.upper():
                return op, match.groupdict()
        return None

    def check_request(
        self, method: str, path: str, query: Mapping[str, Sequence[str]], headers: Mapping[str, str], body: bytes,
    ) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in HubSpot's CRM API"]
        op, path_params = found
        problems: list[str] = []
        for param in op.doc.get("parameters", []):
            where, name, schema = param["in"], param["name"], param.get("schema", {})
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
            problems += self._errors(op.spec, schema, _coerce(raw, schema), f"{where} parameter {name!r}")
        request_body = op.doc.get("requestBody")
        if request_body is None:
            if body:
                problems.append(f"{op.method} {op.template} takes no body")
            return problems
        if not body:
            return [*problems, "the request body is required"] if request_body.get("required") else problems
        content_type = (headers.get("content-type") or "").split(";")[0].strip().lower()
        media = request_body["content"].get(content_type)
        if media is None:
            return [*problems, f"content type {content_type or 'none'!r} is not accepted; send application/json"]
        try:
            document = json.loads(body)
        except ValueError as exc:
            return [*problems, f"the body is not JSON: {exc}"]
        return problems + self._errors(op.spec, media["schema"], document, "body")

    def check_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        found = self.operation(method, path)
        if found is None:
            return [f"{method} {path}: no such operation in HubSpot's CRM API"]
        op = found[0]
        declared = op.doc["responses"].get(str(status)) or op.doc["responses"].get("default")
        if declared is None:
            return [f"status {status} is not a documented answer of {method} {op.template}"]
        if "$ref" in declared:
            declared = self._resolve(op.spec, declared["$ref"])
        content = declared.get("content")
        if not content:
            return [] if body in (None, b"") else [f"status {status} has no documented body"]
        media = content.get("application/json") or next(iter(content.values()))  # errors: "*/*"
        return self._errors(op.spec, media["schema"], body, "answer")

    def _resolve(self, spec: str, ref: str) -> dict[str, Any]:
        node: Any = self._docs[spec]
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return dict(node)

    def _errors(self, spec: str, schema: dict[str, Any], instance: Any, root: str) -> list[str]:
        rebased = _rebase(schema, f"urn:hubspot:{spec}")
        validator = Draft202012Validator(rebased, registry=self._registry)
        return sorted({f"{root}.{'.'.join(str(p) for p in e.absolute_path)}".rstrip(".") + f": {e.message}"
                       for e in validator.iter_errors(instance)})


@cache
def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _rebase(node: Any, uri: str) -> Any:
    if isinstance(node, dict):
        return {k: (uri + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v, uri))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v, uri) for v in node]
    return node


def _coerce(raw: str, schema: dict[str, Any]) -> Any:
    """Query and path values are text; read them as the declared type (arrays: comma separated)."""
    kind = schema.get("type")
    if kind == "array":
        return [v for v in raw.split(",") if v]
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
