"""Issue 8 §2 on the local runtime: a deal won, reopened and won again is invoiced once (the example rule
finds the first invoice in the record's write-back field; a rule without one finds it in the execution log),
unless its rule says `once_per: transition`."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from billflow.storage.execution_log import ExecutionLog

from billflow_local.runtime import load_rules
from tests.e2e.conftest import TENANT, Stack

# The example rule (won-to-stripe) invoices on CUSTOMER and writes the id back to invoiceId. These two
# invoice on other stages, with no write-back: one per record (the default) and one per transition.
INVOICE = {"type": "stripe.invoice", "connection": "stripe-main", "options": {"description": "{{ record.name }}"}}
EDITED = {"type": "event", "on": "edited"}
RULES = [
    {"id": "signed-by-log", "source": "twenty", "object": "opportunity", "trigger": EDITED,
     "criteria": [{"field": "stage", "comparator": "changed_to", "value": "SCREENING"}], "actions": [INVOICE]},
    {"id": "each-meeting", "source": "twenty", "object": "opportunity", "trigger": EDITED, "once_per": "transition",
     "criteria": [{"field": "stage", "comparator": "changed_to", "value": "MEETING"}], "actions": [INVOICE]},
]


@pytest.fixture(scope="module", autouse=True)
def more_rules(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("once") / "rules.yaml"
    path.write_text(yaml.safe_dump_all(RULES))
    stack.runtime.put_rules(load_rules(path, TENANT))


def move(stack: Stack, event: dict[str, Any], stage: str, hour: int) -> dict[str, Any]:
    """The deal moved to `stage` at `hour`:00, delivered as Twenty sends it (the record as it is now)."""
    record_id = event["record"]["id"]
    moved = copy.deepcopy(event)
    moved["record"] = {**moved["record"], **stack.twenty.patched("opportunity", record_id), "stage": stage}
    moved["record"]["updatedAt"] = moved["eventDate"] = f"2026-03-18T{hour:02d}:00:00.000Z"
    moved["updatedFields"] = ["stage"]
    status, _ = stack.post_signed(moved)
    assert status == 202
    stack.runtime.wait_idle(60)
    return moved


def log_for(stack: Stack, record_id: str) -> list[dict[str, Any]]:
    log = ExecutionLog(stack.runtime.name_of("ExecutionLogTable"))
    return log.by_record(f"{TENANT}#twenty#opportunity#{record_id}")


def test_a_deal_won_reopened_and_won_again_is_invoiced_once(stack: Stack) -> None:
    event = stack.new_opportunity(stage="CUSTOMER")
    record_id = event["record"]["id"]
    move(stack, event, "CUSTOMER", 10)
    [invoice] = stack.invoices_for(record_id)
    assert stack.twenty.patched("opportunity", record_id)["invoiceId"] == invoice["id"]

    move(stack, event, "PROPOSAL", 11)
    move(stack, event, "CUSTOMER", 12)

    assert [i["id"] for i in stack.invoices_for(record_id)] == [invoice["id"]]
    runs = stack.executions_for(record_id)
    assert [r["status"] for r in runs] == ["SUCCEEDED", "SUCCEEDED"]  # the second run ran, and made nothing
    skipped = [i for i in log_for(stack, record_id) if i["status"] == "skipped" and i["step"] == "action-0"]
    assert [(i["reason"], i["execution"]) for i in skipped] == [(f"already invoiced {invoice['id']}", runs[1]["name"])]
    assert stack.stripe.violations == []


def test_without_a_write_back_field_the_execution_log_finds_the_first_invoice(stack: Stack) -> None:
    event = stack.new_opportunity(stage="NEW")
    record_id = event["record"]["id"]
    move(stack, event, "SCREENING", 10)
    move(stack, event, "NEW", 11)
    move(stack, event, "SCREENING", 12)

    [invoice] = stack.invoices_for(record_id)
    reasons = [i["reason"] for i in log_for(stack, record_id) if i["status"] == "skipped"]
    assert reasons == [f"already invoiced {invoice['id']}"]


def test_once_per_transition_invoices_each_time(stack: Stack) -> None:
    event = stack.new_opportunity(stage="NEW")
    record_id = event["record"]["id"]
    move(stack, event, "MEETING", 10)
    move(stack, event, "NEW", 11)
    move(stack, event, "MEETING", 12)

    assert len(stack.invoices_for(record_id)) == 2
    assert not [i for i in log_for(stack, record_id) if i["status"] == "skipped"]
