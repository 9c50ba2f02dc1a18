"""Issue 8 §7: the template grants exact actions only, its alarms can publish, its dead-letter queue takes
messages only from the rule it serves. Read from template.yaml as written (CloudFormation tags kept)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billflow_local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
RESOURCES: dict[str, dict[str, Any]] = TEMPLATE["Resources"]

# AWS-managed policies reviewed to list exact actions. Any other managed policy in the template fails:
# most (CloudWatchLogsFullAccess, AmazonSNSFullAccess, ...) grant every action of a service.
EXACT_MANAGED_POLICIES = frozenset({"AWSLambdaBasicExecutionRole", "AWSXrayWriteOnlyAccess"})


def statements(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement in the template: inline policies, SAM policy statements, key and queue policies."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield where, node
        for key, value in node.items():
            yield from statements(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from statements(value, f"{where}[{index}]")


def managed_policies() -> Iterator[tuple[str, str]]:
    for logical_id, resource in RESOURCES.items():
        props = resource.get("Properties") or {}
        policies = props.get("Policies")
        if not isinstance(policies, list):  # a Cognito user pool's Policies (its password policy) are no IAM
            policies = []
        for entry in [*policies, *(props.get("ManagedPolicyArns") or [])]:
            if isinstance(entry, str):
                yield logical_id, entry.rsplit("/", 1)[-1]


def actions_of(statement: dict[str, Any]) -> list[str]:
    raw = statement.get("Action", statement.get("NotAction"))
    return [raw] if isinstance(raw, str) else list(raw)


def test_no_statement_grants_every_action_of_a_service() -> None:
    wildcards = [(where, action) for where, statement in statements(RESOURCES)
                 for action in actions_of(statement) if action == "*" or action.endswith(":*")]
    assert wildcards == []


def test_no_statement_grants_by_exclusion() -> None:
    assert [where for where, statement in statements(RESOURCES) if "NotAction" in statement] == []


def test_no_managed_policy_grants_more_than_exact_actions() -> None:
    assert [(logical_id, name) for logical_id, name in managed_policies()
            if name not in EXACT_MANAGED_POLICIES] == []


def test_the_state_machine_may_deliver_its_logs_and_nothing_more_on_logs() -> None:
    props = RESOURCES["BillflowStateMachine"]["Properties"]
    logs_actions = {a for _, s in statements(props["Policies"]) for a in actions_of(s) if a.startswith("logs:")}
    assert logs_actions == {
        "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
    }


def alarm_topics() -> set[str]:
    topics = set()
    for resource in RESOURCES.values():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            for action in resource["Properties"].get("AlarmActions", []):
                assert set(action) == {"Ref"}, "alarm actions name a topic of this template"
                topics.add(action["Ref"])
    return topics


def test_every_topic_an_alarm_publishes_to_can_receive_alarms() -> None:
    """CloudWatch cannot publish to a topic encrypted with the AWS-managed key (alias/aws/sns): each alarm
    topic is unencrypted or uses a key of this template whose policy lets CloudWatch and EventBridge use it."""
    assert alarm_topics()
    for topic in alarm_topics():
        key = RESOURCES[topic]["Properties"].get("KmsMasterKeyId")
        if key is None:
            continue
        assert isinstance(key, dict) and set(key) == {"Ref"}, f"{topic}: {key!r} is not a key of this template"
        key_policy = RESOURCES[key["Ref"]]["Properties"]["KeyPolicy"]
        allowed: dict[str, set[str]] = {}
        for _, statement in statements(key_policy):
            services = (statement.get("Principal") or {}).get("Service", [])
            for service in [services] if isinstance(services, str) else services:
                allowed.setdefault(service, set()).update(actions_of(statement))
        for service in ("cloudwatch.amazonaws.com", "events.amazonaws.com"):
            assert {"kms:GenerateDataKey", "kms:Decrypt"} <= allowed.get(service, set()), (topic, service)


@pytest.mark.parametrize("logical_id", [k for k, r in RESOURCES.items() if r["Type"] == "AWS::SQS::QueuePolicy"])
def test_eventbridge_may_send_to_a_queue_only_for_the_rule_named_in_its_policy(logical_id: str) -> None:
    for where, statement in statements(RESOURCES[logical_id]["Properties"]["PolicyDocument"]):
        if (statement.get("Principal") or {}).get("Service") == "events.amazonaws.com":
            source = ((statement.get("Condition") or {}).get("ArnEquals") or {}).get("aws:SourceArn")
            assert isinstance(source, dict) and "Fn::GetAtt" in source, f"{logical_id}.{where}: {source!r}"
            rule = source["Fn::GetAtt"]
            rule_id = rule.split(".")[0] if isinstance(rule, str) else rule[0]
            # SAM names an EventBridgeRule event's rule <function><event>.
            assert any(rule_id == f"{fn}{event}" for fn, r in RESOURCES.items()
                       for event, spec in ((r.get("Properties") or {}).get("Events") or {}).items()
                       if spec.get("Type") == "EventBridgeRule"), rule_id
