"""Issue 8 §1 end to end on the local runtime: deals billflow has never seen, whose later edit is
delivered before the change that won them, are each invoiced exactly once."""

from __future__ import annotations

import copy

from tests.e2e.conftest import Stack


def test_ten_first_seen_deals_with_their_edit_delivered_before_the_win_make_ten_invoices(stack: Stack) -> None:
    deals = []
    for _ in range(10):
        won = stack.new_opportunity()  # stage -> CUSTOMER at 14:22:05.417, updatedFields ["stage"]
        edited = copy.deepcopy(won)  # a minute later the amount is edited; the stage is still CUSTOMER
        edited["eventDate"] = "2026-03-18T14:23:05.417Z"
        edited["record"]["amount"] = {"amountMicros": 13_000_000_000, "currencyCode": "USD"}
        edited["updatedFields"] = ["amount"]
        deals.append((won, edited))

    answers = [stack.post_signed(edited) for _, edited in deals]  # the later edit arrives first
    stack.runtime.wait_idle(60)
    answers += [stack.post_signed(won) for won, _ in deals]
    answers += [stack.post_signed(won) for won, _ in deals[:3]]  # and a few redeliveries of the win
    stack.runtime.wait_idle(120)

    assert {status for status, _ in answers} == {202}
    for won, _ in deals:
        record_id = won["record"]["id"]
        [invoice] = stack.invoices_for(record_id)
        [item] = stack.stripe.items_of(invoice["id"])
        assert item["amount"] == 1_250_000  # the amount of the won event's record, as in-order delivery
        assert [e["status"] for e in stack.executions_for(record_id)] == ["SUCCEEDED"]
    assert stack.stripe.violations == []


def test_a_record_id_dynamodb_cannot_key_is_refused_at_ingest_not_accepted_and_lost(stack: Stack) -> None:
    answers = []
    for size in (1100, 3000):
        event = stack.new_opportunity()
        event["record"]["id"] = "r" * size
        answers.append(stack.post_signed(event))
    stack.runtime.wait_idle(30)

    assert [status for status, _ in answers] == [400, 400]
    assert all(a["error"] == "InvalidRequest" and "at most 1024 bytes" in a["message"] for _, a in answers)
    assert [e for e in stack.runtime.executions() if (e["input"] or {}).get("event", {}).get(
        "record_id", "").startswith("rrrr")] == []
