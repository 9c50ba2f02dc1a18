"""Trim HubSpot's official CRM specs (HubSpot/HubSpot-public-api-spec-collection) to the calls billflow makes.

Run by hand when the source specs change (tests never read /work/shared):

    .venv/bin/python tests/contracts/hubspot/trim.py [/work/shared/contracts/hubspot]

Writes <spec>.trimmed.json next to this script, one per source file: the operations below, every component
they reference (transitively), the security schemes and servers. Prose `description` strings inside
component schemas are dropped; types, formats, enums and `$ref`s are copied verbatim.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # run by path, `tests` is not importable yet
    sys.path.insert(0, str(REPO))
import tests.contracts.trimming as trimming  # noqa: E402 - after the sys.path line above

SOURCE = Path("/work/shared/contracts/hubspot")
ORIGIN = "HubSpot/HubSpot-public-api-spec-collection (2026-08): "
HERE = Path(__file__).resolve().parent

# spec file -> (path, method): what billflow.connectors.hubspot calls.
OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "deals.json": (
        ("/crm/v3/objects/0-3", "get"),  # the connection test
        ("/crm/v3/objects/0-3/{dealId}", "get"),
        ("/crm/v3/objects/0-3/{dealId}", "patch"),
        ("/crm/v3/objects/0-3/search", "post"),
    ),
    "companies.json": (
        ("/crm/v3/objects/companies/{companyId}", "get"),
        ("/crm/v3/objects/companies/{companyId}", "patch"),
    ),
    "contacts.json": (
        ("/crm/v3/objects/contacts/{contactId}", "get"),
    ),
    "lineItems.json": (
        ("/crm/v3/objects/line_items/batch/read", "post"),
    ),
    "associations-v4.json": (
        ("/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}", "get"),
    ),
}


def trim(spec: dict[str, Any], operations: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    paths = trimming.selected_operations(spec, operations)
    components: dict[str, dict[str, Any]] = {"securitySchemes": spec["components"]["securitySchemes"]}
    for ref in sorted(trimming.referenced_components(spec, paths)):
        section, name = trimming.split_ref(ref)
        node = trimming.resolve(spec, ref)
        components.setdefault(section, {})[name] = trimming.without_prose(node) if section == "schemas" else node
    return {"openapi": spec["openapi"], "info": spec["info"], "servers": spec["servers"], "paths": paths,
            "components": components}


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else SOURCE
    for name, operations in OPERATIONS.items():
        raw, spec = trimming.load_spec(["", str(source / name)], source / name)
        target = HERE / name.replace(".json", ".trimmed.json")
        text = trimming.write_trimmed(target, trim(spec, operations), raw=raw, origin=ORIGIN + name,
                                      operations=operations)
        print(f"wrote {target} ({len(text)} bytes): {len(operations)} operations")


if __name__ == "__main__":
    main(sys.argv)
