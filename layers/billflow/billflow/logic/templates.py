"""`{{ path }}` placeholders in rule values, resolved from the run's context. No code is executed."""

from __future__ import annotations

import re
from typing import Any

from billflow.errors import ConfigurationError
from billflow.rules.paths import MISSING, get_path

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


def render(value: Any, context: dict[str, Any]) -> Any:
    """Strings that are one placeholder keep the value's type; mixed strings interpolate text."""
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value.strip())
    if whole:
        return _resolve(whole.group(1), context)
    return PLACEHOLDER.sub(lambda m: _text(_resolve(m.group(1), context)), value)


def placeholders(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set(PLACEHOLDER.findall(value)) if isinstance(value, str) else set()


def _resolve(path: str, context: dict[str, Any]) -> Any:
    found = get_path(context, path)
    if found is MISSING:
        raise ConfigurationError(f"placeholder {{{{ {path} }}}} has no value in this run")
    return found


def _text(value: Any) -> str:
    return "" if value is None else str(value)
