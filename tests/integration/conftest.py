"""Fixtures the integration tests share: `AdminStack`, the admin handler on moto with template.yaml's tables
(used by the admin API, dry-run, replay and CLI tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

from billflow_local.process import patched_environment, reset_billflow_caches
from billflow_local.template import TABLE, Template

ROOT = Path(__file__).resolve().parents[2]
STATE_MACHINE_NAME = "billflow-test-runs"


def _load_admin_app() -> ModuleType:
    name = f"billflow_admin_app_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "admin" / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    function_name = "AdminFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:AdminFunction"
    aws_request_id = "test-request"


class AdminStack:
    """moto with the template's tables (and a state machine), billflow pointed at them, the admin app."""

    def __init__(self, execute_state_machine: bool = False) -> None:
        self.execute = execute_state_machine
        self.template = Template.load(ROOT / "template.yaml")
        self.tables: dict[str, str] = {}
        self.state_machine_arn = ""
        self.app: ModuleType | None = None
        self._stack = ExitStack()

    def __enter__(self) -> AdminStack:
        from moto import mock_aws

        self._stack.enter_context(patched_environment({
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_SERVICE_NAME": "billflow", "SECRETS_PREFIX": "billflow/test",
            # as template.yaml gives the admin function: where tenant schedules go and what they invoke
            "SCHEDULE_GROUP_PREFIX": "billflow-test",
            "SCHEDULER_FUNCTION_ARN": "arn:aws:lambda:us-east-1:123456789012:function:SchedulerFunction",
            "SCHEDULES_ROLE_ARN": "arn:aws:iam::123456789012:role/billflow-test-SchedulesRole",
        }))
        config = {"stepfunctions": {"execute_state_machine": True}} if self.execute else None
        self._stack.enter_context(mock_aws(config=config) if config else mock_aws())
        import boto3

        ddb = boto3.client("dynamodb", region_name="us-east-1")
        for logical_id in self.template.resources_of_type(TABLE):
            props = self.template.resolve(self.template.properties(logical_id))
            name = self.template.physical_name(logical_id)
            kwargs: dict[str, Any] = {k: props[k] for k in ("AttributeDefinitions", "KeySchema")}
            if props.get("GlobalSecondaryIndexes"):
                kwargs["GlobalSecondaryIndexes"] = [
                    {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
                    for index in props["GlobalSecondaryIndexes"]
                ]
            ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **kwargs)
            self.tables[logical_id] = name
        self.state_machine_arn = boto3.client("stepfunctions", region_name="us-east-1").create_state_machine(
            name=STATE_MACHINE_NAME, roleArn="arn:aws:iam::123456789012:role/runs",
            definition=json.dumps({"StartAt": "Fail", "States": {
                "Fail": {"Type": "Fail", "Error": "RunFailed", "Cause": "test"}}}),
        )["stateMachineArn"]
        self._stack.enter_context(patched_environment({
            "RULES_TABLE": self.tables["RulesTable"], "RECORDS_TABLE": self.tables["RecordsTable"],
            "COUNTERS_TABLE": self.tables["CountersTable"], "IDEMPOTENCY_TABLE": self.tables["IdempotencyTable"],
            "EXECUTION_LOG_TABLE": self.tables["ExecutionLogTable"], "STATE_MACHINE_ARN": self.state_machine_arn,
        }))
        reset_billflow_caches()
        self._stack.callback(reset_billflow_caches)
        self.app = _load_admin_app()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # --- calling the API ----------------------------------------------------------------------------
    def call(
        self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None,
        authorizer: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """The handler's answer to an HTTP API event; `authorizer` replaces the IAM caller (e.g. the JWT
        authorizer's {"jwt": {"claims": ..., "scopes": None}} of a console user)."""
        assert self.app is not None
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": f"{method} {path}",
            "rawPath": path,
            "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
            "headers": {"content-type": "application/json", "host": "admin.local"},
            "requestContext": {
                "accountId": "123456789012", "apiId": "local", "domainName": "admin.local",
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                         "userAgent": "test"},
                "requestId": uuid.uuid4().hex, "routeKey": f"{method} {path}", "stage": "$default",
                "authorizer": {"iam": {"accessKey": "TEST", "accountId": "123456789012", "callerId": "TEST",
                                       "userArn": "arn:aws:iam::123456789012:user/admin", "userId": "TEST"}},
            },
            "isBase64Encoded": False,
        }
        if authorizer is not None:
            event["requestContext"]["authorizer"] = authorizer
        if query:
            event["queryStringParameters"] = query
        if body is not None:
            event["body"] = json.dumps(body)
        answer = self.app.handler(event, LambdaContext())
        return answer["statusCode"], json.loads(answer["body"]) if answer.get("body") else None

    def ok(self, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        status, answer = self.call(method, path, body, query)
        assert status == 200, (status, answer)
        return answer

    # --- looking at what is stored ------------------------------------------------------------------
    @property
    def store(self) -> Any:
        from billflow.storage.rules import get_rule_store

        return get_rule_store()

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every item of every table: compared before and after, it proves nothing was written."""
        import boto3

        ddb = boto3.client("dynamodb", region_name="us-east-1")
        return {name: sorted((ddb.scan(TableName=name)["Items"]), key=lambda i: json.dumps(i, sort_keys=True))
                for name in self.tables.values()}

    def executions(self) -> list[dict[str, Any]]:
        import boto3

        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        return list(sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"])

    def put_connection(self, tenant: str, name: str, settings: dict[str, Any]) -> None:
        import boto3

        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=f"billflow/test/{tenant}/connection/{name}", SecretString=json.dumps(settings))
