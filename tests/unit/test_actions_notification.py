"""In-app notifications: the document, and the EventBridge and SNS requests a dry run shows."""

from __future__ import annotations

import json
from typing import Any

import billflow.settings
import pytest
from billflow.actions import get_action_type
from billflow.actions.notification import NotificationAction, _sns_subject
from billflow.errors import ConfigurationError

from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state

TOPIC = "arn:aws:sns:us-east-1:123456789012:billflow-notifications"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("EVENT_BUS_NAME", "billflow-crm-events")
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", TOPIC)
    billflow.settings.get_settings.cache_clear()
    yield
    billflow.settings.get_settings.cache_clear()


def rendered(options: dict[str, Any], **state: Any) -> dict[str, Any]:
    run = run_state({"type": "notification", "options": options}, **state)
    return NotificationAction().render(run.actions[0], run)


def test_the_registry_gives_this_type() -> None:
    assert isinstance(get_action_type("notification"), NotificationAction)


def test_the_document() -> None:
    request = rendered({"title": "Won: ${OPPORTUNITY.NAME}", "message": "${COMPANY.NAME} signed, invoice ${INVOICE.ID}",
                        "recipients": ["finance", "{{ contact.emails.primaryEmail }}"], "level": "success"},
                       results=[INVOICE_RESULT])
    assert request == {
        "tenant": "acme", "rule": {"id": "won-deal", "name": "Won deals"}, "source": "twenty",
        "object": "opportunity", "record_id": RECORD["id"], "level": "success",
        "title": f"Won: {RECORD['name']}", "message": "Acme Robotics signed, invoice in_1Q2w3E",
        "recipients": ["finance", "maya.chen@acme-robotics.example.com"],
    }


def test_the_title_defaults_to_the_rule_and_the_level_to_info() -> None:
    request = rendered({"message": "m"})
    assert (request["title"], request["level"], request["recipients"]) == ("Won deals", "info", [])
    assert rendered({"message": "m"}, rule_name="")["title"] == "won-deal"


def test_a_message_is_required_and_levels_are_known() -> None:
    with pytest.raises(ConfigurationError, match="needs a message"):
        rendered({"title": "t"})
    with pytest.raises(ConfigurationError, match="level 'loud'"):
        rendered({"message": "m", "level": "loud"})


def test_the_requests_a_dry_run_shows() -> None:
    run = run_state({"type": "notification", "options": {"title": "Gewonnen: Müller & Söhne", "message": "m"}})
    action = NotificationAction()
    request = action.render(run.actions[0], run)
    event, sns = (step["request"] for step in action.preview(run.actions[0], request, run, "acme:key:0"))
    entry = event["Entries"][0]
    assert (entry["EventBusName"], entry["Source"], entry["DetailType"]) == (
        "billflow-crm-events", "billflow.notifications", "Notification")
    assert json.loads(entry["Detail"]) == {"notification_id": "acme:key:0", **request}
    assert sns["TopicArn"] == TOPIC
    assert sns["Subject"] == "Gewonnen: Muller & Sohne"  # SNS subjects are ASCII
    assert sns["MessageStructure"] == "json"
    message = json.loads(sns["Message"])
    assert json.loads(message["default"])["title"] == "Gewonnen: Müller & Söhne"
    assert message["email"] == "Gewonnen: Müller & Söhne\n\nm"
    assert sns["MessageAttributes"] == {
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "rule": {"DataType": "String", "StringValue": "won-deal"},
        "object": {"DataType": "String", "StringValue": "opportunity"},
        "level": {"DataType": "String", "StringValue": "info"},
    }
    assert "MessageGroupId" not in sns


def test_a_fifo_topic_gets_a_group_and_a_deduplication_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", TOPIC + ".fifo")
    billflow.settings.get_settings.cache_clear()
    run = run_state()
    action = NotificationAction()
    request = action.render(run.actions[0], run)
    sns = action.preview(run.actions[0], request, run, "k1")[1]["request"]
    again = action.preview(run.actions[0], request, run, "k1")[1]["request"]
    assert sns["MessageGroupId"] == "acme"
    assert sns["MessageDeduplicationId"] == again["MessageDeduplicationId"]


def test_a_missing_topic_or_bus_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_state()
    action = NotificationAction()
    request = action.render(run.actions[0], run)
    monkeypatch.delenv("NOTIFICATION_TOPIC_ARN")
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="NOTIFICATION_TOPIC_ARN"):
        action.preview(run.actions[0], request, run, "k")
    monkeypatch.setenv("EVENT_BUS_NAME", "")
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="EVENT_BUS_NAME"):
        action.preview(run.actions[0], request, run, "k")


@pytest.mark.parametrize(("title", "subject"), [
    ("", "billflow notification"), ("\n\tWon\x00 deal\n", "Won deal"), ("é" * 5 + "x" * 200, "eeeee" + "x" * 94),
])
def test_sns_subjects(title: str, subject: str) -> None:
    assert _sns_subject(title) == subject
