"""Trim the OpenAPI a Twenty workspace generates (640 KB) to the calls billflow makes and what they reference.

Run by hand when the source spec changes (tests never read /work/shared):

    .venv/bin/python tests/contracts/twenty/trim.py [/work/shared/contracts/twenty/openapi.yaml]

Writes openapi.trimmed.json next to this script. Kept: the operations below, every component schema they
reference (transitively: a response embeds its relations' schemas), the parameters and error responses they
reference, the bearer security scheme and the servers (whose path, /rest, prefixes every operation).
Prose `description` strings inside component schemas are dropped (no validator reads them); nothing else is
changed: types, formats, enums and `$ref`s are copied verbatim.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

SOURCE = Path("/work/shared/contracts/twenty/openapi.yaml")
TARGET = Path(__file__).with_name("openapi.trimmed.json")

# (path, method): what billflow.connectors.twenty calls, so what tests/fakes/twenty_server.py serves.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/companies/{id}", "get"),
    ("/companies/{id}", "patch"),
    ("/people/{id}", "get"),
    ("/people/{id}", "patch"),
    ("/opportunities/{id}", "get"),
    ("/opportunities/{id}", "patch"),
)


def references(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith("#/components/"):
                    raise ValueError(f"unexpected reference {ref}")
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def resolve(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


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

    keep: set[str] = set()
    pending = references(paths)
    while pending:  # transitive closure: a kept component's own references are kept too
        ref = pending.pop()
        if ref not in keep:
            keep.add(ref)
            pending |= references(resolve(spec, ref)) - keep

    components: dict[str, dict[str, Any]] = {"securitySchemes": spec["components"]["securitySchemes"]}
    for ref in sorted(keep):
        _, _, section, name = ref.split("/")
        node = resolve(spec, ref)
        components.setdefault(section, {})[name] = without_prose(node) if section == "schemas" else node

    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "security": spec["security"],
        "paths": paths,
        "components": components,
    }


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    raw = source.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    spec = yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader either way
    trimmed = trim(spec)
    trimmed["info"]["x-billflow-trimmed-from"] = {
        "file": "truehostcloud/twentycrm-python-client: openapi.yaml",
        "sha256": hashlib.sha256(raw).hexdigest(),
        "operations": [f"{method.upper()} {path}" for path, method in OPERATIONS],
    }
    text = json.dumps(trimmed, indent=1, sort_keys=True) + "\n"
    TARGET.write_text(text)
    kept, total = len(trimmed["components"]["schemas"]), len(spec["components"]["schemas"])
    print(f"wrote {TARGET} ({len(text)} bytes): {len(OPERATIONS)} operations, {kept} of {total} schemas")


if __name__ == "__main__":
    main(sys.argv)
