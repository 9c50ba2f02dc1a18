"""Rule files for the CLI: read with billflow_local.rulesfile (shared with the local runtime), written here."""

from __future__ import annotations

from typing import Any

import yaml

from billflow_local.rulesfile import RulesFileError, load_rules, read_documents

__all__ = ["RulesFileError", "dump_rules", "load_rules", "read_documents"]


def dump_rules(documents: list[dict[str, Any]]) -> str:
    """YAML documents separated by ---, fields in the model's order, unset (null) fields left out as a person
    would write them; strings that look like YAML 1.1 booleans (on, no...) are quoted, so any YAML reader
    reads them back as strings."""
    return yaml.safe_dump_all([_without_nulls(d) for d in documents], sort_keys=False, allow_unicode=True,
                              width=110)


def _without_nulls(value: Any) -> Any:
    """Unset fields dropped at every depth (a model field left unset reads back as the same default)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
