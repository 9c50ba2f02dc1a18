"""Twenty delivers each webhook at most once: a won opportunity whose webhook was dropped on purpose is
invoiced by the reconciliation sweep (Twenty's search over its REST API), and the ones whose webhook came are
never invoiced twice, on the local runtime with the Twenty and Stripe stand-ins."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from billflow_cli.main import main as billflow
from tests.e2e.conftest import TENANT, Stack


def twenty_time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_dropped_twenty_webhook_is_recovered_by_the_sweep_and_delivered_ones_are_not_invoiced_twice(
    stack: Stack, capsys: pytest.CaptureFixture[str],
) -> None:
    won_at = datetime.now(UTC) - timedelta(minutes=5)
    events = [stack.new_opportunity(updatedAt=twenty_time(won_at)) for _ in range(3)]
    for event in events:
        event["eventDate"] = twenty_time(won_at + timedelta(milliseconds=46))  # Twenty's job runs just after
    *delivered, dropped = events
    for event in delivered:
        assert stack.post_signed(event)[0] == 202
    stack.runtime.wait_idle()
    capsys.readouterr()

    sweep = ["sweep", "--api", stack.runtime.url, "--tenant", TENANT, "--rule", "won-to-stripe", "--since", "1h"]
    assert billflow([*sweep, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    stack.runtime.wait_idle()
    assert billflow([*sweep, "--json"]) == 0  # again: everything has its document now
    again = json.loads(capsys.readouterr().out)
    stack.runtime.wait_idle()

    dropped_id = dropped["record"]["id"]
    assert dropped_id in report["fed"] and len(report["started"]) >= 1
    assert not {e["record"]["id"] for e in delivered} & set(report["fed"])
    assert dropped_id not in again["fed"]
    for event in events:
        assert len(stack.invoices_for(event["record"]["id"])) == 1, event["record"]["id"]
    [run] = stack.executions_for(dropped_id)
    assert run["status"] == "SUCCEEDED"
    assert stack.twenty.violations == [] and stack.stripe.violations == []
