"""Trim Stripe's 4 MB OpenAPI document to the operations billflow uses, with every component they reference.

Run by hand when the source spec changes (tests never read /work/shared):

    .venv/bin/python tests/contracts/stripe/trim.py [/work/shared/contracts/stripe/spec3.yaml]

Writes spec3.trimmed.json next to this script. Prose `description` strings inside components are dropped
(they are most of the size and no validator reads them); operations keep theirs, so the request schemas
stay readable. Nothing else is changed: schemas, enums, required lists and `$ref`s are copied verbatim.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = Path("/work/shared/contracts/stripe/spec3.yaml")
ORIGIN = "github.com/stripe/openapi, openapi/spec3.yaml at commit 63a6746 (2023-09, API version 2023-08-16)"
TARGET = Path(__file__).with_name("spec3.trimmed.json")

# (path, method): the calls billflow.connectors.stripe makes, so the ones tests/fakes/stripe_server serves.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/v1/customers", "get"),
    ("/v1/customers", "post"),
    ("/v1/customers/search", "get"),
    ("/v1/customers/{customer}", "get"),
    ("/v1/invoices", "post"),
    ("/v1/invoiceitems", "post"),
    ("/v1/invoices/{invoice}/finalize", "post"),
    ("/v1/invoices/{invoice}/send", "post"),
)
SCHEMA_PREFIX = "#/components/schemas/"


def referenced_schemas(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith(SCHEMA_PREFIX):
                    raise ValueError(f"unexpected reference {ref}")
                found.add(ref.removeprefix(SCHEMA_PREFIX))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def without_prose(node: Any) -> Any:
    # Only string-valued "description" keys are prose; a property *named* description holds a schema (a dict).
    if isinstance(node, dict):
        return {k: without_prose(v) for k, v in node.items() if k != "description" or not isinstance(v, str)}
    if isinstance(node, list):
        return [without_prose(v) for v in node]
    return node


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, method in OPERATIONS:
        paths.setdefault(path, {})[method] = spec["paths"][path][method]

    all_schemas = spec["components"]["schemas"]
    keep: set[str] = set()
    pending = referenced_schemas(paths)
    while pending:  # transitive closure: a kept schema's own references are kept too
        name = pending.pop()
        if name not in keep:
            keep.add(name)
            pending |= referenced_schemas(all_schemas[name]) - keep

    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec.get("servers", []),
        "security": spec.get("security", []),
        "paths": paths,
        "components": {
            "securitySchemes": spec["components"].get("securitySchemes", {}),
            "schemas": {name: without_prose(all_schemas[name]) for name in sorted(keep)},
        },
    }


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    raw = source.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads 4 MB in ~2 s, not ~30 s
    spec = yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader either way
    trimmed = trim(spec)
    trimmed["info"]["x-billflow-trimmed-from"] = {
        "file": ORIGIN,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "operations": [f"{method.upper()} {path}" for path, method in OPERATIONS],
    }
    TARGET.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    kept, total = len(trimmed["components"]["schemas"]), len(spec["components"]["schemas"])
    print(f"wrote {TARGET}: {len(OPERATIONS)} operations, {kept} of {total} schemas")


if __name__ == "__main__":
    main(sys.argv)
