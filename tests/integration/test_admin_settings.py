"""Tenant settings, connections and usage through the admin API's handler on moto (issue 13): what is stored,
what is answered (never a secret value), what is refused and how (400 naming the field)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import AdminStack

TENANT = "acme"
SECRET = "sk_test_NEVER_SHOWN_4242"

SETTINGS: dict[str, Any] = {
    "daily_limits": {"stripe.invoice": 25, "webhook": 1},
    "default_daily_limit": 40,
    "usage_alert": {"threshold_percent": 75, "recipients": ["billing@example.com"]},
    "failure_digest": {"frequency": "weekly", "time": "09:30", "timezone": "Europe/Paris",
                       "recipients": ["ops@example.com"]},
    "default_timezone": "Europe/Paris",
}


@pytest.fixture
def stack() -> Iterator[AdminStack]:
    with AdminStack() as admin:
        yield admin


def path(*rest: str, tenant: str = TENANT) -> str:
    return "/".join([f"/admin/tenants/{tenant}", *rest])


def secret_document(name: str, tenant: str = TENANT) -> Any:
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    return json.loads(sm.get_secret_value(SecretId=f"billflow/test/{tenant}/connection/{name}")["SecretString"])


# ------------------------------------------------------------------------------------------- settings
def test_settings_default_to_the_stack_s_and_round_trip(stack: AdminStack) -> None:
    empty = stack.ok("GET", path("settings"))
    assert empty == {"daily_limits": {}, "default_daily_limit": 500, "usage_alert": None, "failure_digest": None,
                     "default_timezone": "UTC", "updated_at": None}

    saved = stack.ok("PUT", path("settings"), SETTINGS)
    assert saved["updated_at"] is not None
    read = stack.ok("GET", path("settings"))
    assert read == saved
    assert read["failure_digest"] == {**SETTINGS["failure_digest"], "weekday": "monday"}
    assert read["daily_limits"] == SETTINGS["daily_limits"]
    # Another tenant's settings are its own.
    assert stack.ok("GET", path("settings", tenant="globex"))["daily_limits"] == {}


def test_runs_read_the_settings_saved_through_the_api(stack: AdminStack) -> None:
    """The filter, scheduler, replay and digests read the settings through RuleStore.tenant_settings."""
    stack.ok("PUT", path("settings"), SETTINGS)
    stored = stack.store.tenant_settings(TENANT)
    assert stored.daily_limits == {"stripe.invoice": 25, "webhook": 1}
    assert stored.default_daily_limit == 40
    assert stored.usage_alert is not None and stored.usage_alert.threshold_percent == 75
    assert stored.failure_digest is not None
    assert (stored.failure_digest.at, stored.failure_digest.timezone) == ("09:30", "Europe/Paris")
    assert stored.default_timezone == "Europe/Paris"

    from billflow.logic.filter import build_run_state
    from billflow.models.events import CrmEvent
    from billflow.models.rules import Rule
    from billflow.rules.engine import RuleVerdict

    rule = Rule.model_validate({"id": "r", "tenant": TENANT, "source": "twenty", "object": "opportunity",
                                "trigger": {"type": "event", "on": "edited"},
                                "actions": [{"type": "webhook", "connection": "hook"}]})
    event = CrmEvent(event_id="e1", tenant=TENANT, source="twenty", object="opportunity", action="updated",
                     record_id="r1", record={}, occurred_at=datetime.now(UTC), received_at=datetime.now(UTC))
    state = build_run_state(event, RuleVerdict(rule, True, "matched"), stored.daily_limits, stored.usage_alert,
                            stored.default_daily_limit)
    assert state.default_daily_limit == 40  # the tenant's own default, not the stack's 500
    assert state.daily_limits["webhook"] == 1


def test_a_digest_can_be_switched_off(stack: AdminStack) -> None:
    stack.ok("PUT", path("settings"), {"failure_digest": {"frequency": "off"}})
    assert stack.ok("GET", path("settings"))["failure_digest"]["frequency"] == "off"

    from billflow.logic.limits import send_failure_digests

    assert send_failure_digests(datetime.now(UTC), stack.store) == []


@pytest.mark.parametrize(("change", "field"), [
    ({"failure_digest": {"frequency": "daily", "time": "25:00"}}, "failure_digest.time"),
    ({"failure_digest": {"frequency": "hourly"}}, "failure_digest.frequency"),
    ({"failure_digest": {"timezone": "Mars/Olympus"}}, "failure_digest.timezone"),
    ({"usage_alert": {"threshold_percent": 0}}, "usage_alert.threshold_percent"),
    ({"usage_alert": {"threshold_percent": 80, "recipients": ["not-an-address"]}}, "usage_alert.recipients"),
    ({"daily_limits": {"stripe.invoice": 0}}, "daily_limits.stripe.invoice"),
    ({"daily_limits": {"Stripe Invoice!": 3}}, "daily_limits"),
    ({"default_daily_limit": 0}, "default_daily_limit"),
    ({"default_timezone": "Nowhere/Town"}, "default_timezone"),
    ({"limits": {}}, "limits"),
])
def test_bad_settings_are_refused_with_400_naming_the_field(
    stack: AdminStack, change: dict[str, Any], field: str,
) -> None:
    stack.ok("PUT", path("settings"), SETTINGS)
    status, answer = stack.call("PUT", path("settings"), {**SETTINGS, **change})
    assert status == 400, answer
    assert answer["error"] == "InvalidRequest"
    assert field in answer["details"]["fields"], answer
    assert answer["message"].startswith(field)
    # Nothing was written.
    assert stack.ok("GET", path("settings"))["daily_limits"] == SETTINGS["daily_limits"]


# ------------------------------------------------------------------------------------------- connections
def test_a_connection_is_created_listed_updated_and_deleted_without_its_values(
    stack: AdminStack, caplog: pytest.LogCaptureFixture,
) -> None:
    logging.getLogger("billflow").setLevel(logging.INFO)  # the routes' own log lines are checked too
    caplog.set_level(logging.INFO)
    try:
        created = stack.ok("PUT", path("connections", "stripe-main"),
                           {"type": "stripe", "settings": {"api_key": SECRET, "currency": "eur"}})
        assert created["created"] is True
        assert created["connection"]["keys"] == ["api_key", "currency"]
        assert secret_document("stripe-main") == {"type": "stripe", "api_key": SECRET, "currency": "eur"}

        listed = stack.ok("GET", path("connections"))["connections"]
        assert [(c["name"], c["type"], c["keys"]) for c in listed] == [("stripe-main", "stripe",
                                                                         ["api_key", "currency"])]
        assert listed[0]["updated_at"]

        # Update: merged (the key is not asked again), a null removes a setting.
        updated = stack.ok("PUT", path("connections", "stripe-main"),
                           {"type": "stripe", "settings": {"currency": None, "base_url": "http://127.0.0.1:9"}})
        assert updated["created"] is False
        assert updated["connection"]["keys"] == ["api_key", "base_url"]
        assert secret_document("stripe-main")["api_key"] == SECRET

        answers = [created, listed, updated, stack.ok("DELETE", path("connections", "stripe-main"))]
    finally:
        logging.getLogger("billflow").setLevel(logging.ERROR)
    assert SECRET not in json.dumps(answers)
    # The log was on, and its records (with every extra field) say which keys, never their values.
    logged = "\n".join(json.dumps(record.__dict__, default=str) for record in caplog.records)
    assert "connection saved" in logged
    assert '"keys": ["api_key", "currency"]' in logged
    assert SECRET not in logged
    assert stack.ok("GET", path("connections")) == {"connections": []}
    status, answer = stack.call("DELETE", path("connections", "stripe-main"))
    assert (status, answer["error"]) == (404, "NotFound")


def test_a_type_change_or_replace_drops_the_old_settings(stack: AdminStack) -> None:
    stack.ok("PUT", path("connections", "main"), {"type": "stripe", "settings": {"api_key": SECRET}})
    stack.ok("PUT", path("connections", "main"), {"type": "webhook", "settings": {"url": "https://example.com/h"}})
    assert secret_document("main") == {"type": "webhook", "url": "https://example.com/h"}
    stack.ok("PUT", path("connections", "main"),
             {"type": "webhook", "settings": {"url": "https://example.com/2"}, "replace": True})
    assert secret_document("main") == {"type": "webhook", "url": "https://example.com/2"}


@pytest.mark.parametrize(("name", "body", "field"), [
    ("stripe-main", {"type": "stripe", "settings": {}}, "settings"),
    ("stripe-main", {"type": "paypal", "settings": {"api_key": "k"}}, "type"),
    ("Bad Name", {"type": "stripe", "settings": {"api_key": "k"}}, None),
    ("x", {"type": "stripe", "settings": {"type": "webhook", "api_key": "k"}}, "settings.type"),
    ("x", {"type": "xero", "settings": {"client_id": "c"}}, "settings"),
    ("x", {"type": "stripe"}, "settings"),
    ("x", {"settings": {"api_key": "k"}}, "type"),
    ("x", {"type": "stripe", "settings": {"api_key": "k"}, "colour": "red"}, "colour"),
])
def test_bad_connections_are_refused_with_400(
    stack: AdminStack, name: str, body: dict[str, Any], field: str | None,
) -> None:
    status, answer = stack.call("PUT", path("connections", name.replace(" ", "%20")), body)
    assert status == 400, answer
    assert answer["error"] == "InvalidRequest"
    if field:
        assert field in answer["details"]["fields"], answer
    assert stack.ok("GET", path("connections")) == {"connections": []}


def test_a_hubspot_connection_takes_a_private_app_token_or_an_oauth_app(stack: AdminStack) -> None:
    stack.ok("PUT", path("connections", "crm"), {"type": "hubspot", "settings": {"access_token": "pat-1"}})
    answer = stack.ok("PUT", path("connections", "crm-oauth"),
                      {"type": "hubspot", "settings": {"client_id": "c", "client_secret": "s"}})
    assert answer["connection"]["connected"] is False  # an OAuth app without a grant yet
    status, refused = stack.call("PUT", path("connections", "crm-2"), {"type": "hubspot", "settings": {}})
    assert status == 400
    assert "access_token or client_id and client_secret" in refused["message"]


def test_connections_of_other_tenants_are_not_listed(stack: AdminStack) -> None:
    stack.ok("PUT", path("connections", "a"), {"type": "stripe", "settings": {"api_key": SECRET}})
    stack.ok("PUT", path("connections", "b", tenant="acme-eu"), {"type": "stripe", "settings": {"api_key": SECRET}})
    assert [c["name"] for c in stack.ok("GET", path("connections"))["connections"]] == ["a"]
    assert [c["name"] for c in stack.ok("GET", path("connections", tenant="acme-eu"))["connections"]] == ["b"]


# ------------------------------------------------------------------------------------------- usage
def test_usage_counts_today_against_limits_and_days_from_the_log(stack: AdminStack) -> None:
    import boto3
    from billflow.storage.execution_log import get_execution_log, log_item
    from billflow.storage.keys import counter_pk

    stack.ok("PUT", path("settings"), {"daily_limits": {"stripe.invoice": 10}, "default_daily_limit": 50})
    stack.ok("POST", path("rules"), {
        "id": "hook", "source": "twenty", "object": "opportunity", "trigger": {"type": "event", "on": "edited"},
        "actions": [{"type": "webhook", "connection": "hook"}]})
    now = datetime.now(UTC)
    today = now.strftime("%Y-%m-%d")
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    ddb.put_item(TableName=stack.tables["CountersTable"], Item={
        "pk": {"S": counter_pk(TENANT, "stripe.invoice", today)}, "count": {"N": "7"}, "sent": {"N": "6"}})
    log = get_execution_log()
    yesterday = now - timedelta(days=1)
    for status, at, n in (("sent", now, 3), ("failed", now, 1), ("sent", yesterday, 2), ("limited", yesterday, 4),
                          ("sent", now - timedelta(days=40), 9)):
        for i in range(n):
            log.write(log_item(tenant=TENANT, execution=f"run-{status}-{at:%d}-{i}", rule_id="hook",
                               record_key="k", step="action-0", status=status, at=at))
    log.write(log_item(tenant="globex", execution="other", rule_id="hook", record_key="k", step="action-0",
                       status="sent", at=now))

    usage = stack.ok("GET", path("usage"), query={"days": "30"})
    assert usage["today"] == [{"action_type": "stripe.invoice", "count": 7, "limit": 10},
                              {"action_type": "webhook", "count": 0, "limit": 50}]
    assert len(usage["days"]) == 30
    assert usage["days"][-1] == {"date": today, "sent": 3, "failed": 1, "limited": 0}
    assert usage["days"][-2] == {"date": yesterday.strftime("%Y-%m-%d"), "sent": 2, "failed": 0, "limited": 4}
    assert sum(d["sent"] for d in usage["days"]) == 5  # 40 days ago and globex's are not counted

    status, answer = stack.call("GET", path("usage"), query={"days": "0"})
    assert status == 422, answer


# ------------------------------------------------------------------------------------------- run paths
def test_a_run_s_path_is_read_from_its_history_for_its_tenant_only() -> None:
    """moto executes the stack's state machine (one Fail state here); the path comes from its history."""
    import time

    import boto3

    with AdminStack(execute_state_machine=True) as stack:
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        arn = sfn.start_execution(stateMachineArn=stack.state_machine_arn, name="won-hook-abc",
                                  input=json.dumps({"tenant": TENANT}))["executionArn"]
        for _ in range(100):
            if sfn.describe_execution(executionArn=arn)["status"] != "RUNNING":
                break
            time.sleep(0.02)
        answer = stack.ok("GET", path("executions", "won-hook-abc", "path"))
        assert answer["status"] == "FAILED"
        assert [(s["name"], s["status"]) for s in answer["states"]] == [("Fail", "failed")]
        assert answer["states"][0]["entered"]
        status, refused = stack.call("GET", path("executions", "won-hook-abc", "path", tenant="globex"))
        assert (status, refused["error"]) == (404, "NotFound")  # another tenant's run is not found
        assert stack.call("GET", path("executions", "no-such-run", "path"))[0] == 404
        definition = stack.ok("GET", "/admin/statemachine")["definition"]
        assert definition["StartAt"] == "Fail"


def test_rules_that_name_no_time_zone_take_the_tenant_s_default(stack: AdminStack) -> None:
    stack.ok("PUT", path("settings"), {"default_timezone": "Europe/Paris"})
    unnamed = {"id": "paris", "source": "twenty", "object": "opportunity",
               "trigger": {"type": "event", "on": "edited"}, "actions": [{"type": "webhook", "connection": "hook"}]}
    named = {**unnamed, "id": "utc", "timezone": "UTC"}
    assert stack.ok("POST", path("rules"), unnamed)["rule"]["timezone"] == "Europe/Paris"
    assert stack.ok("POST", path("rules"), named)["rule"]["timezone"] == "UTC"
    plan = stack.ok("POST", path("rules", "plan"), {"rules": [unnamed, named]})["plan"]
    assert plan["unchanged"] == ["paris", "utc"]

    stack.ok("PUT", path("settings"), {"default_timezone": "America/New_York"})
    plan = stack.ok("POST", path("rules", "plan"), {"rules": [unnamed, named]})["plan"]
    assert (plan["change"], plan["fields"]) == (["paris"], {"paris": ["timezone"]})
    stack.ok("POST", path("rules", "apply"), {"rules": [unnamed, named]})
    assert {r.id: r.timezone for r in stack.store.all_rules(TENANT)} == {"paris": "America/New_York",
                                                                          "utc": "UTC"}
