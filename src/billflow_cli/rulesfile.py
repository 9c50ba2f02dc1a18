"""Rule files for the CLI: read with billflow_local.rulesfile (shared with the local runtime), written here."""

from __future__ import annotations

from typing import Any

import yaml

from billflow_local.rulesfile import RulesFileError, load_rules, read_documents

__all__ = ["RulesFileError", "dump_rules", "load_rules", "read_documents"]


def dump_rules(documents: list[dict[str, Any]]) -> str:
    """YAML documents separated by ---, fields in the model's order; strings that look like YAML 1.1
    booleans (on, no...) are quoted, so any YAML reader reads them back as strings."""
    return yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True, width=110)
