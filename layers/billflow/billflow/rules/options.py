"""The options document and field-update actions read, so a rule naming any other is refused when saved.

Notification, email alert, webhook and expression actions check their own options (their check()); these
are the rest. A document action's options are read in two places: logic/drafts.py (the draft's mapping),
and the target's connector (the draft's `options`). tests/unit/test_action_options.py reads those modules'
source to keep these lists equal to what the code reads.
"""

from __future__ import annotations

from billflow.models.rules import DOCUMENT_ACTIONS, Action

# logic/drafts.py: how the draft is built from the record.
DRAFT_OPTIONS = frozenset({"description", "currency", "customer_id_field", "days_until_due", "memo", "reference",
                           "require_line_items"})
# Each connector's draft options (its module docstring says what they do).
SYSTEM_OPTIONS: dict[str, frozenset[str]] = {
    "stripe": frozenset({"finalize", "send", "tax_rates", "tax_rates_on"}),
    "xero": frozenset({"status", "date", "tax_type", "tax_type_exempt", "line_amount_types", "title"}),
    "zoho_books": frozenset({"date", "tax_id", "send", "exchange_rate"}),
    # A rule option overrides the connection setting of the same name (connectors/quickbooks.py _option).
    "quickbooks": frozenset({
        "amounts_include_tax", "default_item_id", "default_tax_code", "deposit_account_id", "doc_number",
        "exchange_rate",
        "expense_account_id", "expiration_days", "income_account_id", "item_id", "non_taxable_tax_code",
        "payment_account_id", "payment_method_id", "payment_type", "refund_account_id", "sales_term_id",
        "tax_code", "txn_date", "vendor_id",
    }),
}
# Connection settings people put in a rule by mistake: they are read from the connection only.
CONNECTION_SETTINGS = frozenset({"create_products", "customer_matching", "item_type", "tax_codes_required",
                                 "minor_version", "realm_id", "base_url", "region", "country", "app_url"})


def known_options(action: Action) -> frozenset[str] | None:
    """The options an action of this type (and system) reads; None for types that check their own."""
    if action.type == "field_update":
        return frozenset()
    if action.type not in DOCUMENT_ACTIONS:
        return None
    if action.system in SYSTEM_OPTIONS:
        return DRAFT_OPTIONS | SYSTEM_OPTIONS[action.system]
    # Only a connection named: its type is known when the run reads it, so any target's options may be meant.
    return DRAFT_OPTIONS.union(*SYSTEM_OPTIONS.values())


def option_problems(action: Action) -> list[tuple[str, str]]:
    """(where, what) for each option the action's type does not read."""
    known = known_options(action)
    if known is None:
        return []
    problems: list[tuple[str, str]] = []
    if "require_line_items" in action.options and not isinstance(action.options["require_line_items"], bool):
        problems.append(("options.require_line_items", "must be true or false"))
    for name in sorted(set(action.options) - known):
        if not known:
            problems.append((f"options.{name}", f"{action.type} takes no options (give field and value)"))
            continue
        target = f"{action.system} {action.type}" if action.system else action.type
        hint = (" (a connection setting: set it on the connection, not in the rule)"
                if name in CONNECTION_SETTINGS else "")
        problems.append((f"options.{name}", f"unknown {target} option{hint}; known: {', '.join(sorted(known))}"))
    return problems
