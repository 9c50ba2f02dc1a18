"""Placeholders in action options: `{{ path }}` and Zoho's `${OBJECT.FIELD}`, at run time and when saved.

`run_state()` here builds the run of a won Twenty opportunity (the sample webhook and workspace in events/twenty)
that the other action tests use.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from billflow.errors import ConfigurationError
from billflow.logic.validate import validate_rule
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.models.run import LogKeys, RunState
from billflow.rules.paths import MISSING
from billflow.rules.templates import placeholders, references, render, resolve_reference, text_of

EVENTS = Path(__file__).resolve().parents[2] / "events" / "twenty"
WON = json.loads((EVENTS / "opportunity-won.json").read_text())
WORKSPACE = json.loads((EVENTS / "workspace" / "records.json").read_text())
COMPANY: dict[str, Any] = WORKSPACE["companies"][0]
PERSON: dict[str, Any] = WORKSPACE["people"][0]
RECORD: dict[str, Any] = WON["record"]
INVOICE_RESULT = {"index": 0, "action_type": "invoice", "status": "sent", "external_id": "in_1Q2w3E",
                  "external_url": "https://invoice.stripe.com/i/in_1Q2w3E", "details": {"invoice_number": "INV-0042"}}


def run_state(
    *actions: dict[str, Any], results: list[dict[str, Any]] | None = None, lookup: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None, tenant: str = "acme", rule_name: str = "Won deals",
) -> RunState:
    """A run of rule `won-deal` on the won opportunity, after the lookup (company and point of contact)."""
    record = RECORD if record is None else record
    now = datetime(2026, 3, 18, 14, 22, 5, tzinfo=UTC)
    event = CrmEvent(event_id="evt-1", tenant=tenant, source="twenty", object="opportunity", action="updated",
                     record_id=record["id"], record=record, changed_fields=["stage"], occurred_at=now,
                     received_at=now)
    rule = Rule.model_validate({
        "id": "won-deal", "name": rule_name, "source": "twenty", "object": "opportunity",
        "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
        "actions": list(actions) or [{"type": "notification", "options": {"message": "won"}}],
    })
    return RunState(
        tenant=tenant, execution_key="acme:won-deal:opp:stage", execution_name="won-deal-1",
        transition="stage:CUSTOMER", rule=rule, actions=rule.blocks[0].actions, event=event,
        log=LogKeys(rule_key="acme#won-deal", record_key="acme#twenty#opportunity#1", expires_at="0"),
        results=list(results or []),
        lookup={"company": COMPANY, "contact": PERSON} if lookup is None else lookup,
    )


@pytest.fixture
def context() -> dict[str, Any]:
    return run_state(results=[INVOICE_RESULT]).context()


# --- ${OBJECT.FIELD} at run time -------------------------------------------------------------------
@pytest.mark.parametrize(("template", "expected"), [
    ("${OPPORTUNITY.NAME}", RECORD["name"]),
    ("${opportunity.name}", RECORD["name"]),
    ("${Opportunity.Close_Date}", "2026-03-31T00:00:00.000Z"),
    ("${RECORD.STAGE}", "CUSTOMER"),
    ("${OPPORTUNITY.AMOUNT.AMOUNT_MICROS}", 12_500_000_000),  # one placeholder keeps its type
    ("${COMPANY.NAME}", "Acme Robotics"),
    ("${COMPANY.ADDRESS.ADDRESS_CITY}", "San Francisco"),
    ("${CONTACT.EMAILS.PRIMARY_EMAIL}", "maya.chen@acme-robotics.example.com"),
    ("${CONTACT.JOB_TITLE}", "VP Operations"),
    ("${INVOICE.ID}", "in_1Q2w3E"),
    ("${INVOICE.URL}", "https://invoice.stripe.com/i/in_1Q2w3E"),
    ("${INVOICE.INVOICE_NUMBER}", "INV-0042"),  # from the result's details
    ("${DISPATCH.EXTERNAL_ID}", "in_1Q2w3E"),
    ("${RULE.NAME}", "Won deals"),
    ("${EVENT.OBJECT}", "opportunity"),
])
def test_zoho_style_references_resolve_from_record_lookup_and_results(
    context: dict[str, Any], template: str, expected: Any
) -> None:
    assert render(template, context) == expected


def test_a_field_named_after_its_object_finds_the_plain_field(context: dict[str, Any]) -> None:
    # Seed 004's ${CONTACT.CONTACT_NAME}: the contact's name, a Twenty full name written as text.
    assert render("Dear ${CONTACT.CONTACT_NAME},", context) == "Dear Maya Chen,"
    assert render("${OPPORTUNITY.OPPORTUNITY_NAME}", context) == RECORD["name"]


def test_the_latest_result_of_a_type_wins() -> None:
    later = {**INVOICE_RESULT, "index": 2, "external_id": "in_second"}
    webhook = {"index": 1, "action_type": "webhook", "external_id": "delivery-7", "details": {}}
    context = run_state(results=[INVOICE_RESULT, webhook, later]).context()
    assert render("${INVOICE.ID} ${WEBHOOK.ID} ${DISPATCH.ID}", context) == "in_second delivery-7 in_second"


def test_both_spellings_mix_in_one_text(context: dict[str, Any]) -> None:
    text = "Invoice ${INVOICE.ID} for {{ company.name }}: ${OPPORTUNITY.AMOUNT} due {{ record.closeDate }}"
    assert render(text, context) == (
        "Invoice in_1Q2w3E for Acme Robotics: 12500.00 USD due 2026-03-31T00:00:00.000Z")


def test_composites_are_written_readably_in_text(context: dict[str, Any]) -> None:
    assert render("${COMPANY.ADDRESS}", context) == COMPANY["address"]  # alone: the value itself
    assert render("at ${COMPANY.ADDRESS}", context) == (
        "at 500 Howard Street, Suite 300, San Francisco, 94105, CA, United States")
    assert render("call ${CONTACT.PHONES}", context) == "call +1 4155550142"
    assert render("see ${COMPANY.DOMAIN_NAME}", context) == "see https://acme-robotics.example.com"
    assert text_of({"amountMicros": 5_000_000, "currencyCode": "JPY"}) == "5 JPY"
    assert text_of({"amountMicros": 1_234_567, "currencyCode": "KWD"}) == "1.235 KWD"
    assert text_of({"a": [1, True]}) == '{"a":[1,true]}'
    assert text_of(True) == "true"
    assert text_of(None) == ""


def test_escape_applies_to_every_interpolated_value() -> None:
    context = run_state(record={**RECORD, "name": "<script>x</script> & co"}).context()
    assert render("<b>${OPPORTUNITY.NAME}</b>", context, escape=html.escape) == (
        "<b>&lt;script&gt;x&lt;/script&gt; &amp; co</b>")
    # One placeholder alone is text too when escaping: an HTML body is never a raw value.
    assert render("{{ record.name }}", context, escape=html.escape) == "&lt;script&gt;x&lt;/script&gt; &amp; co"


def test_missing_values_are_configuration_errors_naming_the_placeholder(context: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"\$\{OPPORTUNITY.NO_SUCH_FIELD\}"):
        render("${OPPORTUNITY.NO_SUCH_FIELD}", context)
    with pytest.raises(ConfigurationError, match=r"\$\{ESTIMATE.ID\}"):
        render("${ESTIMATE.ID}", context)  # no estimate ran
    assert resolve_reference("NOTHING.HERE", context) is MISSING


def test_text_that_only_looks_like_a_placeholder_is_left_alone(context: dict[str, Any]) -> None:
    assert render("costs $5 or ${PRICE} or %username%", context) == "costs $5 or ${PRICE} or %username%"


def test_references_and_placeholders_are_found_in_nested_values() -> None:
    value = {"a": ["${OPPORTUNITY.NAME}", {"b": "x ${INVOICE.ID} {{ record.name }}"}], "c": 3}
    assert references(value) == {"OPPORTUNITY.NAME", "INVOICE.ID"}
    assert placeholders(value) == {"record.name"}


# --- when the rule is saved ------------------------------------------------------------------------
def problems(*actions: dict[str, Any], on_failure: list[dict[str, Any]] | None = None) -> list[str]:
    doc: dict[str, Any] = {"id": "won-deal", "source": "twenty", "object": "opportunity",
                           "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
                           "actions": list(actions)}
    if on_failure is not None:
        doc["on_failure"] = on_failure
    return [str(p) for p in validate_rule(doc)[1]]


NOTE = {"type": "notification", "options": {"message": "hello"}}


def test_known_references_pass() -> None:
    assert problems(
        {"type": "stripe.invoice", "connection": "stripe-main"},
        {"type": "notification", "options": {"message": "${OPPORTUNITY.NAME} ${COMPANY.NAME} ${CONTACT.NAME} "
                                                        "${INVOICE.ID} ${DISPATCH.EXTERNAL_ID} ${RECORD.STAGE}"}},
    ) == []


def test_an_unknown_object_is_refused_when_saved() -> None:
    found = problems({"type": "notification", "options": {"message": "${DEAL.NAME}"}})
    assert len(found) == 1
    assert found[0].startswith("rule won-deal: blocks.0.actions.0: unknown placeholder ${DEAL.NAME}")


def test_a_result_read_before_its_action_runs_is_refused() -> None:
    found = problems({"type": "notification", "options": {"message": "${INVOICE.ID}"}},
                     {"type": "stripe.invoice", "connection": "stripe-main"})
    assert found == ["rule won-deal: blocks.0.actions.0: placeholder ${INVOICE.ID} reads the result of an earlier "
                     "invoice action, and no invoice action comes before this one"]


def test_dispatch_in_the_first_action_is_refused() -> None:
    assert any("${DISPATCH.ID} in the rule's first action" in p
               for p in problems({"type": "notification", "options": {"message": "${DISPATCH.ID}"}}))
    assert any("{{ dispatch... }}" in p
               for p in problems({"type": "notification", "options": {"message": "{{ dispatch.external_id }}"}}))


def test_failure_actions_may_read_any_action_of_the_rule() -> None:
    assert problems({"type": "stripe.invoice", "connection": "stripe-main"}, on_failure=[
        {"type": "notification", "options": {"message": "failed after ${INVOICE.ID} {{ dispatch.status }}"}},
    ]) == []
    found = problems(NOTE, on_failure=[{"type": "notification", "options": {"message": "{{ nowhere.x }}"}}])
    assert any(p.startswith("rule won-deal: on_failure.0: unknown placeholder {{ nowhere.x }}") for p in found)


@pytest.mark.parametrize("action", [
    {"type": "webhook", "options": {"url": "https://h.example/${DEAL.ID}"}},
    {"type": "webhook", "options": {"url": "https://h.example", "query": {"q": "${DEAL.ID}"}}},
    {"type": "webhook", "options": {"url": "https://h.example", "headers": {"X-Deal": "{{ deal.id }}"}}},
    {"type": "webhook", "options": {"url": "https://h.example", "body": {"nested": ["${DEAL.ID}"]}}},
    {"type": "email_alert", "options": {"subject": "${DEAL.NAME}", "text": "t", "to": ["a@b.example"]}},
    {"type": "email_alert", "options": {"subject": "s", "html": "<p>{{ deal.name }}</p>", "to": ["a@b.example"]}},
    {"type": "notification", "options": {"message": "m", "title": "${DEAL.NAME}"}},
    {"type": "field_update", "field": "note", "value": "${DEAL.NAME}"},
])
def test_every_templated_option_is_checked(action: dict[str, Any]) -> None:
    found = problems(action)
    assert any("unknown placeholder" in p for p in found), found


def test_expression_options_are_jsonata_not_templates() -> None:
    # `${` and `{{` mean nothing to JSONata's parser here; they are not read as placeholders.
    assert problems({"type": "expression", "options": {"expression": "$string(record.amount)",
                                                       "fields": {"note": "'{{ not a placeholder }}'"}}}) == []
