"""Trim Stripe's 4 MB OpenAPI document to the operations billflow uses, with every component they reference.

Run by hand when the source spec changes (tests never read /work/shared):

    .venv/bin/python tests/contracts/stripe/trim.py [/work/shared/contracts/stripe/spec3.yaml]

Writes spec3.trimmed.json next to this script. Prose `description` strings inside components are dropped
(they are most of the size and no validator reads them); operations keep theirs, so the request schemas
stay readable. Nothing else is changed: schemas, enums, required lists and `$ref`s are copied verbatim.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # run by path, `tests` is not importable yet
    sys.path.insert(0, str(REPO))
import tests.contracts.trimming as trimming  # noqa: E402 - after the sys.path line above

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
    ("/v1/account", "get"),  # the connection test
)
SCHEMA_PREFIX = "#/components/schemas/"


def trim(spec: dict[str, Any]) -> dict[str, Any]:
    paths = trimming.selected_operations(spec, OPERATIONS)
    keep = trimming.referenced_components(spec, paths)
    if unexpected := sorted(ref for ref in keep if not ref.startswith(SCHEMA_PREFIX)):
        raise ValueError(f"unexpected reference {unexpected[0]}")
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec.get("servers", []),
        "security": spec.get("security", []),
        "paths": paths,
        "components": {
            "securitySchemes": spec["components"].get("securitySchemes", {}),
            "schemas": {ref.removeprefix(SCHEMA_PREFIX): trimming.without_prose(trimming.resolve(spec, ref))
                        for ref in sorted(keep)},
        },
    }


def main(argv: list[str]) -> None:
    raw, spec = trimming.load_spec(argv, SOURCE)
    trimmed = trim(spec)
    trimming.write_trimmed(TARGET, trimmed, raw=raw, origin=ORIGIN, operations=OPERATIONS)
    kept, total = len(trimmed["components"]["schemas"]), len(spec["components"]["schemas"])
    print(f"wrote {TARGET}: {len(OPERATIONS)} operations, {kept} of {total} schemas")


if __name__ == "__main__":
    main(sys.argv)
