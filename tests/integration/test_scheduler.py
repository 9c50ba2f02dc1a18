"""The scheduler against moto: date-triggered rules indexed by the filter and fired once per due instant,
the failure digest once per scheduled time, the usage alert once a day. Tables come from template.yaml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import billflow.aws
import billflow.settings
import pytest
from billflow.aws import client
from billflow.logic.filter import route_event
from billflow.logic.limits import check_usage
from billflow.logic.schedule import run_scheduler
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule, TenantSettings
from billflow.models.run import LogKeys, RunState, parse_utc, utc_text
from billflow.storage.counters import CHECKPOINT_PK
from billflow.storage.due_index import DUE_INDEX, get_due_index
from billflow.storage.execution_log import log_item
from billflow.storage.records import get_record_store
from billflow.storage.rules import get_rule_store
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from billflow_local.template import Template

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
SENDER = "billflow@billflow.example.com"
TABLES = {"RulesTable": "RULES_TABLE", "RecordsTable": "RECORDS_TABLE", "CountersTable": "COUNTERS_TABLE",
          "ExecutionLogTable": "EXECUTION_LOG_TABLE"}

RENEWAL = {
    "id": "renewal", "tenant": "acme", "source": "twenty", "object": "opportunity",
    "trigger": {"type": "date", "field": "closeDate", "offset_days": -7, "at": "09:00", "timezone": "Europe/Paris"},
    "criteria": [{"field": "stage", "comparator": "is", "value": "CUSTOMER"}],
    "actions": [{"type": "notification", "options": {"message": "renew {{ record.name }}"}}],
}


@dataclass
class Aws:
    machine: str
    topic_queue: str

    def executions(self) -> list[dict[str, Any]]:
        sfn = client("stepfunctions")
        listed = sfn.list_executions(stateMachineArn=self.machine)["executions"]
        return [sfn.describe_execution(executionArn=e["executionArn"]) for e in listed]

    def published(self) -> list[dict[str, Any]]:
        sqs = client("sqs")
        found = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.topic_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                body = json.loads(message["Body"])
                attributes = {k: v["Value"] for k, v in (body.get("MessageAttributes") or {}).items()}
                found.append({"subject": body.get("Subject"), "message": body["Message"], **attributes})
                sqs.delete_message(QueueUrl=self.topic_queue, ReceiptHandle=message["ReceiptHandle"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    template = Template.load(ROOT / "template.yaml")
    for name, value in {"AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "SES_FROM_ADDRESS": SENDER,
                        **{variable: f"test-{logical}" for logical, variable in TABLES.items()}}.items():
        monkeypatch.setenv(name, value)
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    with mock_aws():
        ddb = client("dynamodb")
        for logical in TABLES:
            props = template.resolve(template.properties(logical))
            ddb.create_table(
                TableName=f"test-{logical}", AttributeDefinitions=props["AttributeDefinitions"],
                KeySchema=props["KeySchema"], BillingMode="PAY_PER_REQUEST",
                **({"GlobalSecondaryIndexes": props["GlobalSecondaryIndexes"]}
                   if props.get("GlobalSecondaryIndexes") else {}),
            )
        topic = client("sns").create_topic(Name="failures")["TopicArn"]
        queue = client("sqs").create_queue(QueueName="failures-seen")["QueueUrl"]
        queue_arn = client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
        machine = client("stepfunctions").create_state_machine(
            name="billflow", roleArn="arn:aws:iam::123456789012:role/billflow",
            definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        )["stateMachineArn"]
        client("sesv2").create_email_identity(EmailIdentity=SENDER)
        monkeypatch.setenv("STATE_MACHINE_ARN", machine)
        monkeypatch.setenv("FAILURE_TOPIC_ARN", topic)
        billflow.settings.get_settings.cache_clear()
        yield Aws(machine, queue)
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()


def event(record_id: str, record: dict[str, Any], action: str = "updated") -> CrmEvent:
    now = datetime.now(UTC)
    return CrmEvent(event_id=f"e-{record_id}-{action}-{len(json.dumps(record))}", tenant="acme", source="twenty",
                    object="opportunity", action=action, record_id=record_id,  # type: ignore[arg-type]
                    record={"id": record_id, **record}, changed_fields=["closeDate"], occurred_at=now,
                    received_at=now)


def local_nine(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo("Europe/Paris"))


def test_the_filter_indexes_date_rules_and_the_scheduler_fires_each_date_once(aws: Aws) -> None:
    get_rule_store().put(Rule.model_validate(RENEWAL))
    close = (datetime.now(UTC) + timedelta(days=20)).date()
    due = local_nine(close - timedelta(days=7)).astimezone(UTC)
    outcome = route_event(event("r1", {"closeDate": f"{close}T00:00:00.000Z", "stage": "CUSTOMER", "name": "A"}),
                          get_rule_store(), get_record_store())
    assert outcome.indexed == 1 and outcome.started == []
    items = client("dynamodb").scan(TableName="test-RecordsTable", IndexName=DUE_INDEX)["Items"]
    assert [i["due_at"]["S"] for i in items] == [utc_text(due)]

    assert run_scheduler(due - timedelta(minutes=30), digests=False).started == []
    fired = run_scheduler(due + timedelta(minutes=10), digests=False)
    assert len(fired.started) == 1 and fired.since == utc_text(due - timedelta(minutes=30))
    [execution] = aws.executions()
    run = RunState.model_validate_json(execution["input"])
    assert run.recheck and run.refresh_record and run.trigger_at == utc_text(due)
    assert run.event.record["name"] == "A"  # the record as last seen rides along
    # Once fired, a once-only item is gone; running again (or late, over the same window) starts nothing.
    assert get_due_index().due_between(due - timedelta(hours=1), due + timedelta(hours=1)) == []
    assert run_scheduler(due + timedelta(minutes=20), digests=False).started == []
    assert len(aws.executions()) == 1


def test_a_window_run_twice_is_refused_by_the_execution_names(aws: Aws) -> None:
    get_rule_store().put(Rule.model_validate(RENEWAL))
    close = (datetime.now(UTC) + timedelta(days=20)).date()
    due = local_nine(close - timedelta(days=7)).astimezone(UTC)
    index = get_due_index()
    route_event(event("r2", {"closeDate": f"{close}T00:00:00.000Z"}), get_rule_store(), get_record_store())
    [item] = index.due_between(due - timedelta(hours=1), due)
    from billflow.logic.schedule import SchedulerRun, fire

    first, second = SchedulerRun("", ""), SchedulerRun("", "")
    rule = Rule.model_validate(RENEWAL)
    fire(item, rule, TenantSettings(), index, (due - timedelta(hours=1), due), due, first)
    fire(item, rule, TenantSettings(), index, (due - timedelta(hours=1), due), due, second)  # a stale copy
    # Step Functions answers the same name and input of a running execution with that execution (and a
    # different input, or a finished one, with ExecutionAlreadyExists): either way one run exists.
    assert (first.started + first.duplicates) == (second.started + second.duplicates)
    assert len(aws.executions()) == 1


def test_yearly_rules_move_on_and_changed_rules_are_reconciled(aws: Aws) -> None:
    yearly = Rule.model_validate({**RENEWAL, "trigger": {**RENEWAL["trigger"], "repeat": "yearly"}})
    get_rule_store().put(yearly)
    close = (datetime.now(UTC) + timedelta(days=20)).date()
    due = local_nine(close - timedelta(days=7)).astimezone(UTC)
    route_event(event("r3", {"closeDate": f"{close}T00:00:00.000Z"}), get_rule_store(), get_record_store())
    assert len(run_scheduler(due + timedelta(minutes=1), digests=False).started) == 1
    [item] = client("dynamodb").scan(TableName="test-RecordsTable", IndexName=DUE_INDEX)["Items"]
    next_year = local_nine((close - timedelta(days=7)).replace(year=close.year + 1)).astimezone(UTC)
    assert item["due_at"]["S"] == utc_text(next_year)

    # The rule now fires 14 days before instead of 7: the indexed instant is stale; it is moved, not fired.
    get_rule_store().put(yearly.model_copy(update={"trigger": yearly.trigger.model_copy(
        update={"offset_days": -14})}))
    stale = fresh_window_run(next_year + timedelta(minutes=1))
    assert stale.started == [] and len(stale.stale) == 1
    [item] = client("dynamodb").scan(TableName="test-RecordsTable", IndexName=DUE_INDEX)["Items"]
    assert item["due_at"]["S"] == utc_text(local_nine((close - timedelta(days=14)).replace(
        year=close.year + 2)).astimezone(UTC))
    # A deactivated rule's items are dropped when they come due.
    get_rule_store().put(yearly.model_copy(update={"active": False}))
    dropped = fresh_window_run(parse_utc(item["due_at"]["S"]) + timedelta(minutes=1))
    assert dropped.started == [] and len(dropped.stale) == 1
    assert client("dynamodb").scan(TableName="test-RecordsTable", IndexName=DUE_INDEX)["Items"] == []


def fresh_window_run(at: datetime) -> Any:
    """The scheduler at `at` as if it had last run an hour before (no catch-up of the days between)."""
    client("dynamodb").delete_item(TableName="test-CountersTable", Key={"pk": {"S": CHECKPOINT_PK}})
    return run_scheduler(at, digests=False)


def test_a_deleted_record_is_forgotten(aws: Aws) -> None:
    get_rule_store().put(Rule.model_validate(RENEWAL))
    close = (datetime.now(UTC) + timedelta(days=20)).date()
    route_event(event("r5", {"closeDate": f"{close}T00:00:00.000Z"}), get_rule_store(), get_record_store())
    route_event(event("r5", {"closeDate": f"{close}T00:00:00.000Z"}, "deleted"), get_rule_store(),
                get_record_store())
    assert client("dynamodb").scan(TableName="test-RecordsTable", IndexName=DUE_INDEX)["Items"] == []


def put_log(tenant: str, status: str, at: datetime, execution: str) -> None:
    item = log_item(tenant=tenant, execution=execution, rule_id="won", record_key=f"{tenant}#twenty#opportunity#r9",
                    step="run", status=status, reason=f"{status} because", at=at)
    client("dynamodb").put_item(TableName="test-ExecutionLogTable", Item=item)


def test_the_failure_digest_goes_once_per_scheduled_time_with_what_failed_since(aws: Aws) -> None:
    store = get_rule_store()
    store.put_tenant_settings("acme", TenantSettings.model_validate({"failure_digest": {
        "frequency": "daily", "at": "08:00", "timezone": "Europe/Paris", "recipients": ["ops@example.com"]}}))
    store.put_tenant_settings("quiet", TenantSettings())
    digest_at = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)  # 08:00 in Paris
    put_log("acme", "failed", digest_at - timedelta(hours=30), "too-old")  # before the previous digest
    put_log("acme", "failed", digest_at - timedelta(hours=3), "run-failed")
    put_log("acme", "limited", digest_at - timedelta(hours=2), "run-limited")
    put_log("acme", "succeeded", digest_at - timedelta(hours=1), "run-fine")
    put_log("acme", "failed", digest_at + timedelta(minutes=5), "next-time")

    sent = run_scheduler(digest_at + timedelta(minutes=10)).digests
    again = run_scheduler(digest_at + timedelta(minutes=20)).digests
    assert sent == ["acme"] and again == []
    [digest] = [m for m in aws.published() if m.get("status") == "failure_digest"]
    assert digest["tenant"] == "acme" and digest["subject"] == "billflow: 1 failed and 1 limited run(s) for acme"
    assert "run run-failed" in digest["message"] and "run run-limited" in digest["message"]
    assert "too-old" not in digest["message"] and "run-fine" not in digest["message"]
    assert "next-time" not in digest["message"]
    [email] = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    assert email.destinations == {"ToAddresses": ["ops@example.com"]}
    # The next day's digest starts where this one ended.
    run_scheduler(digest_at + timedelta(days=1, minutes=1))
    [following] = [m for m in aws.published() if m.get("status") == "failure_digest"]
    assert "next-time" in following["message"] and "run-failed" not in following["message"]


def run_state(alert: dict[str, Any] | None) -> RunState:
    rule = Rule.model_validate({"id": "won", "source": "twenty", "object": "opportunity",
                                "actions": [{"type": "webhook", "connection": "hook"}]})
    now = datetime.now(UTC)
    crm = CrmEvent(event_id="e", tenant="acme", source="twenty", object="opportunity", action="updated",
                   record_id="r", record={}, occurred_at=now, received_at=now)
    return RunState.model_validate({
        "tenant": "acme", "execution_key": "k", "transition": "t", "rule": rule, "actions": rule.blocks[0].actions,
        "event": crm, "log": LogKeys(rule_key="acme#won", record_key="acme#r", expires_at="0"),
        "usage_alert": alert,
    })


def test_the_usage_alert_goes_once_a_day_past_the_threshold(aws: Aws) -> None:
    from billflow.logic.run import plan_next

    state = run_state({"threshold_percent": 80, "recipients": ["ops@example.com"]})
    step = plan_next(state.model_copy(update={"daily_limits": {"webhook": 10}}))
    assert step["counter"]["alert_at"] == "8"

    def counted(n: int) -> dict[str, Any]:
        return {"Attributes": {"count": {"N": str(n)}}}

    assert check_usage(state, step, counted(7)) is False
    assert check_usage(state, step, counted(8)) is True
    assert check_usage(state, step, counted(9)) is False  # told already today
    [alert] = aws.published()
    assert alert["status"] == "usage_threshold" and alert["action_type"] == "webhook"
    assert alert["message"].startswith("Tenant acme: 8 of 10 webhook sends allowed on")
    assert len(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages) == 1
    # Without settings no counter threshold is planned, and nothing is told.
    quiet = run_state(None)
    assert "alert_at" not in plan_next(quiet)["counter"]
    assert check_usage(quiet, plan_next(quiet), counted(10_000)) is False
