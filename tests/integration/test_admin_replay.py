"""Replays through the admin handler, on moto's Step Functions engine (a state machine that always fails).

The run's input comes back from DescribeExecution; the new run is named <original>-r<N>; only failed (or
limited: they fail too), timed-out or aborted runs of the caller's tenant are replayed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.integration.conftest import AdminStack

TENANT = "acme"
KEY = "0123456789abcdef0123456789abcdef01234567"
NAME = f"won-hook-{KEY}"


@pytest.fixture
def stack() -> Iterator[AdminStack]:
    with AdminStack(execute_state_machine=True) as admin:
        yield admin


def run_input(tenant: str = TENANT, name: str = NAME) -> dict[str, Any]:
    """A run's input as the filter writes it (a full RunState document)."""
    from billflow.models.run import RunState

    event = {"event_id": "e1", "tenant": tenant, "source": "twenty", "object": "opportunity", "action": "updated",
             "record_id": "opp-1", "record": {"id": "opp-1"}, "occurred_at": "2026-01-01T00:00:00Z",
             "received_at": "2026-01-01T00:00:00Z"}
    return RunState.model_validate({
        "tenant": tenant, "execution_key": KEY, "execution_name": name, "transition": "stage@1",
        "rule": {"id": "won-hook", "source": "twenty", "object": "opportunity"}, "actions": [],
        "event": event, "daily_limits": {"webhook": 1}, "default_daily_limit": 500,
        "log": {"rule_key": f"{tenant}#won-hook", "record_key": "k", "expires_at": "1"},
    }).model_dump(mode="json")


def start(stack: AdminStack, name: str, document: dict[str, Any], *, wait: bool = True) -> None:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    arn = sfn.start_execution(stateMachineArn=stack.state_machine_arn, name=name,
                              input=json.dumps(document))["executionArn"]
    if wait:
        wait_for(arn)


def wait_for(arn: str) -> dict[str, Any]:
    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    deadline = time.monotonic() + 10
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.02)


def replay(stack: AdminStack, name: str, tenant: str = TENANT) -> tuple[int, Any]:
    return stack.call("POST", f"/admin/tenants/{tenant}/executions/{name}/replay")


def test_a_failed_run_is_started_again_with_its_input_under_the_next_name(stack: AdminStack) -> None:
    from billflow.models.rules import TenantSettings

    start(stack, NAME, run_input())
    stack.store.put_tenant_settings(TENANT, TenantSettings(daily_limits={"webhook": 50}))
    status, answer = replay(stack, NAME)
    assert status == 200, answer
    assert answer["execution"] == f"{NAME}-r1"
    assert (answer["replay_of"], answer["original_status"], answer["original_error"]) == (
        NAME, "FAILED", "RunFailed")
    replayed = wait_for(answer["execution_arn"])
    document = json.loads(replayed["input"])
    expected = run_input()
    assert document["execution_key"] == expected["execution_key"]  # the same idempotency keys
    assert document["execution_name"] == f"{NAME}-r1"
    assert document["daily_limits"] == {"webhook": 50}  # the tenant's limits now, not then
    assert int(document["log"]["expires_at"]) > time.time()
    for same in ("tenant", "transition", "rule", "actions", "event"):
        assert document[same] == expected[same]

    # Replaying again, from the original or from a replay, counts on: -r2, -r3.
    assert replay(stack, NAME)[1]["execution"] == f"{NAME}-r2"
    wait_for(replay(stack, f"{NAME}-r1")[1]["execution_arn"])
    assert {e["name"] for e in stack.executions()} == {NAME, f"{NAME}-r1", f"{NAME}-r2", f"{NAME}-r3"}


def test_only_failed_runs_of_the_tenant_are_replayed(stack: AdminStack) -> None:
    start(stack, NAME, run_input())
    assert replay(stack, NAME, tenant="globex")[0] == 404  # another tenant's run is unknown
    assert replay(stack, "never-ran")[0] == 404
    assert replay(stack, "bad name!")[0] == 400


def test_a_running_or_succeeded_run_is_not_replayed(stack: AdminStack, monkeypatch: pytest.MonkeyPatch) -> None:
    from billflow import settings

    sfn = boto3.client("stepfunctions", region_name="us-east-1")
    passing = sfn.create_state_machine(
        name="passes", roleArn="arn:aws:iam::123456789012:role/runs",
        definition=json.dumps({"StartAt": "Ok", "States": {"Ok": {"Type": "Succeed"}}}),
    )["stateMachineArn"]
    waiting = sfn.create_state_machine(
        name="waits", roleArn="arn:aws:iam::123456789012:role/runs",
        definition=json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}),
    )["stateMachineArn"]
    for machine, status, code in ((passing, "succeeded", 400), (waiting, "still going", 409)):
        monkeypatch.setenv("STATE_MACHINE_ARN", machine)
        settings.get_settings.cache_clear()
        arn = sfn.start_execution(stateMachineArn=machine, name=NAME, input=json.dumps(run_input()))["executionArn"]
        if machine == passing:
            wait_for(arn)
        got, answer = replay(stack, NAME)
        assert got == code, answer
        assert status in answer["message"]
    stopped = f"{waiting.replace(':stateMachine:', ':execution:')}:{NAME}"
    sfn.stop_execution(executionArn=stopped)
    assert wait_for(stopped)["status"] == "ABORTED"
    got, answer = replay(stack, NAME)  # aborted: may be run again
    assert got == 200, answer
    assert answer["original_status"] == "ABORTED"
