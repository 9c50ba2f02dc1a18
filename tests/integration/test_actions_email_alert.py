"""Email alerts through SES (moto): what SES was asked to send, and how SES refusals are classified."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import billflow.aws
import billflow.settings
import pytest
from billflow.actions.email_alert import EmailAlertAction
from billflow.errors import ConfigurationError, TargetRejected
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state

SENDER = "billing@billflow.example.com"
MAYA = "maya.chen@acme-robotics.example.com"
REGION = "us-east-1"


@pytest.fixture
def ses(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "SES_FROM_ADDRESS": SENDER}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SES_CONFIGURATION_SET", raising=False)
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    with mock_aws():
        billflow.aws.client("sesv2").create_email_identity(EmailIdentity=SENDER)  # verified at once in moto
        yield ses_backends[DEFAULT_ACCOUNT_ID][REGION]
    billflow.aws.reset_clients()


def send(options: dict[str, Any], **state: Any) -> Any:
    run = run_state({"type": "email_alert", "options": options}, results=[INVOICE_RESULT], **state)
    action = EmailAlertAction()
    return action.send(run.actions[0], action.render(run.actions[0], run), run, "acme:run:1")


def test_an_alert_to_the_record_contact_and_extra_addresses(ses: Any) -> None:
    result = send({
        "subject": "Invoice ${INVOICE.ID} for ${OPPORTUNITY.NAME}",
        "text": "Hello ${CONTACT.CONTACT_NAME}, your invoice ${INVOICE.ID} is on its way.",
        "recipient_fields": ["pointOfContact.emails.primaryEmail"],
        "to": ["sales@billflow.example.com"], "cc": ["cfo@billflow.example.com"],
        "bcc": ["audit@billflow.example.com"],
    })
    [message] = ses.sent_messages
    assert message.source == SENDER
    assert message.subject == f"Invoice in_1Q2w3E for {RECORD['name']}"
    assert message.body == "Hello Maya Chen, your invoice in_1Q2w3E is on its way."
    assert message.destinations == {"ToAddresses": [MAYA, "sales@billflow.example.com"],
                                    "CcAddresses": ["cfo@billflow.example.com"],
                                    "BccAddresses": ["audit@billflow.example.com"]}
    assert result.status == "sent"
    assert result.external_id == message.id
    assert result.details == {"recipients": 4}


def test_an_html_alert(ses: Any) -> None:
    send({"subject": "Won", "text": "plain",
          "html": "<h1>${COMPANY.NAME}</h1><p>${OPPORTUNITY.AMOUNT} for <i>${OPPORTUNITY.NAME}</i></p>",
          "to": ["sales@billflow.example.com"]}, record={**RECORD, "name": "A <&> B"})
    [message] = ses.sent_messages
    # moto keeps the HTML part of a text-and-HTML message
    assert message.body == "<h1>Acme Robotics</h1><p>12500.00 USD for <i>A &lt;&amp;&gt; B</i></p>"


def test_an_unverified_sender_is_refused_by_ses(ses: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SES_FROM_ADDRESS", "nobody@unverified.example.com")
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(TargetRejected, match="SES refused the email: MessageRejected"):
        send({"subject": "s", "text": "t", "to": ["sales@billflow.example.com"]})
    assert ses.sent_messages == []


def test_no_recipient_sends_nothing(ses: Any) -> None:
    with pytest.raises(ConfigurationError, match="no recipient in this run"):
        send({"subject": "s", "text": "t", "recipient_fields": ["pointOfContact.emails.primaryEmail"]},
             lookup={"company": None, "contact": None})
    assert ses.sent_messages == []
