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

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # run by path, `tests` is not importable yet
    sys.path.insert(0, str(REPO))
import tests.contracts.trimming as trimming  # noqa: E402 - after the sys.path line above

SOURCE = Path("/work/shared/contracts/twenty/openapi.yaml")
ORIGIN = "truehostcloud/twentycrm-python-client: openapi.yaml"
TARGET = Path(__file__).with_name("openapi.trimmed.json")

# (path, method): what billflow.connectors.twenty calls, so what tests/fakes/twenty_server.py serves.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/companies/{id}", "get"),
    ("/companies/{id}", "patch"),
    ("/people/{id}", "get"),
    ("/people/{id}", "patch"),
    ("/opportunities/{id}", "get"),
    ("/opportunities/{id}", "patch"),
    ("/opportunities", "get"),  # the connection test (?limit=1) and search_records
    ("/companies", "get"),  # search_records: the list of any object, filtered, ordered, paged
    ("/people", "get"),
)


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    paths = trimming.selected_operations(spec, OPERATIONS)
    components: dict[str, dict[str, Any]] = {"securitySchemes": spec["components"]["securitySchemes"]}
    for ref in sorted(trimming.referenced_components(spec, paths)):
        section, name = trimming.split_ref(ref)
        node = trimming.resolve(spec, ref)
        components.setdefault(section, {})[name] = trimming.without_prose(node) if section == "schemas" else node

    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "security": spec["security"],
        "paths": paths,
        "components": components,
    }


def main(argv: list[str]) -> None:
    raw, spec = trimming.load_spec(argv, SOURCE)
    trimmed = trim(spec)
    text = trimming.write_trimmed(TARGET, trimmed, raw=raw, origin=ORIGIN, operations=OPERATIONS)
    kept, total = len(trimmed["components"]["schemas"]), len(spec["components"]["schemas"])
    print(f"wrote {TARGET} ({len(text)} bytes): {len(OPERATIONS)} operations, {kept} of {total} schemas")


if __name__ == "__main__":
    main(sys.argv)
