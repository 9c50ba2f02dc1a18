"""In-app notifications on moto: the event reaches a bus rule's queue, the SNS message a subscribed queue
(with the attributes a filter policy routes on)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import billflow.aws
import billflow.settings
import pytest
from billflow.actions.notification import NotificationAction
from billflow.errors import ConfigurationError
from moto import mock_aws

from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state

BUS = "billflow-test-crm-events"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "EVENT_BUS_NAME": BUS}.items():
        monkeypatch.setenv(name, value)
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    with mock_aws():
        sqs, events, sns = (billflow.aws.client(s) for s in ("sqs", "events", "sns"))
        queues = {}
        for name in ("bus-notifications", "finance-notifications", "other-tenant"):
            url = sqs.create_queue(QueueName=name)["QueueUrl"]
            queues[name] = url
        arn = {name: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
               for name, url in queues.items()}
        events.create_event_bus(Name=BUS)
        events.put_rule(Name="notifications", EventBusName=BUS, EventPattern=json.dumps(
            {"source": ["billflow.notifications"], "detail-type": ["Notification"]}))
        events.put_targets(Rule="notifications", EventBusName=BUS,
                           Targets=[{"Id": "queue", "Arn": arn["bus-notifications"]}])
        topic = sns.create_topic(Name="billflow-notifications")["TopicArn"]
        monkeypatch.setenv("NOTIFICATION_TOPIC_ARN", topic)
        billflow.settings.get_settings.cache_clear()
        # Subscribers route with filter policies on the message attributes.
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["finance-notifications"],
                      Attributes={"FilterPolicy": json.dumps({"tenant": ["acme"], "level": ["success", "error"]}),
                                  "RawMessageDelivery": "true"})
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["other-tenant"],
                      Attributes={"FilterPolicy": json.dumps({"tenant": ["globex"]})})
        yield queues
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()


def received(queue_url: str) -> list[str]:
    answer = billflow.aws.client("sqs").receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
    return [m["Body"] for m in answer.get("Messages", [])]


def notify(options: dict[str, Any], key: str = "acme:won-deal:1:0") -> Any:
    run = run_state({"type": "notification", "options": options}, results=[INVOICE_RESULT])
    action = NotificationAction()
    return action.send(run.actions[0], action.render(run.actions[0], run), run, key)


def test_a_notification_is_an_event_and_an_sns_message(aws: dict[str, str]) -> None:
    result = notify({"title": "Won: ${OPPORTUNITY.NAME}", "message": "${COMPANY.NAME} invoiced as ${INVOICE.ID}",
                     "recipients": ["finance"], "level": "success"})
    expected = {"notification_id": "acme:won-deal:1:0", "tenant": "acme",
                "rule": {"id": "won-deal", "name": "Won deals"}, "source": "twenty", "object": "opportunity",
                "record_id": RECORD["id"], "level": "success", "title": f"Won: {RECORD['name']}",
                "message": "Acme Robotics invoiced as in_1Q2w3E", "recipients": ["finance"]}

    [event] = [json.loads(body) for body in received(aws["bus-notifications"])]
    assert (event["source"], event["detail-type"]) == ("billflow.notifications", "Notification")
    assert event["detail"] == expected

    [message] = received(aws["finance-notifications"])  # raw delivery: SNS's "default" message
    assert json.loads(message) == expected
    assert received(aws["other-tenant"]) == []  # its filter policy wants another tenant
    assert result.status == "notified"
    assert result.external_id
    assert result.details["level"] == "success"


def test_the_filter_policy_sees_the_level(aws: dict[str, str]) -> None:
    notify({"message": "just so you know"})  # level info: not what the finance queue subscribed to
    assert len(received(aws["bus-notifications"])) == 1
    assert received(aws["finance-notifications"]) == []


def test_a_missing_topic_is_a_configuration_error(aws: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFICATION_TOPIC_ARN")
    billflow.settings.get_settings.cache_clear()
    with pytest.raises(ConfigurationError, match="NOTIFICATION_TOPIC_ARN"):
        notify({"message": "m"})
    assert received(aws["bus-notifications"]) == []  # nothing half-sent
