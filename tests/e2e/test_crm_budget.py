"""A burst of won deals against a CRM's call budget (Twenty: 100 calls a minute per API key by default) on the
local runtime: runs whose Lookup finds the budget spent wait for it in a Wait state (WaitForCrm) and look up
again, so every deal is invoiced exactly once, however many arrive in one minute; none fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from billflow.storage import rate_limits

from tests.e2e.conftest import ROOT, SIGNING_SECRET, Stack, concurrently, running_stack
from tests.fakes.signing import signed_twenty_delivery

CALLS_A_MINUTE = 2  # a small budget (Lookup spends one unit a run, on the company's people), so a burst spends it
DEALS = 6


class BudgetClock:
    """The rate limiter's time, moved on with the runtime's virtual clock (a minute's window never waited)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # the start of a minute: every run of the burst meets the same window

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def budget() -> Iterator[BudgetClock]:
    clock = BudgetClock()
    kept = rate_limits._limiter
    rate_limits._limiter = rate_limits.RateLimiter(clock=clock)
    try:
        yield clock
    finally:
        rate_limits._limiter = kept


@pytest.fixture(scope="module")
def stack(budget: BudgetClock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    rules = tmp_path_factory.mktemp("rules")  # the example rule alone
    (rules / "won-to-stripe.yaml").write_text((ROOT / "examples" / "rules" / "won-to-stripe.yaml").read_text())
    with running_stack(rules, rate_limit_per_minute=CALLS_A_MINUTE) as started:
        yield started


def test_a_burst_of_won_deals_waits_for_the_crms_budget_and_each_is_invoiced_once(
    stack: Stack, budget: BudgetClock,
) -> None:
    events = [stack.new_opportunity() for _ in range(DEALS)]
    deliveries = [signed_twenty_delivery(SIGNING_SECRET, event) for event in events]
    answers = concurrently(DEALS, lambda: stack.post(*_next(deliveries)))
    assert {status for status, _ in answers} == {202}

    minutes = 0
    while not all(stack.invoices_for(e["record"]["id"]) for e in events):
        stack.runtime.wait_idle(60, include_waiting=False)  # every run done, or waiting on the clock
        if all(stack.invoices_for(e["record"]["id"]) for e in events):
            break
        minutes += 1
        assert minutes <= 3 * DEALS, "the runs never got their turn at the CRM"
        budget.now += 60  # the next minute: a fresh budget, and the runs' waits are over
        stack.runtime.advance_clock(60)
    stack.runtime.wait_idle(60)

    assert minutes >= 1  # the burst did spend the budget
    runs = [stack.executions_for(e["record"]["id"]) for e in events]
    assert all([r["status"] for r in found] == ["SUCCEEDED"] for found in runs), runs
    assert any("WaitForCrm" in r["states"] for found in runs for r in found)
    for event in events:
        [invoice] = stack.invoices_for(event["record"]["id"])
        assert stack.twenty.patched("opportunity", event["record"]["id"])["invoiceId"] == invoice["id"]
    assert stack.stripe.violations == [] and stack.twenty.violations == []


def _next(deliveries: list[tuple[dict[str, str], bytes]]) -> tuple[bytes, dict[str, str]]:
    headers, body = deliveries.pop()  # one delivery per client thread (list.pop is atomic)
    return body, headers
