"""Trim Xero's 926 KB accounting OpenAPI document to the operations billflow uses, with every component
(schemas, parameters, responses) they reference.

Run by hand when the source spec changes (tests never read /work/shared):

    .venv/bin/python tests/contracts/xero/trim.py [/work/shared/contracts/xero/xero_accounting.yaml]

Writes xero_accounting.trimmed.json next to this script. Dropped: prose `description` strings and sample
values (`example`, `examples`, `x-example*`) anywhere except where they are property names inside a
schema's `properties`; nothing else is changed: schemas, enums, formats, required lists, readOnly flags and
`$ref`s are copied verbatim.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = Path("/work/shared/contracts/xero/xero_accounting.yaml")
TARGET = Path(__file__).with_name("xero_accounting.trimmed.json")

# (path, method): the calls billflow.connectors.xero makes, so the ones tests/fakes/xero_server serves.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/Contacts", "get"),
    ("/Contacts", "put"),
    ("/Items", "get"),
    ("/Items", "put"),
    ("/Invoices", "put"),
    ("/Quotes", "put"),
)
COMPONENT_REF = "#/components/"
SAMPLE_KEYS = ("example", "examples")


def references(node: Any) -> set[tuple[str, str]]:
    """Every (kind, name) a node points at with "#/components/<kind>/<name>"."""
    found: set[tuple[str, str]] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith(COMPONENT_REF):
                    raise ValueError(f"unexpected reference {ref}")
                kind, _, name = ref.removeprefix(COMPONENT_REF).partition("/")
                found.add((kind, name))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def without_samples(node: Any, *, prose: bool, names: bool = False) -> Any:
    """Drop sample values (and prose descriptions when asked); `names` marks a `properties` mapping, whose
    keys are property names (a property may well be called Description) and are all kept."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not names:
                if key in SAMPLE_KEYS or key.startswith("x-example"):
                    continue
                if prose and key == "description" and isinstance(value, str):
                    continue
            out[key] = without_samples(value, prose=prose, names=(key == "properties" and not names))
        return out
    if isinstance(node, list):
        return [without_samples(v, prose=prose) for v in node]
    return node


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, method in OPERATIONS:
        entry = spec["paths"][path]
        kept = paths.setdefault(path, {})
        if "parameters" in entry:  # path-level parameters (xero-tenant-id) apply to every method
            kept["parameters"] = entry["parameters"]
        kept[method] = without_samples(entry[method], prose=False)

    components = spec["components"]
    keep: set[tuple[str, str]] = set()
    pending = references(paths)
    while pending:  # transitive closure: what a kept component references is kept too
        kind, name = pending.pop()
        if (kind, name) not in keep:
            keep.add((kind, name))
            pending |= references(components[kind][name]) - keep

    kept_components: dict[str, Any] = {"securitySchemes": components.get("securitySchemes", {})}
    for kind, name in sorted(keep):
        kept_components.setdefault(kind, {})[name] = without_samples(components[kind][name], prose=True)
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": [{"url": s["url"]} for s in spec.get("servers", [])],
        "paths": paths,
        "components": kept_components,
    }


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    raw = source.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader either way
    trimmed = trim(spec)
    trimmed["info"]["x-billflow-trimmed-from"] = {
        "file": "XeroAPI/Xero-OpenAPI: xero_accounting.yaml",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "operations": [f"{method.upper()} {path}" for path, method in OPERATIONS],
    }
    TARGET.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    schemas = len(trimmed["components"].get("schemas", {}))
    print(f"wrote {TARGET}: {len(OPERATIONS)} operations, {schemas} of "
          f"{len(spec['components']['schemas'])} schemas, {TARGET.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv)
