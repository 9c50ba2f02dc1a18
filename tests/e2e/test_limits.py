"""Issue 3's limits on the local runtime: a daily limit holds exactly at its boundary with runs racing for
it, admins hear once when usage reaches the threshold, and the failure digest lists what failed or was
limited since the previous one, once per scheduled time."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from billflow_local.runtime import LocalRuntime
from tests.fakes.signing import post_stage_change
from tests.fakes.twenty_server import FakeTwenty

ROOT = Path(__file__).resolve().parents[2]
TENANT = "limited"
SIGNING_SECRET = "limits-e2e-secret"
SENDER = "billflow@billflow.example.com"
OPS = "ops@billflow.example.com"
LIMIT = 5

RULES = """\
id: won-notify
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: CUSTOMER}
actions:
  - type: notification
    options: {message: "won {{ record.id }}"}
---
id: broken-hook
source: twenty
object: opportunity
trigger: {type: event, on: edited}
criteria:
  - {field: stage, comparator: changed_to, value: MEETING}
actions:
  - {type: webhook, connection: nowhere}
"""


@dataclass
class LimitStack:
    runtime: LocalRuntime
    twenty: FakeTwenty

    def post_stage(self, name: str, stage: str) -> dict[str, Any]:
        deal = self.twenty.add_opportunity(name, stage=stage)
        assert post_stage_change(self.runtime.url, TENANT, SIGNING_SECRET, deal, timeout=10) == 202
        return deal

    def topic_notes(self, status: str) -> list[dict[str, Any]]:
        return [n for n in self.runtime.notifications()
                if n["attributes"].get("tenant") == TENANT and n["attributes"].get("status") == status]

    def emails(self) -> list[Any]:
        return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitStack]:
    twenty = FakeTwenty().start()
    folder = tmp_path_factory.mktemp("limits")
    (folder / "rules.yaml").write_text(RULES)
    connections = {"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {"twenty": twenty.connection_settings(),
                        "nowhere": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}},
        "settings": {
            "daily_limits": {"notification": LIMIT},
            "usage_alert": {"threshold_percent": 80, "recipients": [OPS]},
            "failure_digest": {"frequency": "daily", "at": "08:00", "timezone": "UTC", "recipients": [OPS]},
        },
    }}}
    runtime = LocalRuntime(ROOT, port=0, rules=folder / "rules.yaml", connections=connections, tenant=TENANT,
                           parameters={"SesFromAddress": SENDER}, echo=None, fast_retries=True)
    runtime.start()
    try:
        runtime.client("sesv2").create_email_identity(EmailIdentity=SENDER)
        yield LimitStack(runtime, twenty)
    finally:
        runtime.stop()
        twenty.stop()


def test_a_limit_of_five_with_eight_runs_racing_sends_exactly_five(stack: LimitStack) -> None:
    with ThreadPoolExecutor(8) as pool:
        deals = list(pool.map(lambda i: stack.post_stage(f"Rush {i}", "CUSTOMER"), range(8)))
    stack.runtime.wait_idle(60)

    ids = {deal["id"] for deal in deals}
    runs = [run for run in stack.runtime.executions() if run["input"]["event"]["record_id"] in ids]
    outcomes = sorted((run["status"], run["error"]) for run in runs)
    assert outcomes == [("FAILED", "DailyLimitReached")] * 3 + [("SUCCEEDED", None)] * LIMIT
    sent = [n for n in stack.runtime.notifications() if '"won ' in (n["message"] or "")]
    assert len(sent) == LIMIT
    assert len(stack.topic_notes("limited")) == 3

    # 80 % of 5 is the 4th send: admins are told once (by whichever of the 4th and 5th runs gets there
    # first), on the topic and by email.
    [alert] = stack.topic_notes("usage_threshold")
    assert alert["attributes"]["action_type"] == "notification"
    assert re.search(r"Tenant limited: [45] of 5 notification sends allowed on \S+ \(UTC\) are used", alert["message"])
    [email] = [m for m in stack.emails() if "daily limit" in m.subject]
    assert email.destinations == {"ToAddresses": [OPS]}
    assert email.source == SENDER


def test_the_failure_digest_lists_failed_and_limited_runs_once(stack: LimitStack) -> None:
    broken = stack.post_stage("Broken", "MEETING")
    stack.runtime.wait_idle(60)
    [failed] = [r for r in stack.runtime.executions() if r["input"]["event"]["record_id"] == broken["id"]]
    assert failed["status"] == "FAILED"

    now = datetime.now(UTC)
    digest_time = now.replace(hour=8, minute=0, second=0, microsecond=0)
    if digest_time <= now:
        digest_time += timedelta(days=1)
    scheduled = {"time": (digest_time + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    before = stack.runtime.invoke("SchedulerFunction",
                                  {"time": (digest_time - timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    first = stack.runtime.invoke("SchedulerFunction", scheduled)
    second = stack.runtime.invoke("SchedulerFunction", scheduled)

    assert TENANT not in before["digests"]  # not its time yet (the previous digest time has no failures)
    assert first["digests"] == [TENANT] and second["digests"] == []
    [digest] = stack.topic_notes("failure_digest")
    assert "1 failed and 3 limited run(s)" in digest.get("subject", "")
    assert f"rule broken-hook, record twenty:opportunity:{broken['id']}" in digest["message"]
    assert digest["message"].count("limited: rule won-notify") == 3
    [email] = [m for m in stack.emails() if "limited run(s)" in m.subject]
    assert email.destinations == {"ToAddresses": [OPS]}
    assert json.dumps(first)  # the scheduler's answer is JSON, as Lambda returns it
