"""Rule documents are checked before they are stored, each problem with its field."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from billflow.logic.validate import validate_rule

GOOD: dict[str, Any] = {
    "id": "won-to-stripe",
    "source": "twenty",
    "object": "opportunity",
    "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
    "actions": [
        {"type": "stripe.invoice", "connection": "stripe-main", "write_back_field": "invoiceId"},
        {"type": "crm.field_update", "field": "note", "value": "Invoiced {{ dispatch.external_id }}"},
    ],
}


def problems(doc: dict[str, Any]) -> list[str]:
    return [str(p) for p in validate_rule(doc)[1]]


def test_a_good_rule_has_no_problems() -> None:
    rule, found = validate_rule(GOOD)
    assert found == []
    assert rule is not None and rule.blocks[0].actions[1].type == "field_update"


def test_bad_pattern_is_reported_with_position() -> None:
    found = problems({**GOOD, "pattern": "1 AND 2"})
    assert found == ["rule won-to-stripe: blocks.0.pattern: pattern '1 AND 2', position 7: "
                     "criterion 2 does not exist (1..1)"]


def test_unknown_comparator_and_missing_value() -> None:
    found = problems({**GOOD, "criteria": [{"field": "a", "comparator": "resembles", "value": 1},
                                           {"field": "b", "comparator": "equals"}]})
    assert any("unknown comparator 'resembles'" in p for p in found)
    assert any("blocks.0.criteria.1.value: equals needs a value" in p for p in found)


def test_unknown_placeholder_is_an_error_when_saved() -> None:
    doc = {**GOOD, "actions": [{"type": "crm.field_update", "field": "x", "value": "{{ invoice.id }}"}]}
    assert any("unknown placeholder {{ invoice.id }}" in p for p in problems(doc))


def test_schema_errors_name_the_field() -> None:
    found = problems({**GOOD, "id": "Bad Id", "actions": [{"type": "teleport"}]})
    assert any(p.startswith("rule Bad Id: id:") for p in found)
    assert any("actions" in p and "unknown action type 'teleport'" in p for p in found)


def test_document_action_needs_a_connection() -> None:
    found = problems({**GOOD, "actions": [{"type": "invoice"}]})
    assert found == ["rule won-to-stripe: blocks.0.actions.0: a document action needs a connection (or a system)"]


def test_the_rules_engine_checks_actions_with_the_types_its_caller_gives() -> None:
    """Given the rules engine alone, when a rule is validated with the caller's action types, then each
    action is checked by the type the caller passed, and neither actions nor connectors are imported."""
    script = f"""
import sys
from billflow.rules.validation import validate_rule

class Strict:
    def check(self, action):
        return [("options", "checked by " + action.type)]

rule, problems = validate_rule({GOOD!r}, lambda kind: Strict())
assert rule is not None
print(sorted(str(p) for p in problems))
print(sorted(m for m in sys.modules if m.startswith(("billflow.actions", "billflow.connectors"))))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    checked, loaded = out.splitlines()
    assert "rule won-to-stripe: blocks.0.actions.1.options: checked by field_update" in checked
    assert loaded == "[]"


def test_a_target_limit_is_refused_when_the_rule_is_saved() -> None:
    """Zoho Books: payment_terms "Maximum value is 100 days": 120 is refused at validation, 100 is accepted."""
    def zoho(days: int) -> dict[str, Any]:
        return {**GOOD, "actions": [{"type": "zoho_books.invoice", "connection": "zoho-main",
                                     "options": {"days_until_due": days}}]}

    assert any("100" in p and "days_until_due" in p for p in problems(zoho(120))), problems(zoho(120))
    assert problems(zoho(100)) == []
