"""Email alerts: recipients from record fields and extra addresses, templates, the SES request."""

from __future__ import annotations

from typing import Any

import billflow.settings
import pytest
from billflow.actions import get_action_type
from billflow.actions.email_alert import EmailAlertAction, addresses_in, field_value
from billflow.errors import ConfigurationError

from tests.unit.test_actions_placeholders import INVOICE_RESULT, PERSON, RECORD, run_state

MAYA = "maya.chen@acme-robotics.example.com"
SENDER = "billflow <billing@billflow.example.com>"


@pytest.fixture(autouse=True)
def sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SES_FROM_ADDRESS", SENDER)
    monkeypatch.delenv("SES_CONFIGURATION_SET", raising=False)
    billflow.settings.get_settings.cache_clear()


def rendered(options: dict[str, Any], **state: Any) -> dict[str, Any]:
    run = run_state({"type": "email_alert", "options": options}, **state)
    return EmailAlertAction().render(run.actions[0], run)


def alert(**options: Any) -> dict[str, Any]:
    return {"subject": "Won: ${OPPORTUNITY.NAME}", "text": "Hello {{ contact.name.firstName }}", **options}


def test_the_registry_gives_this_type() -> None:
    assert isinstance(get_action_type("email_alert"), EmailAlertAction)


@pytest.mark.parametrize("path", [
    "pointOfContact.emails.primaryEmail",  # through the record's relation to what the lookup fetched
    "contact.emails.primaryEmail",          # a context path
    "contact.emails",                       # Twenty's Emails field: its primary address
    "CONTACT.EMAILS.PRIMARY_EMAIL",         # Zoho's spelling
])
def test_recipient_fields_resolve_from_the_run(path: str) -> None:
    assert rendered(alert(recipient_fields=[path]))["to"] == [MAYA]


def test_a_record_field_holding_addresses() -> None:
    record = {**RECORD, "billingEmails": "ap@acme.example.com; finance@acme.example.com", "owner": None}
    request = rendered(alert(recipient_fields=["billingEmails", "owner", "missing.field"]), record=record)
    assert request["to"] == ["ap@acme.example.com", "finance@acme.example.com"]


def test_extra_addresses_join_deduplicated_and_in_order() -> None:
    request = rendered(alert(recipient_fields=["pointOfContact.emails.primaryEmail"],
                             to=["sales@billflow.example.com", MAYA.upper()],
                             cc=["sales@billflow.example.com", "cfo@billflow.example.com"],
                             bcc=["audit@billflow.example.com", "cfo@billflow.example.com"],
                             reply_to=["{{ contact.emails.primaryEmail }}"]))
    assert request["to"] == [MAYA, "sales@billflow.example.com"]
    assert request["cc"] == ["cfo@billflow.example.com"]
    assert request["bcc"] == ["audit@billflow.example.com"]
    assert request["reply_to"] == [MAYA]


def test_templates_render_with_html_escaped() -> None:
    record = {**RECORD, "name": "Fleet <b>&</b> more"}
    request = rendered({"subject": "Invoice ${INVOICE.ID}\nfor ${OPPORTUNITY.NAME}",
                        "text": "Dear ${CONTACT.CONTACT_NAME}, invoice ${INVOICE.ID} for ${OPPORTUNITY.AMOUNT}.",
                        "html": "<p>Dear ${CONTACT.CONTACT_NAME}: <i>${OPPORTUNITY.NAME}</i></p>",
                        "to": ["sales@billflow.example.com"]}, record=record, results=[INVOICE_RESULT])
    assert request == {
        "from": SENDER, "to": ["sales@billflow.example.com"], "cc": [], "bcc": [], "reply_to": [],
        "subject": "Invoice in_1Q2w3E for Fleet <b>&</b> more",  # one line; a subject is not HTML
        "text": "Dear Maya Chen, invoice in_1Q2w3E for 12500.00 USD.",
        "html": "<p>Dear Maya Chen: <i>Fleet &lt;b&gt;&amp;&lt;/b&gt; more</i></p>",
    }


def test_no_recipients_configured_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="an email alert needs recipients"):
        rendered({"subject": "s", "text": "t"})


def test_no_recipient_in_this_run_is_a_configuration_error_saying_why() -> None:
    lookup = {"company": None, "contact": {**PERSON, "emails": {"primaryEmail": "not an address"}}}
    with pytest.raises(ConfigurationError, match=r"recipient_fields \(pointOfContact.emails.primaryEmail\) hold no "
                                                 r"address \(not addresses: not an address\)"):
        rendered(alert(recipient_fields=["pointOfContact.emails.primaryEmail"]), lookup=lookup)


def test_a_field_address_that_is_not_one_is_skipped_and_listed() -> None:
    record = {**RECORD, "ccList": ["ok@acme.example.com", "nonsense"]}
    request = rendered(alert(recipient_fields=["ccList"]), record=record)
    assert request["to"] == ["ok@acme.example.com"]
    assert request["skipped"] == ["nonsense"]


def test_a_bad_extra_address_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"email alert to: 'Acme Robotics - Fleet analytics platform' is "
                                                 r"not an email address"):
        rendered(alert(to=["{{ record.name }}"]))  # the name has a comma: two "addresses", neither one


def test_a_body_is_required() -> None:
    with pytest.raises(ConfigurationError, match="text and/or an html body"):
        rendered({"subject": "s", "to": ["a@b.example.com"]})


def test_the_ses_request_in_a_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SES_CONFIGURATION_SET", "billflow-events")
    billflow.settings.get_settings.cache_clear()
    run = run_state({"type": "email_alert", "options": alert(recipient_fields=["contact.emails"], html="<p>hi</p>",
                                                             bcc=["audit@billflow.example.com"],
                                                             reply_to=["ap@billflow.example.com"])})
    action = EmailAlertAction()
    request = action.render(run.actions[0], run)
    assert action.preview(run.actions[0], request, run, "key") == [{
        "action": "email_alert", "service": "sesv2", "operation": "SendEmail", "request": {
            "FromEmailAddress": SENDER,
            "Destination": {"ToAddresses": [MAYA], "BccAddresses": ["audit@billflow.example.com"]},
            "Content": {"Simple": {
                "Subject": {"Data": f"Won: {RECORD['name']}", "Charset": "UTF-8"},
                "Body": {"Text": {"Data": "Hello Maya", "Charset": "UTF-8"},
                         "Html": {"Data": "<p>hi</p>", "Charset": "UTF-8"}}}},
            "EmailTags": [{"Name": "tenant", "Value": "acme"}, {"Name": "rule", "Value": "won-deal"}],
            "ReplyToAddresses": ["ap@billflow.example.com"],
            "ConfigurationSetName": "billflow-events",
        }}]


def test_no_sender_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SES_FROM_ADDRESS")
    billflow.settings.get_settings.cache_clear()
    run = run_state({"type": "email_alert", "options": alert(to=["a@b.example.com"])})
    action = EmailAlertAction()
    request = action.render(run.actions[0], run)
    assert request["from"] is None
    with pytest.raises(ConfigurationError, match="SES_FROM_ADDRESS"):
        action.preview(run.actions[0], request, run, "key")


def test_address_helpers() -> None:
    assert addresses_in({"primaryEmail": "a@b.example", "additionalEmails": ["c@d.example"]}) == ["a@b.example"]
    assert addresses_in(["a@b.example", ["c@d.example"], None]) == ["a@b.example", "c@d.example"]
    assert addresses_in(42) == []
    context = run_state().context()
    assert field_value("pointOfContact.jobTitle", context) == "VP Operations"
