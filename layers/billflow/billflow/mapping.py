"""JSONata mappings written by a tenant's admin for a generic CRM: webhook body -> CrmEvent fields, API answer
-> record, company, contact, search page.

Evaluated by jsonata-python (pure Python, imported on first use) under its Timebox: a mapping that runs
longer than MAPPING_TIMEOUT_MS or nests deeper than MAX_DEPTH fails with a clear error. A mapping is data
the admin configured, never code: JSONata reads only the document it is given.
"""

from __future__ import annotations

import json
from typing import Any

from billflow.errors import ConfigurationError

MAPPING_TIMEOUT_MS = 500
MAX_DEPTH = 150
MAX_MAPPING_CHARS = 10_000


class MappingError(ConfigurationError):
    """A mapping that does not parse, fails on a document, or yields something that is not JSON."""


def _jsonata() -> Any:
    # deferred: cold start; only generic sources and connections use JSONata mappings
    import jsonata  # type: ignore[import-untyped]

    return jsonata


def mapping_problem(text: Any) -> str | None:
    """Why `text` is not a usable JSONata mapping (with the position), or None."""
    if not isinstance(text, str) or not text.strip():
        return "a mapping is a JSONata expression (text)"
    if len(text) > MAX_MAPPING_CHARS:
        return f"a mapping is at most {MAX_MAPPING_CHARS} characters"
    jsonata = _jsonata()
    try:
        jsonata.Jsonata(text)
    except jsonata.JException as err:
        return f"invalid JSONata at position {err.location}: {err}"
    except Exception as err:
        return f"invalid JSONata: {err}"
    return None


def apply_mapping(text: str, document: Any, name: str = "mapping") -> Any:
    """The mapping's value over `document` (None when JSONata yields nothing); MappingError when it fails."""
    problem = mapping_problem(text)
    if problem:
        raise MappingError(f"{name}: {problem}")
    jsonata = _jsonata()
    program = jsonata.Jsonata(text, timeout=MAPPING_TIMEOUT_MS, stack=MAX_DEPTH)
    try:
        result = program.evaluate(document)
    except jsonata.JException as err:
        raise MappingError(f"{name} failed at position {err.location}: {err}") from None
    except RecursionError:
        raise MappingError(f"{name} recursed too deeply") from None
    except Exception as err:
        raise MappingError(f"{name} failed: {type(err).__name__}: {err}") from None
    value = jsonata.Utils.convert_nulls(result)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise MappingError(f"{name} yields something that is not JSON (a function, NaN or infinity)") from None
    return value
