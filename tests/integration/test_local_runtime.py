"""The local runtime: template.yaml on moto, the real handlers in-process, the HTTP API on localhost.

One runtime serves the module (starting it costs seconds); every test uses its own opportunity, so tests
do not see each other's runs. The CRM is the contract-checked fake Twenty, the target a local receiver.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from billflow_cli.redrive import redrive
from billflow_local.bus import BusTarget
from billflow_local.runtime import LocalConfigError, LocalRuntime
from billflow_local.server import MAX_BODY_BYTES, Turns
from billflow_local.template import TABLE, Template, TemplateError
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.signing import signed_twenty_delivery
from tests.fakes.twenty_server import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "local-runtime-test-secret"

RULES = """\
id: won-hook
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
actions:
  - {type: webhook, connection: hook}
---
id: proposal-invoice
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: PROPOSAL}
actions:
  - {type: invoice, system: webhook, connection: hook}
---
id: limited-hook
tenant: limits
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
actions:
  - {type: webhook, connection: hook}
"""
DAILY_WEBHOOKS = 3


class Receiver(FakeServer):
    """A generic webhook endpoint: answers 200 {"id": ...}, or the failures queued with fail_next()."""

    name = "receiver"

    def __init__(self) -> None:
        super().__init__()
        self._failures: deque[Response] = deque()
        self.route("POST", "/hook", self._receive)

    def fail_next(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._failures.append(Response(status, {"error": {"message": "try later"}}, headers or {}))

    def _receive(self, req: Request) -> Response:
        if self._failures:
            return self._failures.popleft()
        return Response(200, {"id": f"delivery-{len(self.requests)}"})

    def for_record(self, record_id: str) -> list[Request]:
        return [r for r in self.requests if record_id in r.body.decode()]


@pytest.fixture(scope="module")
def twenty() -> Iterator[FakeTwenty]:
    fake = FakeTwenty()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runtime(
    tmp_path_factory: pytest.TempPathFactory, twenty: FakeTwenty, receiver: Receiver
) -> Iterator[LocalRuntime]:
    folder = tmp_path_factory.mktemp("local-runtime")
    rules = folder / "rules.yaml"
    rules.write_text(RULES)
    connections = folder / "connections.yaml"
    tenant = {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {
            "twenty": twenty.connection_settings(),
            "hook": {"type": "webhook", "url": f"{receiver.url}/hook"},
        },
    }
    limited = {**tenant, "settings": {"daily_limits": {"webhook": DAILY_WEBHOOKS}}}
    connections.write_text(json.dumps({"tenants": {"demo": tenant, "limits": limited}}))  # JSON is YAML
    with LocalRuntime(ROOT, port=0, rules=rules, connections=connections, echo=None,
                      fast_retries=True) as local:
        yield local


def post_stage_change(runtime: LocalRuntime, twenty: FakeTwenty, name: str, stage: str, tenant: str = "demo",
                      **fields: Any) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Seed an opportunity in Twenty and post Twenty's signed 'opportunity.updated' for its new stage."""
    company = twenty.add_company(f"{name} Inc")
    opportunity = twenty.add_opportunity(name, stage=stage, company_id=company["id"], **fields)
    payload = {
        "eventName": "opportunity.updated",
        "objectMetadata": {"id": "5b1c6a8e-0b7e-4a52-9d0f-6f0c1e1e2a01", "nameSingular": "opportunity"},
        "workspaceId": "3b8e6458-5fc1-4e63-8563-008ccddaa6db",
        "webhookId": "c2a9f1f4-9f3b-4b7e-a7c4-0d1b2e3f4a5b",
        "eventDate": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "record": opportunity,
        "updatedFields": ["stage"],
    }
    headers, body = signed_twenty_delivery(SIGNING_SECRET, payload)
    status, answer = post(runtime, f"/webhooks/{tenant}/twenty", body, headers)
    return status, answer, opportunity


def post(runtime: LocalRuntime, path: str, body: bytes, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, Any]:
    request = urllib.request.Request(f"{runtime.url}{path}", data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def runs_for(runtime: LocalRuntime, record_id: str) -> list[dict[str, Any]]:
    return [e for e in runtime.executions() if e["input"]["event"]["record_id"] == record_id]


def log_items(runtime: LocalRuntime, execution: str) -> list[dict[str, Any]]:
    items = runtime.client("dynamodb").query(
        TableName=runtime.name_of("ExecutionLogTable"),
        KeyConditionExpression="pk = :t",
        ExpressionAttributeValues={":t": {"S": "demo"}},
    )["Items"]
    return [i for i in items if i["execution"]["S"] == execution]


def test_a_signed_webhook_runs_its_rule_once_and_logs_it(
    runtime: LocalRuntime, twenty: FakeTwenty, receiver: Receiver
) -> None:
    status, answer, deal = post_stage_change(runtime, twenty, "Won deal", "CUSTOMER", amount_micros=5_000_000)

    assert status == 202, answer
    assert answer["accepted"] == 1
    runtime.wait_idle(timeout=30)

    [run] = runs_for(runtime, deal["id"])
    assert run["status"] == "SUCCEEDED", run
    assert run["states"][:5] == ["Lookup", "NextAction", "HasAction", "CountDaily", "Dispatch"]
    [delivery] = receiver.for_record(deal["id"])
    assert delivery.headers["idempotency-key"].startswith(run["input"]["execution_key"])
    sent = delivery.json()
    assert sent["rule"] == "won-hook"
    assert sent["company"]["name"] == "Won deal Inc"  # what Lookup fetched from Twenty
    logged = {item["step"]["S"]: item for item in log_items(runtime, run["name"])}
    assert set(logged) == {"action-0", "run"}
    # The receiver's own id for the delivery is the external id billflow keeps.
    assert logged["action-0"]["external_id"]["S"] == f"delivery-{receiver.requests.index(delivery) + 1}"
    assert logged["run"]["status"]["S"] == "succeeded"
    assert twenty.violations == []


def test_a_redelivered_webhook_sends_nothing_twice(
    runtime: LocalRuntime, twenty: FakeTwenty, receiver: Receiver
) -> None:
    company = twenty.add_company("Twice Inc")
    deal = twenty.add_opportunity("Twice", stage="CUSTOMER", company_id=company["id"])
    payload = {
        "eventName": "opportunity.updated", "objectMetadata": {"nameSingular": "opportunity"},
        "webhookId": "c2a9f1f4-9f3b-4b7e-a7c4-0d1b2e3f4a5b",
        "eventDate": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "record": deal, "updatedFields": ["stage"],
    }
    headers, body = signed_twenty_delivery(SIGNING_SECRET, payload)

    for _ in range(3):  # Twenty retries a delivery it thinks failed
        assert post(runtime, "/webhooks/demo/twenty", body, headers)[0] == 202
    runtime.wait_idle(timeout=30)

    assert [run["status"] for run in runs_for(runtime, deal["id"])] == ["SUCCEEDED"]
    assert len(receiver.for_record(deal["id"])) == 1


def test_the_daily_limit_holds_under_concurrent_runs(
    runtime: LocalRuntime, twenty: FakeTwenty, receiver: Receiver
) -> None:
    # Eight deals won at once; the tenant may send three webhooks a day. The counter is a conditional
    # DynamoDB update from the state machine: it must stay atomic with every run racing for it.
    with ThreadPoolExecutor(8) as pool:
        posted = list(pool.map(lambda i: post_stage_change(runtime, twenty, f"Rush {i}", "CUSTOMER",
                                                           tenant="limits"), range(8)))
    assert [status for status, _, _ in posted] == [202] * 8
    runtime.wait_idle(timeout=45)

    deals = {deal["id"] for _, _, deal in posted}
    runs = [run for run in runtime.executions() if run["input"]["event"]["record_id"] in deals]
    outcomes = sorted((run["status"], run["error"]) for run in runs)
    assert outcomes == [("FAILED", "DailyLimitReached")] * 5 + [("SUCCEEDED", None)] * DAILY_WEBHOOKS
    assert sum(len(receiver.for_record(deal["id"])) for _, _, deal in posted) == DAILY_WEBHOOKS
    limited = [n for n in runtime.notifications() if n["attributes"].get("tenant") == "limits"]
    assert len(limited) == 5


# ------------------------------------------------------------------------------------------- the event bus
def crm_entry(runtime: LocalRuntime, detail: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A PutEvents entry the template's filter rule matches (source billflow.ingest, CrmEvent), as ingest
    publishes it."""
    return {"EventBusName": runtime.name_of("EventBus"), "Source": "billflow.ingest", "DetailType": "CrmEvent",
            "Detail": json.dumps(detail), **fields}


class Recorder:
    """Stands in for a function: records each event it is invoked with, failing the first `failures` times."""

    def __init__(self, failures: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.failures = failures
        self._lock = threading.Lock()

    def __call__(self, event: Any, context: Any) -> Any:
        with self._lock:
            self.events.append(event)
            if len(self.events) <= self.failures:
                raise RuntimeError(f"attempt {len(self.events)} failed")
        return {"started": [], "duplicates": [], "not_matched": {}}


def queue_messages(runtime: LocalRuntime, logical_id: str) -> list[dict[str, Any]]:
    """Every message of a template queue (left visible for other readers)."""
    sqs = runtime.client("sqs")
    url = sqs.get_queue_url(QueueName=runtime.template.get_att(logical_id, "QueueName"))["QueueUrl"]
    found: dict[str, dict[str, Any]] = {}
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                       VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", [])
        new = {m["MessageId"]: m for m in messages if m["MessageId"] not in found}
        if not new:
            return list(found.values())
        found.update(new)


def dead_letters(runtime: LocalRuntime, event_id: str) -> list[dict[str, Any]]:
    """The rule's dead-letter queue's messages for this event."""
    return [m for m in queue_messages(runtime, "FilterDeadLetterQueue") if json.loads(m["Body"])["id"] == event_id]


def failure_records(runtime: LocalRuntime, event_id: str) -> list[dict[str, Any]]:
    """The filter's on-failure destination records for this event."""
    records = [json.loads(m["Body"]) for m in queue_messages(runtime, "FilterFailureQueue")]
    return [r for r in records if r["requestPayload"]["id"] == event_id]


def filter_rule(runtime: LocalRuntime) -> dict[str, Any]:
    """The filter's EventBridgeRule event as template.yaml declares it (resolved), with its rule's ARN."""
    [props] = runtime.template.function_events("FilterFunction", "EventBridgeRule").values()
    resolved: dict[str, Any] = runtime.template.resolve(props)
    rules = runtime.client("events").list_rules(EventBusName=resolved["EventBusName"])["Rules"]
    [arn] = [rule["Arn"] for rule in rules if json.loads(rule["EventPattern"]) == resolved["Pattern"]]
    return {**resolved, "RuleArn": arn}


def test_put_events_answers_as_eventbridge_does(runtime: LocalRuntime) -> None:
    events = runtime.client("events")
    entries = [
        crm_entry(runtime, {"n": 1}),
        crm_entry(runtime, {"n": 2}, Source=""),
        crm_entry(runtime, {"n": 3}, Detail="[1, 2]"),
        crm_entry(runtime, {"n": 4}, Detail="{not json"),
        crm_entry(runtime, {"n": 5}, EventBusName="no-such-bus"),  # EventBridge accepts, and drops it
    ]
    with runtime.functions.replaced("FilterFunction", Recorder()):
        answer = events.put_events(Entries=entries)
        runtime.wait_idle(timeout=10)

    assert answer["FailedEntryCount"] == 3
    assert [sorted(entry) for entry in answer["Entries"]] == [
        ["EventId"], ["ErrorCode", "ErrorMessage"], ["ErrorCode", "ErrorMessage"], ["ErrorCode", "ErrorMessage"],
        ["EventId"]]
    assert answer["Entries"][1] == {"ErrorCode": "InvalidArgument",
                                    "ErrorMessage": "Parameter Source is not valid. Reason: Source is a required "
                                                    "argument."}
    assert answer["Entries"][2] == answer["Entries"][3] == {"ErrorCode": "MalformedDetail",
                                                            "ErrorMessage": "Detail is malformed."}
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200

    with pytest.raises(ClientError, match=r"ValidationException.*less than or equal to 10"):
        events.put_events(Entries=[crm_entry(runtime, {"n": i}) for i in range(11)])
    with pytest.raises(ClientError, match="Total size of the entries in the request is over the limit"):
        events.put_events(Entries=[crm_entry(runtime, {"blob": "x" * 200_000}) for _ in range(2)])
    # The template's rules exist in EventBridge's own API too.
    template = runtime.template
    patterns = [template.resolve(props)["Pattern"] for function, _ in template.iter_functions()
                for props in template.function_events(function, "EventBridgeRule").values()]
    rules = events.list_rules(EventBusName=runtime.name_of("EventBus"))["Rules"]
    assert sorted(rule["EventPattern"] for rule in rules) == sorted(json.dumps(p) for p in patterns)


def test_events_reach_the_function_whose_rule_pattern_matches(runtime: LocalRuntime) -> None:
    events = runtime.client("events")
    recorder = Recorder()
    when = datetime(2026, 3, 18, 9, 30, 5, tzinfo=UTC)
    with runtime.functions.replaced("FilterFunction", recorder):
        answer = events.put_events(Entries=[
            crm_entry(runtime, {"kept": True}, Time=when, Resources=["arn:aws:crm:record/1"]),
            crm_entry(runtime, {"kept": False}, Source="billflow.elsewhere"),  # the pattern wants billflow.ingest
            crm_entry(runtime, {"kept": False}, DetailType="Notification"),
            crm_entry(runtime, {"kept": False}, EventBusName="default"),  # the rule is on the template's bus
        ])
        runtime.wait_idle(timeout=10)

    assert answer["FailedEntryCount"] == 0
    [delivered] = recorder.events  # the other three matched no rule: dropped
    assert delivered == {  # the event exactly as EventBridge hands it to a Lambda target
        "version": "0", "id": answer["Entries"][0]["EventId"], "detail-type": "CrmEvent",
        "source": "billflow.ingest", "account": "123456789012", "time": "2026-03-18T09:30:05Z",
        "region": "us-east-1", "resources": ["arn:aws:crm:record/1"], "detail": {"kept": True},
    }
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", delivered["id"])


def test_a_failing_delivery_is_retried_and_then_succeeds(runtime: LocalRuntime) -> None:
    recorder = Recorder(failures=2)
    with runtime.functions.replaced("FilterFunction", recorder):
        answer = runtime.client("events").put_events(Entries=[crm_entry(runtime, {"flaky": True})])
        runtime.wait_idle(timeout=10)

    event_id = answer["Entries"][0]["EventId"]
    assert [event["id"] for event in recorder.events] == [event_id] * 3  # two failures, then delivered
    assert recorder.events[0] == recorder.events[2]  # every attempt gets the same event
    assert dead_letters(runtime, event_id) == []


def test_a_function_error_is_retried_by_lambda_twice_then_goes_to_the_on_failure_destination(
    runtime: LocalRuntime,
) -> None:
    # EventBridge invokes asynchronously: its RetryPolicy and DLQ cover delivery, and Lambda accepts at once.
    # A handler error is Lambda's to retry (EventInvokeConfig.MaximumRetryAttempts), then the destination's.
    invoke_config = runtime.template.properties("FilterFunction")["EventInvokeConfig"]
    attempts = invoke_config["MaximumRetryAttempts"] + 1
    assert attempts == 3
    recorder = Recorder(failures=10**6)
    with runtime.functions.replaced("FilterFunction", recorder):
        answer = runtime.client("events").put_events(Entries=[crm_entry(runtime, {"doomed": True})])
        runtime.wait_idle(timeout=30)  # fast_retries: no backoff

    event_id = answer["Entries"][0]["EventId"]
    assert [event["id"] for event in recorder.events] == [event_id] * attempts  # not the rule's 21
    assert dead_letters(runtime, event_id) == []  # the rule's DLQ is for delivery failures only
    [record] = failure_records(runtime, event_id)
    assert record["requestPayload"] == recorder.events[0]
    assert record["version"] == "1.0"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])
    context = record["requestContext"]
    assert context["functionArn"] == f"{runtime.functions.specs['FilterFunction'].arn}:$LATEST"
    assert (context["condition"], context["approximateInvokeCount"]) == ("RetriesExhausted", attempts)
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == f"attempt {attempts} failed"
    destination = invoke_config["DestinationConfig"]["OnFailure"]["Destination"]
    assert runtime.template.resolve(destination) == runtime.template.get_att("FilterFailureQueue", "Arn")


def test_redrive_puts_failed_events_back_on_the_bus_once(runtime: LocalRuntime) -> None:
    sqs, events = runtime.client("sqs"), runtime.client("events")
    url = sqs.get_queue_url(QueueName=runtime.template.get_att("FilterFailureQueue", "QueueName"))["QueueUrl"]
    bus = runtime.name_of("EventBus")
    sqs.purge_queue(QueueUrl=url)  # what earlier tests of this runtime left
    broken = Recorder(failures=10**6)
    with runtime.functions.replaced("FilterFunction", broken):
        answer = events.put_events(Entries=[
            crm_entry(runtime, {"tenant": "acme", "n": 1}, Time=datetime(2026, 3, 18, 9, 30, tzinfo=UTC)),
            crm_entry(runtime, {"tenant": "other", "n": 2}),
        ])
        runtime.wait_idle(timeout=30)
    first, second = (entry["EventId"] for entry in answer["Entries"])
    assert len(failure_records(runtime, first)) == len(failure_records(runtime, second)) == 1

    fixed = Recorder()
    with runtime.functions.replaced("FilterFunction", fixed):
        report = redrive(sqs, events, url, bus, tenant="acme")
        runtime.wait_idle(timeout=10)
        again = redrive(sqs, events, url, bus, tenant="acme")  # nothing left of acme's: a no-op
        runtime.wait_idle(timeout=10)

    assert (report.redriven, report.skipped, report.refused) == ([first], [second], [])
    assert (again.redriven, again.refused) == ([], [])
    [delivered] = fixed.events  # the same event, put again: a new id, the same source, type, time and detail
    original = broken.events[0]
    assert {k: v for k, v in delivered.items() if k != "id"} == {k: v for k, v in original.items() if k != "id"}
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    # Another tenant's event is left in the queue (hidden for the visibility timeout of the redrive's read).
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("0", "1")


def test_retries_back_off_as_lambda_does_on_the_virtual_clock(runtime: LocalRuntime) -> None:
    recorder = Recorder(failures=2)
    lines: list[str] = []
    runtime.echo, runtime.clock.fast_retries = lines.append, False
    try:
        with runtime.functions.replaced("FilterFunction", recorder):
            runtime.client("events").put_events(Entries=[crm_entry(runtime, {"backoff": True})])
            # A delivery waiting for its retry is like an execution in a Wait state: idle unless included.
            runtime.wait_idle(timeout=10, include_waiting=False)
            assert len(recorder.events) == 1
            runtime.advance_clock(59)
            runtime.wait_idle(timeout=10, include_waiting=False)
            assert len(recorder.events) == 1  # Lambda waits about a minute before the first retry
            while len(recorder.events) < 3:
                runtime.advance_clock(1)
                runtime.wait_idle(timeout=10, include_waiting=False)
            runtime.wait_idle(timeout=10)
    finally:
        runtime.echo, runtime.clock.fast_retries = None, True

    retries = [line for line in lines if line.startswith("[lambda] FilterFunction ✗")]
    assert retries == ["[lambda] FilterFunction ✗ RuntimeError: attempt 1 failed — asynchronous retry 2/3 in 60s",
                       "[lambda] FilterFunction ✗ RuntimeError: attempt 2 failed — asynchronous retry 3/3 in 120s"]
    assert lines[-1] == "[bus] CrmEvent → FilterFunction: 0 started, 0 duplicate(s), 0 not matched"


def test_a_targets_input_settings_shape_what_the_function_gets() -> None:
    from moto.events.models import EventPattern

    event = {"version": "0", "id": "1", "detail-type": "CrmEvent", "source": "billflow.ingest",
             "account": "123456789012", "time": "2026-03-18T09:30:05Z", "region": "us-east-1",
             "resources": [], "detail": {"tenant": "demo", "record_id": "r1"}}

    def target(**settings: Any) -> BusTarget:
        return BusTarget(function="FilterFunction", function_arn="arn", event_name="CrmEvent", rule_name="rule",
                         rule_arn="arn", bus="bus", pattern=EventPattern.load(None), enabled=True, max_attempts=1,
                         max_age_seconds=60, input=settings)

    assert target().payload(event) == event
    assert target(Input='{"fixed": true}').payload(event) == {"fixed": True}
    assert target(InputPath="$.detail").payload(event) == {"tenant": "demo", "record_id": "r1"}
    transformer = {"InputPathsMap": {"who": "$.detail.tenant"}, "InputTemplate": '{"tenant": "<who>"}'}
    assert target(InputTransformer=transformer).payload(event) == {"tenant": "demo"}


def test_pending_deliveries_keep_the_runtime_busy(runtime: LocalRuntime) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_filter(event: Any, context: Any) -> Any:
        started.set()
        release.wait(10)
        return {}

    with runtime.functions.replaced("FilterFunction", slow_filter):
        runtime.client("events").put_events(Entries=[crm_entry(runtime, {"slow": True})])
        assert started.wait(10)
        with pytest.raises(TimeoutError, match="bus event"):
            runtime.wait_idle(timeout=0.3)
        assert post(runtime, "/_local/health", b"", method="GET")[1]["idle"] is False
        release.set()
        runtime.wait_idle(timeout=10)
    assert post(runtime, "/_local/health", b"", method="GET")[1]["idle"] is True


def test_template_intrinsics_resolve_to_local_names() -> None:
    dev = Template.load(ROOT / "template.yaml")
    env = dev.function_environment("FilterFunction")
    assert env["SECRETS_PREFIX"] == "billflow/dev"  # !Sub billflow/${Stage}
    assert env["LOG_RETENTION_DAYS"] == "30"  # !FindInMap [StageSettings, !Ref Stage, ExecutionLogDays]
    assert env["STATE_MACHINE_ARN"] == dev.get_att("BillflowStateMachine", "Arn")  # the function's own
    assert env["EVENT_BUS_NAME"] == "billflow-crm-events"  # !Sub ${AWS::StackName}-crm-events
    assert dev.resources_of_type("AWS::SNS::Subscription") == {}  # Condition HasAlarmEmail is false

    prod = Template.load(ROOT / "template.yaml", {"Stage": "prod", "AlarmEmail": "ops@example.com"})
    assert prod.function_environment("FilterFunction")["LOG_RETENTION_DAYS"] == "400"
    assert list(prod.resources_of_type("AWS::SNS::Subscription")) == ["FailureTopicEmail"]
    with pytest.raises(TemplateError, match="not one of"):
        Template.load(ROOT / "template.yaml", {"Stage": "qa"})


def test_provisioned_tables_are_the_templates(runtime: LocalRuntime) -> None:
    ddb = runtime.client("dynamodb")
    tables = runtime.template.resources_of_type(TABLE)
    assert set(ddb.list_tables()["TableNames"]) == {runtime.name_of(t) for t in tables}
    for logical_id in tables:
        spec = runtime.template.properties(logical_id)
        name = runtime.name_of(logical_id)
        table = ddb.describe_table(TableName=name)["Table"]
        assert table["KeySchema"] == spec["KeySchema"], logical_id
        assert sorted(table["AttributeDefinitions"], key=str) == sorted(spec["AttributeDefinitions"], key=str)
        indexes = {i["IndexName"]: i["KeySchema"] for i in table.get("GlobalSecondaryIndexes", [])}
        assert indexes == {i["IndexName"]: i["KeySchema"] for i in spec.get("GlobalSecondaryIndexes", [])}
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if "TimeToLiveSpecification" in spec:
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == spec["TimeToLiveSpecification"]["AttributeName"]
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_unknown_routes_are_api_gateways_404(runtime: LocalRuntime) -> None:
    assert post(runtime, "/nowhere", b"{}") == (404, {"message": "Not Found"})
    assert post(runtime, "/webhooks/demo/twenty", b"", method="GET") == (404, {"message": "Not Found"})
    assert post(runtime, "/_local/health", b"", method="GET")[0] == 200
    assert post(runtime, "/_local/noop", b'{"a": 1}') == (200, {"ok": True})


def test_many_concurrent_connections_are_all_answered(runtime: LocalRuntime) -> None:
    # More keep-alive clients at once than the server keeps threads waiting for them.
    def client(i: int) -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", runtime.server.port, timeout=10)
        statuses = []
        for _ in range(3):
            connection.request("POST", "/_local/noop", body=json.dumps({"client": i}))
            answer = connection.getresponse()
            assert json.loads(answer.read()) == {"ok": True}
            statuses.append(answer.status)
        connection.close()
        return statuses

    with ThreadPoolExecutor(80) as pool:
        assert list(pool.map(client, range(80))) == [[200, 200, 200]] * 80


def exchange(runtime: LocalRuntime, raw: bytes) -> bytes:
    """Raw bytes in; what the server sent back until it closed or went quiet for a second (a keep-alive)."""
    received = b""
    with socket.create_connection(("127.0.0.1", runtime.server.port), timeout=5) as connection:
        connection.sendall(raw)
        try:
            while chunk := connection.recv(65536):
                received += chunk
                connection.settimeout(1.0)
        except TimeoutError:
            assert received, "no answer: the server hangs"
    return received


def json_answer(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


@pytest.mark.parametrize(("raw", "status"), [
    (b"BREW /_local/noop HTTP/1.1\r\nHost: x\r\n\r\n", 404),  # an unknown method: no route has it
    (b"PURGE /webhooks/demo/twenty HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"POST /_local/noop HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}", 400),
    (b"POST /_local/noop HTTP/1.1\r\nHost: x\r\nContent-Length: two\r\n\r\n{}", 400),
    (b"POST /_local/noop HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    (b"POST /_local/noop HTTP/x.y\r\n\r\n", 400),
    (b"POST /_local/noop\r\n\r\n", 400),
    (b"POST /_local/noop HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
])
def test_malformed_requests_get_api_gateways_json_answers_and_never_a_5xx(
    runtime: LocalRuntime, raw: bytes, status: int
) -> None:
    answer = json_answer(exchange(runtime, raw))
    assert answer[0] == status
    assert answer[1] == {"message": "Not Found" if status == 404 else "Bad Request"}
    assert post(runtime, "/_local/health", b"", method="GET")[0] == 200  # still up


def test_an_http_2_request_line_is_not_a_5xx(runtime: LocalRuntime) -> None:
    raw = exchange(runtime, b"POST /_local/noop HTTP/2.0\r\nHost: x\r\n\r\n")
    assert int(raw.split(b" ", 2)[1]) < 500  # http.server answered 505 (a 5xx for what a client sent)


def test_a_body_over_the_limit_is_413_before_it_is_read(runtime: LocalRuntime) -> None:
    declared = MAX_BODY_BYTES + 1_000_000
    # Only the headers and a first kilobyte are sent: the answer comes without the rest, and no hang.
    raw = exchange(runtime, b"POST /webhooks/demo/twenty HTTP/1.1\r\nHost: x\r\n"
                   + f"Content-Length: {declared}\r\n\r\n".encode() + b"x" * 1024)
    assert json_answer(raw) == (413, {"message": "Request Entity Too Large"})
    assert b"connection: close" in raw.lower()
    assert post(runtime, "/_local/noop", b"{}") == (200, {"ok": True})


def test_keep_alive_and_pipelined_requests_are_answered_in_order(runtime: LocalRuntime) -> None:
    answer = exchange(runtime, b"POST /_local/noop HTTP/1.1\r\nHost: x\r\ncontent-LENGTH: 2\r\n\r\n{}"
                      b"GET /_local/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.index(b'{"ok":true}') < answer.index(b'"status": "ok"')


def test_requests_take_turns_in_arrival_order() -> None:
    turns = Turns(slots=1, stuck_seconds=5)
    order: list[str] = []
    holder = turns.enter()

    def request(name: str) -> None:
        with turns.turn():
            order.append(name)

    threads = []
    for name in ("first", "second", "third"):
        threads.append(threading.Thread(target=request, args=(name,)))
        threads[-1].start()
        while len(turns._waiting) < len(threads):  # queued before the next one arrives
            time.sleep(0.001)
    turns.leave(holder)
    for thread in threads:
        thread.join(5)
    assert order == ["first", "second", "third"]


def test_a_stuck_turn_holds_the_others_up_only_for_a_while() -> None:
    turns = Turns(slots=1, stuck_seconds=0.2)
    stuck = turns.enter()  # a handler waiting on the network, say
    started = time.monotonic()
    assert turns.enter() is False  # went ahead without a turn
    assert 0.2 <= time.monotonic() - started < 2
    turns.leave(stuck)
    assert turns.enter() is True


def test_a_crashing_route_handler_is_api_gateways_500(runtime: LocalRuntime) -> None:
    def crash(event: Any, context: Any) -> Any:
        raise RuntimeError("boom")

    with runtime.functions.replaced("AdminFunction", crash):
        crashed = post(runtime, "/admin/tenants/demo/rules", b"", method="GET")
    assert crashed == (500, {"message": "Internal Server Error"})
    status, listed = post(runtime, "/admin/tenants/demo/rules", b"", method="GET")
    assert status == 200
    assert {rule["id"] for rule in listed["rules"]} == {"won-hook", "proposal-invoice"}


def test_a_handler_exception_is_a_task_failure_named_after_its_class(
    runtime: LocalRuntime, twenty: FakeTwenty
) -> None:
    # An invoice needs an amount: formatting it raises ConfigurationError in the format function.
    status, _, deal = post_stage_change(runtime, twenty, "No amount", "PROPOSAL")
    assert status == 202
    runtime.wait_idle(timeout=30)

    [run] = runs_for(runtime, deal["id"])
    assert (run["status"], run["error"]) == ("FAILED", "RunFailed")
    failures = [e["lambdaFunctionFailedEventDetails"] for e in runtime.history(run["name"])
                if e["type"] == "LambdaFunctionFailed"]
    assert [f["error"] for f in failures] == ["ConfigurationError"]
    cause = json.loads(failures[0]["cause"])
    assert cause["errorType"] == "ConfigurationError"
    assert "amount" in cause["errorMessage"] or "currency" in cause["errorMessage"]
    assert cause["stackTrace"]
    [logged] = log_items(runtime, run["name"])
    assert logged["status"]["S"] == "failed"
    assert logged["reason"]["S"].startswith("ConfigurationError: ")
    notes = [n for n in runtime.notifications() if run["name"] in (n["message"] or "")]
    assert [n["attributes"]["status"] for n in notes] == ["failed"]


def test_the_lambda_api_reports_exceptions_as_lambda_does(runtime: LocalRuntime) -> None:
    answer = runtime.client("lambda").invoke(FunctionName="FormatFunction", Payload=b"{}")
    assert answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert error["errorType"] == "ValidationError"  # pydantic refused the empty run state

    missing = runtime.client("lambda").exceptions.ResourceNotFoundException
    with pytest.raises(missing):
        runtime.client("lambda").invoke(FunctionName="NoSuchFunction", Payload=b"{}")


def test_transient_errors_are_retried_by_the_state_machine(
    runtime: LocalRuntime, twenty: FakeTwenty, receiver: Receiver
) -> None:
    receiver.fail_next(503)  # no Retry-After: the state machine's Retry backs off (fast_retries)
    _, _, deal = post_stage_change(runtime, twenty, "Flaky target", "CUSTOMER")
    runtime.wait_idle(timeout=30)

    [run] = runs_for(runtime, deal["id"])
    assert run["status"] == "SUCCEEDED"
    errors = [e["lambdaFunctionFailedEventDetails"]["error"] for e in runtime.history(run["name"])
              if e["type"] == "LambdaFunctionFailed"]
    assert errors == ["TransientError"]
    assert len(receiver.for_record(deal["id"])) == 2


def test_retry_after_waits_on_the_virtual_clock(
    runtime: LocalRuntime, twenty: FakeTwenty, receiver: Receiver
) -> None:
    receiver.fail_next(429, {"Retry-After": "600"})
    _, _, deal = post_stage_change(runtime, twenty, "Rate limited", "CUSTOMER")

    runtime.wait_idle(timeout=30, include_waiting=False)
    [run] = runs_for(runtime, deal["id"])
    assert run["status"] == "RUNNING"
    assert run["states"][-1] == "WaitRetryAfter"
    with pytest.raises(TimeoutError, match="running"):
        runtime.wait_idle(timeout=0.3)  # ten minutes of real time would be needed

    runtime.advance_clock(600)
    runtime.wait_idle(timeout=30)
    [run] = runs_for(runtime, deal["id"])
    assert run["status"] == "SUCCEEDED"
    assert run["states"].count("Dispatch") == 2
    assert len(receiver.for_record(deal["id"])) == 2


def test_a_bad_connections_file_names_the_file_and_field(tmp_path: Path) -> None:
    connections = tmp_path / "connections.yaml"
    connections.write_text("tenants:\n  demo:\n    connections:\n      hook: {url: 'http://127.0.0.1:9/'}\n")

    with pytest.raises(LocalConfigError) as raised:
        LocalRuntime(ROOT, port=0, connections=connections, echo=None)

    [problem] = raised.value.problems
    assert problem.startswith(f"{connections}: tenants.demo.connections.hook.type: missing")
