"""Issue 8 §8 and §2 at validation: unknown action options are refused with the known ones (and the known
ones are what the code reads); on_failure takes what an error branch can do and may read {{ failure.* }};
once_per is record or transition."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import billflow
import pytest
from billflow.logic.validate import validate_rule
from billflow.rules.options import DRAFT_OPTIONS, SYSTEM_OPTIONS

PACKAGE = Path(billflow.__file__).parent
RULE: dict[str, Any] = {
    "id": "won-to-books", "source": "twenty", "object": "opportunity",
    "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
    "actions": [{"type": "quickbooks.invoice", "connection": "qbo", "options": {"doc_number": "{{ record.name }}"}}],
}
# How each module reads a rule option (a draft's options, or QuickBooks' option-or-connection-setting).
READS = re.compile(r'(?:options\.get\(|options\[|_option\(draft, (?:connection, )?|_flag\(draft, |'
                   r'_text_option\(draft, |_flag_option\(draft, |_int_option\(draft, )"([a-z_]+)"')
CHOSEN = re.compile(r'_option\(draft, "([a-z_]+)" if [\w.]+ else "([a-z_]+)"')  # one of two options


def options_read(path: Path) -> set[str]:
    source = path.read_text()
    return set(READS.findall(source)) | {name for pair in CHOSEN.findall(source) for name in pair}


def problems(doc: dict[str, Any]) -> list[str]:
    return [str(p) for p in validate_rule(doc)[1]]


def with_action(**action: Any) -> dict[str, Any]:
    return {**RULE, "actions": [action]}


def test_create_products_in_a_rule_is_refused_with_the_known_options() -> None:
    found = problems(with_action(type="quickbooks.invoice", connection="qbo", options={"create_products": True}))
    assert len(found) == 1
    assert found[0].startswith("rule won-to-books: blocks.0.actions.0.options.create_products: unknown quickbooks "
                               "invoice option (a connection setting: set it on the connection, not in the rule); "
                               "known: amounts_include_tax, currency, customer_id_field, ")


def test_a_document_option_of_another_target_is_refused_when_the_system_is_named() -> None:
    [found] = problems(with_action(type="stripe.invoice", connection="s", options={"doc_number": "7"}))
    assert "options.doc_number: unknown stripe invoice option; known: currency, customer_id_field, " in found
    assert "finalize" in found and "txn_date" not in found
    # Named by its connection only, the target is known at run time: any target's option may be meant.
    either = {"doc_number": "7", "finalize": False}
    assert problems(with_action(type="invoice", connection="books", options=either)) == []
    assert problems(with_action(type="invoice", connection="books", options={"finalise": False}))


def test_field_update_takes_no_options() -> None:
    [found] = problems(with_action(type="crm.field_update", field="note", value="x", options={"mode": "append"}))
    assert found.endswith("options.mode: field_update takes no options (give field and value)")


@pytest.mark.parametrize("system", sorted(SYSTEM_OPTIONS))
def test_the_known_options_are_the_ones_the_code_reads(system: str) -> None:
    assert options_read(PACKAGE / "connectors" / f"{system}.py") == set(SYSTEM_OPTIONS[system])


def test_the_draft_options_are_the_ones_the_draft_reads() -> None:
    assert options_read(PACKAGE / "actions" / "drafts.py") == set(DRAFT_OPTIONS)


def test_on_failure_may_read_the_failure_and_the_rest_of_the_rule_may_not() -> None:
    alert = {"type": "notification", "options": {"message": "{{ failure.status }}: {{ failure.reason }}"}}
    assert problems({**RULE, "on_failure": [alert]}) == []
    found = problems({**RULE, "actions": [*RULE["actions"], alert]})
    assert len(found) == 2 and all("unknown placeholder {{ failure." in p for p in found)


def test_on_failure_makes_no_documents() -> None:
    [found] = problems({**RULE, "on_failure": [{"type": "stripe.invoice", "connection": "s"}]})
    assert found.startswith("rule won-to-books: on_failure: ")
    assert "on_failure runs email_alert, field_update, notification, webhook; not invoice" in found


def test_once_per_is_record_by_default_or_transition() -> None:
    rule, found = validate_rule(RULE)
    assert found == [] and rule is not None and rule.once_per == "record"
    assert validate_rule({**RULE, "once_per": "transition"})[0].once_per == "transition"  # type: ignore[union-attr]
    assert any("once_per" in p for p in problems({**RULE, "once_per": "day"}))
