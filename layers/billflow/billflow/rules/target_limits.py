"""Each target's limits on a document action's options, in one place, for rule validation and the connectors.

option_problems("zoho_books.invoice", {"days_until_due": 120}) answers what the target would refuse, before a
rule is saved and again before anything is sent. Each limit names where the target documents it. Values a
rule fills from the record at run time ("{{ record.days }}") cannot be checked here and are skipped; the
connector checks the rendered value.

This module imports nothing from the connectors, so rule validation can use it without loading them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass(frozen=True)
class WholeNumber:
    minimum: int | None = None
    maximum: int | None = None
    source: str = ""

    def problem(self, name: str, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().lstrip("-").isdigit():
            return f"{name} must be a whole number"
        number = int(str(value).strip())
        if self.minimum is not None and number < self.minimum:
            return f"{name} must be at least {self.minimum}"
        if self.maximum is not None and number > self.maximum:
            return f"{name} is {number}, at most {self.maximum}" + (f" ({self.source})" if self.source else "")
        return None


@dataclass(frozen=True)
class PositiveNumber:
    source: str = ""

    def problem(self, name: str, value: Any) -> str | None:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            number = Decimal(0)
        if isinstance(value, bool) or not number.is_finite() or number <= 0:
            return f"{name} must be a positive number" + (f" ({self.source})" if self.source else "")
        return None


@dataclass(frozen=True)
class MaxLength:
    maximum: int
    source: str = ""

    def problem(self, name: str, value: Any) -> str | None:
        if len(str(value)) > self.maximum:
            return f"{name} has {len(str(value))} characters, at most {self.maximum}" + (
                f" ({self.source})" if self.source else "")
        return None


Limit = WholeNumber | PositiveNumber | MaxLength

_DAYS = WholeNumber(minimum=0)
# system -> option -> limit. days_until_due is the draft's own option; the rest are each target's options.
OPTION_LIMITS: dict[str, dict[str, Limit]] = {
    "stripe": {
        "days_until_due": _DAYS,  # Stripe: an integer, "the number of days from when the invoice is created"
    },
    "quickbooks": {
        "days_until_due": _DAYS,
        "expiration_days": WholeNumber(minimum=0),
        "doc_number": MaxLength(21, "QuickBooks: DocNumber has at most 21 characters"),
        "exchange_rate": PositiveNumber("QuickBooks: home-currency units for one unit of the document's currency"),
    },
    "xero": {
        "days_until_due": _DAYS,
    },
    "zoho_books": {
        "days_until_due": WholeNumber(minimum=0, maximum=100,
                                      source='Zoho Books payment_terms: "Maximum value is 100 days."'),
        "exchange_rate": PositiveNumber("Zoho Books: base-currency units for one unit of the invoice's currency"),
    },
}
# Limits that apply to one document type only (Zoho: an estimate's validity is not payment_terms).
_DOCUMENT_EXCEPTIONS: dict[str, frozenset[str]] = {"zoho_books.estimate": frozenset({"days_until_due"})}


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "${" in value)


def option_problems(action_type: str, options: Mapping[str, Any]) -> list[str]:
    """What the target of action_type ("zoho_books.invoice", or the system alone: "zoho_books") would refuse
    in options; empty when nothing, or when the system has no declared limits."""
    system = action_type.partition(".")[0]
    limits = OPTION_LIMITS.get(system, {})
    skipped = _DOCUMENT_EXCEPTIONS.get(action_type, frozenset())
    problems: list[str] = []
    for name, limit in limits.items():
        value = options.get(name)
        if name in skipped or value is None or value == "" or _is_template(value):
            continue
        problem = limit.problem(name, value)
        if problem:
            problems.append(f"{system} option {problem}")
    return problems
