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

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # run by path, `tests` is not importable yet
    sys.path.insert(0, str(REPO))
import tests.contracts.trimming as trimming  # noqa: E402 - after the sys.path line above

SOURCE = Path("/work/shared/contracts/xero/xero_accounting.yaml")
ORIGIN = "XeroAPI/Xero-OpenAPI: xero_accounting.yaml"
TARGET = Path(__file__).with_name("xero_accounting.trimmed.json")

# (path, method): the calls billflow.connectors.xero makes, so the ones tests/fakes/xero_server serves.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/Contacts", "get"),
    ("/Contacts", "put"),
    ("/Items", "get"),
    ("/Items", "put"),
    ("/Invoices", "put"),
    ("/Quotes", "put"),
    ("/Organisation", "get"),  # the connection test
)
SAMPLE_KEYS = ("example", "examples")


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

    kept_components: dict[str, Any] = {"securitySchemes": spec["components"].get("securitySchemes", {})}
    for ref in sorted(trimming.referenced_components(spec, paths)):
        kind, name = trimming.split_ref(ref)
        kept_components.setdefault(kind, {})[name] = without_samples(trimming.resolve(spec, ref), prose=True)
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": [{"url": s["url"]} for s in spec.get("servers", [])],
        "paths": paths,
        "components": kept_components,
    }


def main(argv: list[str]) -> None:
    raw, spec = trimming.load_spec(argv, SOURCE)
    trimmed = trim(spec)
    trimming.write_trimmed(TARGET, trimmed, raw=raw, origin=ORIGIN, operations=OPERATIONS)
    schemas = len(trimmed["components"].get("schemas", {}))
    print(f"wrote {TARGET}: {len(OPERATIONS)} operations, {schemas} of "
          f"{len(spec['components']['schemas'])} schemas, {TARGET.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(sys.argv)
