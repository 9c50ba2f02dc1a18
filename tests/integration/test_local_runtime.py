"""The local runtime: template.yaml on moto, the real handlers in-process, the HTTP API on localhost.

One runtime serves the module (starting it costs seconds); every test uses its own opportunity, so tests
do not see each other's runs. The CRM is the contract-checked fake Twenty, the target a local receiver.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from billflow_local.runtime import LocalConfigError, LocalRuntime
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
