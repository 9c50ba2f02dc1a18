"""From a Twenty opportunity and its lookup to a target-neutral invoice draft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from billflow.actions.drafts import draft_for
from billflow.errors import ConfigurationError
from billflow.models.rules import Action

EVENTS = Path(__file__).resolve().parents[2] / "events" / "twenty"


def won_record() -> dict:  # type: ignore[type-arg]
    return json.loads((EVENTS / "opportunity-won.json").read_text())["record"]


COMPANY = {
    "id": "8fd9c244-1456-454b-b624-3f30b44e1144", "name": "Acme Robotics", "stripeCustomerId": "cus_123",
    "address": {"addressStreet1": "1 Main St", "addressCity": "Springfield", "addressPostcode": "12345",
                "addressCountry": "United States"},
}
CONTACT = {"name": {"firstName": "Ada", "lastName": "Lovelace"}, "emails": {"primaryEmail": "ada@acme.test"}}


def test_the_draft_bills_the_company_for_the_opportunity_amount() -> None:
    action = Action.model_validate({"type": "stripe.invoice", "connection": "stripe-main",
                                    "options": {"days_until_due": 14, "customer_id_field": "stripeCustomerId"}})
    draft = draft_for(action, won_record(), {"company": COMPANY, "contact": CONTACT}, "twenty")
    assert draft.customer.name == "Acme Robotics"
    assert draft.customer.email == "ada@acme.test"
    assert (draft.customer.first_name, draft.customer.last_name) == ("Ada", "Lovelace")
    assert draft.customer.external_id == "cus_123"
    assert draft.customer.address.country == "US"
    assert draft.currency == "usd"
    assert [(line.unit_amount_minor, line.quantity) for line in draft.lines] == [(1_250_000, 1)]
    assert draft.days_until_due == 14
    assert draft.metadata["crm_record_id"] == won_record()["id"]
    assert "customer_id_field" not in draft.options


def test_without_currency_the_draft_is_refused() -> None:
    record = {**won_record(), "amount": {"amountMicros": 5, "currencyCode": None}}
    with pytest.raises(ConfigurationError, match="currency"):
        draft_for(Action(type="invoice", system="stripe"), record, {}, "twenty")


def test_without_company_the_opportunity_name_bills() -> None:
    draft = draft_for(Action(type="invoice", system="stripe"), won_record(), {}, "twenty")
    assert draft.customer.name == won_record()["name"]
    assert draft.customer.address.country is None
