"""Issue 11: the lookup's line items (the shape every CRM connector answers) become the draft's lines, a
rule can require them, and the rule engine knows such a rule is decided after Lookup."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from billflow.actions.drafts import LINE_ITEM_KEYS, draft_for, line_items_from_lookup
from billflow.errors import ConfigurationError
from billflow.logic.validate import validate_rule
from billflow.models.documents import LineItem
from billflow.models.events import CrmEvent
from billflow.models.rules import Action, Rule
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import evaluate_rule

EVENTS = Path(__file__).resolve().parents[2] / "events" / "twenty"
WON = json.loads((EVENTS / "opportunity-won.json").read_text())
COMPANY = {"id": "c1", "name": "Acme Robotics"}


def item(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(LINE_ITEM_KEYS)
    return base | {"name": "Widget", "quantity": "1", "unit_price": "10"} | fields


def test_line_items_become_lines_in_minor_units() -> None:
    lines = line_items_from_lookup([
        item(name="Robot arm", sku="ARM-1", quantity="3", unit_price="1250.505", discount_percent="12.5",
             taxable=True, currency="USD", term="P12M"),
        item(name="Setup", description="On site", unit_price="800", taxable=False, discount_amount="50.00"),
    ], "usd")
    arm, setup = lines
    assert (arm.description, arm.product_name, arm.sku, arm.quantity, arm.unit_amount_minor) == \
        ("Robot arm", "Robot arm", "ARM-1", 3.0, 125051)  # half up, and logged
    assert arm.discount_percent == Decimal("12.5") and arm.taxable is True and arm.term == "P12M"
    assert arm.discount_minor() == 46894  # 12.5% of 3 x 1250.51, half up
    assert (setup.description, setup.product_name, setup.discount_amount_minor, setup.taxable) == \
        ("On site", "Setup", 5000, False)


def test_a_zero_decimal_currency_has_no_minor_digits() -> None:
    [line] = line_items_from_lookup([item(unit_price="1500", quantity="2")], "jpy")
    assert line.unit_amount_minor == 1500 and line.gross_minor() == 3000


@pytest.mark.parametrize(("bad", "message"), [
    (item(currency="EUR"), "priced in EUR"),
    (item(unit_price="ten"), "unit_price 'ten' is not a number"),
    (item(quantity=None), "quantity"),
    (item(name="", description=None), "neither a name nor a description"),
    (item(discount_percent="120"), "less than or equal to 100"),
    (item(discount_percent="10", discount_amount="1"), "not both"),
    (item(discount_amount="11"), "larger than the line"),
])
def test_a_line_item_billflow_cannot_bill_says_why(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        line_items_from_lookup([bad], "usd")


def test_the_draft_takes_the_line_items_and_without_them_the_amount() -> None:
    action = Action.model_validate({"type": "xero.invoice", "connection": "x"})
    with_items = draft_for(action, WON["record"], {"company": COMPANY, "line_items": [item(), item(name="B")]},
                           "twenty")
    assert [line.description for line in with_items.lines] == ["Widget", "B"]
    without = draft_for(action, WON["record"], {"company": COMPANY, "line_items": []}, "twenty")
    assert [(line.description, line.unit_amount_minor) for line in without.lines] == [(WON["record"]["name"],
                                                                                        1_250_000)]


def test_a_draft_that_requires_line_items_never_falls_back_to_the_amount() -> None:
    action = Action.model_validate({"type": "xero.invoice", "connection": "x",
                                    "options": {"require_line_items": True}})
    with pytest.raises(ConfigurationError, match="require_line_items"):
        draft_for(action, WON["record"], {"company": COMPANY}, "twenty")
    assert "require_line_items" not in draft_for(action, WON["record"], {"company": COMPANY, "line_items": [item()]},
                                                 "twenty").options


def test_a_line_discount_is_a_percent_or_an_amount() -> None:
    line = LineItem(description="x", quantity=2.5, unit_amount_minor=333, discount_percent=Decimal(10))
    assert line.gross_minor() == Decimal("832.5") and line.discount_minor() == 83 and line.discounted
    assert LineItem(description="y", unit_amount_minor=100).discount_minor() == 0


RULE: dict[str, Any] = {
    "id": "won", "source": "twenty", "object": "opportunity",
    "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
    "actions": [{"type": "stripe.invoice", "connection": "s", "options": {"require_line_items": True}}],
}


def test_a_rule_that_requires_line_items_is_decided_after_lookup() -> None:
    event = CrmEvent.model_validate({"event_id": "e1", "tenant": "t", "source": "twenty",
                                     "object": "opportunity", "action": "updated", "record_id": WON["record"]["id"],
                                     "record": WON["record"], "changed_fields": ["stage"],
                                     "occurred_at": WON["eventDate"], "received_at": WON["eventDate"]})
    changes = {"stage": FieldChange("stage", "PROPOSAL", "CUSTOMER", 2)}
    assert evaluate_rule(Rule.model_validate(RULE), event, changes).needs_lookup is True
    plain = {**RULE, "actions": [{"type": "stripe.invoice", "connection": "s"}]}
    assert evaluate_rule(Rule.model_validate(plain), event, changes).needs_lookup is False


def test_require_line_items_is_a_known_boolean_option() -> None:
    assert validate_rule(RULE)[1] == []
    bad = {**RULE, "actions": [{"type": "stripe.invoice", "connection": "s", "options": {"require_line_items": "yes"}}]}
    [problem] = validate_rule(bad)[1]
    assert "require_line_items: must be true or false" in str(problem)
