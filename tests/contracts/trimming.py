"""What the tests/contracts/<system>/trim.py scripts share: loading an OpenAPI document, following its
`#/components/...` references transitively, dropping prose, and writing the stamped trimmed copy.

Run by hand only (the scripts read /work/shared); tests read the trimmed JSON files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

COMPONENT_REF = "#/components/"


def load_spec(argv: list[str], default_source: Path) -> tuple[bytes, dict[str, Any]]:
    """The source file's bytes (for the stamp's sha256) and the parsed document; argv[1] overrides the source."""
    source = Path(argv[1]) if len(argv) > 1 else default_source
    raw = source.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader reads 4 MB in ~2 s, not ~30 s
    spec = yaml.load(raw, Loader=loader)  # noqa: S506 - a safe loader either way
    assert isinstance(spec, dict)
    return raw, spec


def references(node: Any) -> set[str]:
    """Every "#/components/<kind>/<name>" a node points at; any other `$ref` is an error."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                if not ref.startswith(COMPONENT_REF):
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


def referenced_components(spec: dict[str, Any], node: Any) -> set[str]:
    """The references of `node`, closed transitively: what a kept component references is kept too."""
    keep: set[str] = set()
    pending = references(node)
    while pending:
        ref = pending.pop()
        if ref not in keep:
            keep.add(ref)
            pending |= references(resolve(spec, ref)) - keep
    return keep


def split_ref(ref: str) -> tuple[str, str]:
    """("schemas", "Invoice") for "#/components/schemas/Invoice"."""
    kind, _, name = ref.removeprefix(COMPONENT_REF).partition("/")
    return kind, name


def without_prose(node: Any) -> Any:
    # Only string-valued "description" keys are prose; a property *named* description holds a schema (a dict).
    if isinstance(node, dict):
        return {k: without_prose(v) for k, v in node.items() if k != "description" or not isinstance(v, str)}
    if isinstance(node, list):
        return [without_prose(v) for v in node]
    return node


def selected_operations(spec: dict[str, Any], operations: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The `paths` object cut down to the (path, method) pairs given, operations copied verbatim."""
    paths: dict[str, Any] = {}
    for path, method in operations:
        paths.setdefault(path, {})[method] = spec["paths"][path][method]
    return paths


def write_trimmed(target: Path, trimmed: dict[str, Any], *, raw: bytes, origin: str,
                  operations: Iterable[tuple[str, str]]) -> str:
    """Stamp where the copy came from (file, sha256, operations) into info and write it; returns the text."""
    trimmed["info"]["x-billflow-trimmed-from"] = {
        "file": origin,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "operations": [f"{method.upper()} {path}" for path, method in operations],
    }
    text = json.dumps(trimmed, indent=1, sort_keys=True) + "\n"
    target.write_text(text)
    return text
