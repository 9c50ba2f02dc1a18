"""Tables for people: the execution log as `billflow log` and the local demo print it, and plain columns."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

REASON_WIDTH = 60
_UTC_OFFSET = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?)\+00:00\b")


def format_log(items: list[dict[str, Any]], *, wide: bool = False, filtered: bool = False) -> str:
    if not items:
        return "no runs match these filters" if filtered else "no runs yet"
    columns = ("at", "execution", "rule_id", "step", "status", "external_id", "reason")
    rows = []
    for item in items:
        row = {c: _utc_text(str(item.get(c) or "")) for c in columns}
        row["at"] = _timestamp(row["at"])
        if item.get("trigger"):  # a run not started by a webhook (issue 11: the sweep)
            row["step"] = f"{row['step']} ({item['trigger']})"
        if not wide and len(row["reason"]) > REASON_WIDTH:
            row["reason"] = row["reason"][:REASON_WIDTH - 1] + "…"
        rows.append([row[c] for c in columns])
    text = table(columns, rows)
    cut = not wide and any(len(str(item.get("reason") or "")) > REASON_WIDTH for item in items)
    return text + ("\n(reasons cut at 60 characters: --wide prints them in full)" if cut else "")


def _utc_text(text: str) -> str:
    """One spelling of UTC in every timestamp shown: Z, not +00:00."""
    return _UTC_OFFSET.sub(r"\1Z", text)


def _timestamp(text: str) -> str:
    """An ISO timestamp as 2026-03-18T09:30:05Z (seconds are enough to read a log)."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


