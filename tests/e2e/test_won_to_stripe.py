"""Issue 2 end to end on the local runtime: a signed Twenty "won" webhook becomes exactly one Stripe
invoice, written back to the opportunity; duplicates, later edits and bad input start nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from billflow.storage.execution_log import ExecutionLog

from tests.e2e.conftest import SIGNING_SECRET, TENANT, Stack, concurrently
from tests.fakes.signing import signed_twenty_delivery, twenty_body, twenty_headers


def log_for(stack: Stack, record_id: str) -> list[dict[str, object]]:
    log = ExecutionLog(stack.runtime.name_of("ExecutionLogTable"))
    return log.by_record(f"{TENANT}#twenty#opportunity#{record_id}")


def test_a_signed_won_webhook_creates_one_finalized_invoice_and_writes_it_back(stack: Stack) -> None:
    event = stack.new_opportunity()
    record_id = event["record"]["id"]

    status, answer = stack.post_signed(event)
    stack.runtime.wait_idle(60)

    assert status == 202 and answer["accepted"] == 1
    [execution] = stack.executions_for(record_id)
    assert execution["status"] == "SUCCEEDED"
    [invoice] = stack.invoices_for(record_id)
    assert invoice["status"] == "open"  # finalized
    assert invoice["collection_method"] == "send_invoice"
    [item] = stack.stripe.items_of(invoice["id"])
    assert (item["amount"], item["currency"]) == (1_250_000, "usd")
    customer = stack.stripe.customers[invoice["customer"]]
    assert customer["email"] == "maya.chen@acme-robotics.example.com"
    assert stack.twenty.patched("opportunity", record_id)["invoiceId"] == invoice["id"]
    assert stack.stripe.violations == [] and stack.twenty.violations == [] and stack.receiver.violations == []
    statuses = {(item["step"], item["status"]) for item in log_for(stack, record_id)}
    assert {("action-0", "sent"), ("action-1", "sent"), ("run", "succeeded")} <= statuses


def test_the_same_webhook_twenty_times_at_once_makes_one_invoice(stack: Stack) -> None:
    event = stack.new_opportunity()
    record_id = event["record"]["id"]
    headers, body = signed_twenty_delivery(SIGNING_SECRET, event)

    answers = concurrently(20, lambda: stack.post(body, headers))
    stack.runtime.wait_idle(90)

    assert {status for status, _ in answers} == {202}
    assert len(stack.invoices_for(record_id)) == 1
    assert [e["status"] for e in stack.executions_for(record_id)] == ["SUCCEEDED"]
    assert stack.stripe.violations == []


def test_redelivery_after_the_run_still_makes_nothing_new(stack: Stack) -> None:
    event = stack.new_opportunity()
    record_id = event["record"]["id"]
    stack.post_signed(event)
    stack.runtime.wait_idle(60)
    stack.post_signed(event)  # signed again later: a new timestamp, the same change
    stack.runtime.wait_idle(60)
    assert len(stack.invoices_for(record_id)) == 1
    assert len(stack.executions_for(record_id)) == 1


def test_a_later_edit_of_the_won_opportunity_does_nothing(stack: Stack) -> None:
    event = stack.new_opportunity()
    record_id = event["record"]["id"]
    stack.post_signed(event)
    stack.runtime.wait_idle(60)

    edited = json.loads(json.dumps(event))
    edited["record"]["amount"] = {"amountMicros": 14_000_000_000, "currencyCode": "USD"}
    edited["record"]["name"] = "Renamed deal"
    edited["updatedFields"] = ["amount", "name"]
    edited["eventDate"] = "2026-03-19T09:00:00.000Z"
    status, _ = stack.post_signed(edited)
    stack.runtime.wait_idle(60)

    assert status == 202
    assert len(stack.invoices_for(record_id)) == 1
    assert len(stack.executions_for(record_id)) == 1


def test_a_non_won_update_does_nothing(stack: Stack) -> None:
    event = stack.new_opportunity(stage="PROPOSAL")
    status, _ = stack.post_signed(event)
    stack.runtime.wait_idle(60)
    assert status == 202
    assert stack.invoices_for(event["record"]["id"]) == []
    assert stack.executions_for(event["record"]["id"]) == []


def test_tampered_and_stale_signatures_are_refused_and_nothing_is_sent(stack: Stack) -> None:
    event = stack.new_opportunity()
    headers, body = signed_twenty_delivery(SIGNING_SECRET, event)
    tampered = body.replace(b"12500000000", b"99900000000")
    stale_ms = int(datetime.now(UTC).timestamp() * 1000) - 10 * 60 * 1000
    stale_headers, stale_body = signed_twenty_delivery(SIGNING_SECRET, event, stale_ms)
    wrong_headers, wrong_body = signed_twenty_delivery("not-the-secret", event)

    answers = [stack.post(tampered, headers), stack.post(stale_body, stale_headers),
               stack.post(wrong_body, wrong_headers), stack.post(body, {})]
    stack.runtime.wait_idle(30)

    assert [status for status, _ in answers] == [401, 401, 401, 401]
    assert all(answer["error"] == "Unauthorized" and answer["message"] for _, answer in answers)
    assert "stale" in answers[1][1]["message"]
    assert stack.executions_for(event["record"]["id"]) == []
    assert stack.invoices_for(event["record"]["id"]) == []


def test_malformed_json_is_a_400_with_a_clear_error(stack: Stack) -> None:
    broken = b'{"eventName": "opportunity.updated", "record": '
    status, answer = stack.post(broken, twenty_headers(SIGNING_SECRET, broken))
    assert status == 400
    assert answer["error"] == "InvalidRequest"
    assert "not a Twenty webhook" in answer["message"]
    assert answer["details"]["problems"]


def test_an_oversized_body_is_a_413(stack: Stack) -> None:
    event = stack.new_opportunity(name="x" * 300_000)
    body = twenty_body(event)
    status, answer = stack.post(body, twenty_headers(SIGNING_SECRET, body))
    assert status == 413
    assert answer["error"] == "PayloadTooLarge"


def test_the_501st_send_of_a_day_with_a_limit_of_500_is_not_sent_and_logged_as_limited(stack: Stack) -> None:
    ddb = stack.runtime.client("dynamodb")
    table = stack.runtime.name_of("CountersTable")
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    key = {"pk": {"S": f"{TENANT}#invoice#{day}"}}
    ddb.put_item(TableName=table, Item={**key, "count": {"N": "499"}})

    five_hundredth = stack.new_opportunity()
    stack.post_signed(five_hundredth)
    stack.runtime.wait_idle(60)
    five_hundred_first = stack.new_opportunity()
    stack.post_signed(five_hundred_first)
    stack.runtime.wait_idle(60)

    assert len(stack.invoices_for(five_hundredth["record"]["id"])) == 1
    assert stack.invoices_for(five_hundred_first["record"]["id"]) == []
    [limited] = stack.executions_for(five_hundred_first["record"]["id"])
    assert (limited["status"], limited["error"]) == ("FAILED", "DailyLimitReached")
    [entry] = [e for e in log_for(stack, five_hundred_first["record"]["id"]) if e["status"] == "limited"]
    assert "daily limit of 500 invoice sends reached" in str(entry["reason"])
    notices = [n for n in stack.runtime.notifications() if five_hundred_first["record"]["id"] in n["message"]]
    assert len(notices) == 1 and "daily limit" in notices[0]["message"]
    assert ddb.get_item(TableName=table, Key=key)["Item"]["count"]["N"] == "500"
    ddb.delete_item(TableName=table, Key=key)


def test_a_crm_outage_at_write_back_is_finished_by_the_state_machine_and_the_send_counted_once(
    stack: Stack,
) -> None:
    """The Dispatch task sends, counts, then cannot write back (the CRM answers 503): it hands the action to
    the state machine (NeedsWriteBack, WriteBack with its retries, LogAction, Advance) instead of failing,
    whose retry would count the send twice."""
    event = stack.new_opportunity()
    record_id = event["record"]["id"]
    lookup = stack.runtime.functions.handler("LookupFunction")

    def lookup_then_outage(lookup_event: Any, context: Any) -> Any:
        answer = lookup(lookup_event, context)
        stack.twenty.fail_next(503)  # the next CRM request: the Dispatch task's write-back
        return answer

    before = counter_items(stack)
    with stack.runtime.functions.replaced("LookupFunction", lookup_then_outage):
        stack.post_signed(event)
        stack.runtime.wait_idle(90)

    [execution] = stack.executions_for(record_id)
    assert execution["status"] == "SUCCEEDED"
    assert execution["states"].count("WriteBack") == 1 and "LogAction" in execution["states"]
    [invoice] = stack.invoices_for(record_id)
    assert stack.twenty.patched("opportunity", record_id)["invoiceId"] == invoice["id"]
    statuses = [(item["step"], item["status"]) for item in log_for(stack, record_id)]
    assert statuses.count(("action-0", "sent")) == 1 and ("run", "succeeded") in statuses
    after = counter_items(stack)
    held = [name for item in after.values() for name in item if name.startswith("hold#")
            and execution["name"] in name]
    assert held == []  # committed, not left holding a place
    moved = {pk: (int(item.get("count", {}).get("N", 0)), int(item.get("sent", {}).get("N", 0)))
             for pk, item in after.items()}
    was = {pk: (int(item.get("count", {}).get("N", 0)), int(item.get("sent", {}).get("N", 0)))
           for pk, item in before.items()}
    deltas = [(count - was.get(pk, (0, 0))[0], sent - was.get(pk, (0, 0))[1]) for pk, (count, sent) in moved.items()
              if (count, sent) != was.get(pk)]
    assert deltas and set(deltas) == {(1, 1)}  # per action: one place taken, one send counted, once


def counter_items(stack: Stack) -> dict[str, dict[str, Any]]:
    """The daily send counters (the CRM API's per-minute call windows, rate#..., share the table)."""
    table = stack.runtime.name_of("CountersTable")
    return {item["pk"]["S"]: item for item in stack.runtime.client("dynamodb").scan(TableName=table)["Items"]
            if not item["pk"]["S"].startswith("rate#")}
