"""Placeholders in rule values, resolved from the run's context (RunState.context()). No code is executed.

Two spellings:

- `{{ path }}`: a dotted path into the context: `{{ record.amount.amountMicros }}`, `{{ company.name }}`,
  `{{ results.0.external_id }}`, `{{ dispatch.value }}`. Exact names.
- `${OBJECT.FIELD}`, Zoho Books' spelling (`${CONTACT.CONTACT_MOBILE_PHONE}` in seed 004). OBJECT is
  - the rule's object or RECORD: the record that triggered the run (`${OPPORTUNITY.NAME}`);
  - what the lookup fetched: `${COMPANY.NAME}`, `${CONTACT.EMAILS.PRIMARY_EMAIL}`;
  - EVENT, RULE, or DISPATCH (the previous action's result: `${DISPATCH.EXTERNAL_ID}`);
  - an action type: the latest earlier result of that type (`${INVOICE.ID}`, `${EXPRESSION.VALUE}`).
  Names match ignoring case and underscores (`CLOSE_DATE` finds `closeDate`); a field named after its
  object finds the plain field too (`${CONTACT.CONTACT_NAME}` is the contact's `name`). On a result, `ID` and
  `URL` are its external id and URL, and a name it does not have is looked up in its details
  (`${INVOICE.INVOICE_NUMBER}`).

A value that is one placeholder keeps the value's type (a number stays a number); placeholders inside text
are written as text (composite CRM fields readably: a full name as "Maya Chen", an amount as
"12500.00 USD"). A placeholder with no value in the run is a ConfigurationError; rules/validation.py rejects
unknown ones when the rule is saved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from billflow.errors import ConfigurationError
from billflow.money import minor_unit_exponent
from billflow.rules.paths import MISSING, get_path

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")
REFERENCE = re.compile(r"\$\{\s*([A-Za-z_]\w*(?:\.\w+)+)\s*\}")
_ANY = re.compile(f"{PLACEHOLDER.pattern}|{REFERENCE.pattern}")

# Roots of a ${...} reference that are not record or action-type names.
REFERENCE_ROOTS = frozenset({"record", "event", "rule", "dispatch"})
_RESULT_ALIASES = {"id": "external_id", "url": "external_url"}


def render(value: Any, context: dict[str, Any], escape: Callable[[str], str] | None = None) -> Any:
    """Strings that are one placeholder keep the value's type; mixed strings interpolate text.

    `escape` is applied to every interpolated value (html.escape for an HTML body); with it, every string
    renders as text.
    """
    if isinstance(value, dict):
        return {k: render(v, context, escape) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, escape) for v in value]
    if not isinstance(value, str):
        return value
    whole = _ANY.fullmatch(value.strip())
    if whole and escape is None:
        return _value(whole, context)
    quote = escape or (lambda text: text)
    return _ANY.sub(lambda m: quote(text_of(_value(m, context))), value)


def placeholders(value: Any) -> set[str]:
    """The `{{ path }}` paths in a value (nested in dicts and lists)."""
    return _found(PLACEHOLDER, value)


def references(value: Any) -> set[str]:
    """The `${OBJECT.FIELD}` references in a value (nested in dicts and lists), as written."""
    return _found(REFERENCE, value)


def normalise(name: str) -> str:
    """How ${...} names compare: case and underscores do not matter."""
    return name.replace("_", "").lower()


def resolve_reference(reference: str, context: dict[str, Any]) -> Any:
    """The value of `${OBJECT.FIELD...}` (without `${}`) in a run's context, or MISSING."""
    head, *fields = reference.split(".")
    base = _reference_root(head, context)
    if base is MISSING:
        return MISSING
    current = base
    for position, name in enumerate(fields):
        current = _field(current, name, head if position == 0 else fields[position - 1])
        if current is MISSING:
            return MISSING
    return current


def text_of(value: Any) -> str:
    """A value written into text: CRM composites readably, other structures as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        composite = _composite_text(value)
        if composite is not None:
            return composite
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


# --- resolution ------------------------------------------------------------------------------------
def _value(match: re.Match[str], context: dict[str, Any]) -> Any:
    path, reference = match.group(1), match.group(2)
    if path is not None:
        found = get_path(context, path)
        if found is MISSING:
            raise ConfigurationError(f"placeholder {{{{ {path} }}}} has no value in this run")
        return found
    found = resolve_reference(reference, context)
    if found is MISSING:
        raise ConfigurationError(f"placeholder ${{{reference}}} has no value in this run")
    return found


def _reference_root(head: str, context: dict[str, Any]) -> Any:
    name = normalise(head)
    event = context.get("event")
    object_name = event.get("object") if isinstance(event, Mapping) else None
    if name == "record" or (isinstance(object_name, str) and name == normalise(object_name)):
        return context.get("record", MISSING)
    for key, value in context.items():  # event, rule, dispatch, and what the lookup fetched
        if key != "results" and normalise(key) == name:
            return value
    for result in reversed(context.get("results") or []):  # an action type: its latest result
        if isinstance(result, Mapping) and normalise(str(result.get("action_type", ""))) == name:
            return result
    return MISSING


def _field(node: Any, name: str, owner: str) -> Any:
    if isinstance(node, list):
        return node[int(name)] if name.isdigit() and int(name) < len(node) else MISSING
    if not isinstance(node, Mapping):
        return MISSING
    if name in node:
        return node[name]
    wanted = normalise(name)
    for key, value in node.items():
        if normalise(str(key)) == wanted:
            return value
    if "action_type" in node:  # an action's result
        alias = _RESULT_ALIASES.get(wanted)
        if alias and alias in node:
            return node[alias]
        details = node.get("details")
        if isinstance(details, Mapping):
            found = _field(details, name, owner)
            if found is not MISSING:
                return found
    prefix = normalise(owner)
    if prefix and wanted.startswith(prefix) and len(wanted) > len(prefix):  # CONTACT.CONTACT_NAME -> name
        return _field(node, wanted[len(prefix):], "")
    return MISSING


def _found(pattern: re.Pattern[str], value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_found(pattern, v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_found(pattern, v) for v in value)) if value else set()
    return set(pattern.findall(value)) if isinstance(value, str) else set()


# --- composite CRM fields as text (Twenty's shapes) ------------------------------------------------
def _composite_text(value: Mapping[str, Any]) -> str | None:
    if "firstName" in value or "lastName" in value:
        return " ".join(str(value.get(k) or "") for k in ("firstName", "lastName")).strip()
    if "amountMicros" in value:
        return _amount_text(value.get("amountMicros"), value.get("currencyCode"))
    if "primaryEmail" in value:
        return str(value.get("primaryEmail") or "")
    if "primaryLinkUrl" in value:
        return str(value.get("primaryLinkUrl") or "")
    if "primaryPhoneNumber" in value:
        code = value.get("primaryPhoneCallingCode") or ""
        return f"{code} {value.get('primaryPhoneNumber') or ''}".strip()
    address_keys = ("addressStreet1", "addressStreet2", "addressCity", "addressPostcode", "addressState",
                    "addressCountry")
    if any(k in value for k in address_keys):
        return ", ".join(str(value[k]) for k in address_keys if value.get(k))
    return None


def _amount_text(micros: Any, currency: Any) -> str:
    if micros is None or isinstance(micros, bool):
        return ""
    code = str(currency or "")
    exponent = minor_unit_exponent(code) if code else 2
    try:
        amount = (Decimal(str(micros)) / Decimal(1_000_000)).quantize(Decimal(1).scaleb(-exponent))
    except ArithmeticError:
        return str(micros)
    return f"{amount} {code}".strip()
