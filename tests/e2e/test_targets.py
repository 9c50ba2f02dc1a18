"""Issue 4 end to end on the local runtime, for each target: Stripe, QuickBooks Online, Xero, Zoho Books.

A signed Twenty "won" webhook goes through the real stack (ingest, bus, filter, the ASL on moto's Step
Functions, the real handlers) to a fake of the target that checks every request against the official
contract. Per target: one document per transition, its id written back to the opportunity and the customer's
id to the company (so the next invoice skips the search), matching and creation as configured (create if
missing / strict; products found, created, or missing), duplicates, 429 with Retry-After, a final 400,
an access token expiring mid-run and a revoked grant. tests/e2e/_targets.py holds the stack and one adapter
per target; rules are the YAML written there, one per "[tag]" that a deal's name starts with.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e._targets import (
    KNOWN_PRODUCT,
    QBO_DOCUMENT_TYPES,
    QBO_ENTITIES,
    QBO_REALM,
    QBO_UK_REALM,
    SIGNING_SECRET,
    Deal,
    QuickBooksTarget,
    Stack,
    StripeTarget,
    Target,
    concurrently,
    qbo_tag,
    start_stack,
)
from tests.fakes.signing import signed_twenty_delivery

ALL = ["stripe", "quickbooks", "xero", "zoho_books"]
ACCOUNTING = ["quickbooks", "xero", "zoho_books"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("rules"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def target(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Target]:
    chosen = stack.targets[request.param]
    yield chosen
    assert chosen.fake.violations == []  # every request was one the real service accepts
    assert stack.twenty.violations == []
    if chosen.idp is not None:
        assert chosen.idp.violations == [] and chosen.idp.stale_refreshes == []


def known_customer(stack: Stack, target: Target, tag: str) -> tuple[Deal, str]:
    """A deal whose company the target already has as a customer (found by the contact's email)."""
    deal = stack.deal(tag)
    return deal, target.seed_customer(deal)


# --- the happy path and write-back -----------------------------------------------------------------------
@pytest.mark.parametrize("target", ALL, indirect=True)
def test_a_won_deal_makes_one_document_writes_both_ids_back_and_the_next_one_skips_the_search(
    stack: Stack, target: Target
) -> None:
    deal = stack.deal(target.prefix)

    execution = stack.run(deal)

    assert execution["status"] == "SUCCEEDED", execution
    [document] = target.documents(deal)
    [customer] = target.customers(deal)  # created: nothing matched the new company
    customer_id = target.customer_id(customer)
    assert target.document_customer(document) == customer_id
    assert stack.twenty.patched("opportunity", deal.id) == {target.document_field: target.document_id(document)}
    assert stack.twenty.patched("company", deal.company_id) == {target.customer_field: customer_id}
    if target.has_products:
        assert len(target.products(deal.name)) == 1  # create_products: the line's product was made once

    mark = target.mark()
    second = stack.deal(target.prefix, same_company_as=deal)
    assert stack.run(second)["status"] == "SUCCEEDED"

    [again] = target.documents(second)
    assert target.document_customer(again) == customer_id
    assert target.customer_searches(mark) == []  # the id stored on the company was enough
    assert len(target.customer_reads(mark)) == 1
    assert len(target.customers(deal)) == 1
    assert stack.twenty.patched("opportunity", second.id) == {target.document_field: target.document_id(again)}


def test_stripe_invoice_in_a_zero_decimal_currency_is_finalized_sent_and_taxed(stack: Stack) -> None:
    stripe = stack.targets["stripe"]
    assert isinstance(stripe, StripeTarget)
    deal = stack.deal("stripe", currency="JPY", amount_micros=1_500_000 * 1_000_000)  # ¥1,500,000

    assert stack.run(deal)["status"] == "SUCCEEDED"

    [invoice] = stripe.documents(deal)
    assert (invoice["currency"], invoice["status"]) == ("jpy", "open")
    assert invoice["id"] in stripe.stripe.sent_invoices
    assert [r["id"] if isinstance(r, dict) else r for r in invoice["default_tax_rates"]] == [stripe.tax_rate]
    [item] = stripe.stripe.items_of(invoice["id"])
    assert (item["amount"], item["currency"], item["description"]) == (1_500_000, "jpy", deal.name)
    assert invoice["metadata"] == {"crm": "twenty", "crm_record_id": deal.id, "crm_company_id": deal.company_id}
    assert stripe.fake.violations == []


@pytest.mark.parametrize("document_type", QBO_DOCUMENT_TYPES)
def test_every_quickbooks_document_type_through_the_runtime(stack: Stack, document_type: str) -> None:
    qbo = stack.targets["quickbooks"]
    assert isinstance(qbo, QuickBooksTarget)
    items_before = len(qbo.qbo.all(QBO_REALM, "Item"))
    deal = stack.deal(qbo_tag(document_type))

    execution = stack.run(deal)

    assert execution["status"] == "SUCCEEDED", execution
    entity = QBO_ENTITIES[document_type]
    [document] = qbo.entities(deal, entity)
    assert qbo.documents(deal) == [document]  # one document, of the asked type
    assert stack.twenty.patched("opportunity", deal.id)[qbo.document_field] == document["Id"]
    assert document["TotalAmt"] == 1_250  # $1,250.00 from amountMicros
    if entity == "Purchase":
        assert qbo.customers(deal) == []  # an expense has no customer
        assert stack.twenty.patched("company", deal.company_id) == {}
    else:
        [customer] = qbo.customers(deal)
        assert document["CustomerRef"]["value"] == customer["Id"]
        assert stack.twenty.patched("company", deal.company_id) == {qbo.customer_field: customer["Id"]}
        [line] = [line for line in document["Line"] if line["DetailType"] == "SalesItemLineDetail"]
        assert line["SalesItemLineDetail"]["ItemRef"]["name"] == KNOWN_PRODUCT  # found, not created
    assert len(qbo.qbo.all(QBO_REALM, "Item")) == items_before
    payments = [p for p in qbo.qbo.created(QBO_REALM, "Payment")
                if p["Line"][0]["LinkedTxn"][0]["TxnId"] == document["Id"] and entity == "Invoice"]
    if document_type == "paid_invoice":
        [payment] = payments
        assert payment["TotalAmt"] == document["TotalAmt"]
        assert document["Balance"] == 0
    else:
        assert payments == []
    assert qbo.fake.violations == [] and stack.twenty.violations == []


def test_a_uk_quickbooks_company_gets_its_vat_code_on_every_line(stack: Stack) -> None:
    qbo = stack.targets["quickbooks"]
    assert isinstance(qbo, QuickBooksTarget)
    deal = stack.deal("qbo-uk", currency="GBP")

    assert stack.run(deal)["status"] == "SUCCEEDED"

    [invoice] = qbo.entities(deal, "Invoice", QBO_UK_REALM)
    assert {line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in invoice["Line"]
            if line["DetailType"] == "SalesItemLineDetail"} == {"2"}
    assert invoice["TotalAmt"] == 1_500  # £1,250.00 and 20% VAT
    assert invoice["CurrencyRef"]["value"] == "GBP"
    assert qbo.fake.violations == []


def test_a_uk_quickbooks_connection_without_a_tax_code_is_refused_before_anything_is_created(stack: Stack) -> None:
    qbo = stack.targets["quickbooks"]
    deal = stack.deal("qbo-uk-no-tax-code", currency="GBP")
    mark = qbo.mark()

    assert stack.run(deal)["status"] == "FAILED"

    reason = stack.failure_reason(deal)
    assert reason.startswith("TargetRejected: ") and "set default_tax_code" in reason
    assert qbo.since(mark) == []  # refused from the configuration alone: not even a lookup
    assert qbo.fake.violations == []


@pytest.mark.parametrize("target", ["xero", "zoho_books"], indirect=True)
def test_an_estimate_rule_makes_one_estimate_and_no_invoice(stack: Stack, target: Target) -> None:
    deal = stack.deal(f"{target.prefix}-estimate")

    assert stack.run(deal)["status"] == "SUCCEEDED"

    [(estimate_id, estimate)] = target.estimates(deal)
    assert target.documents(deal) == []
    assert stack.twenty.patched("opportunity", deal.id) == {target.document_field: estimate_id}
    [customer] = target.customers(deal)
    assert target.document_customer(estimate) == target.customer_id(customer)
    assert stack.twenty.patched("company", deal.company_id) == {target.customer_field: target.customer_id(customer)}


# --- matching and creation exactly as configured ----------------------------------------------------------
@pytest.mark.parametrize("target", ALL, indirect=True)
def test_strict_matching_without_a_match_fails_clearly_and_creates_nothing(stack: Stack, target: Target) -> None:
    deal = stack.deal(f"{target.prefix}-strict")
    mark = target.mark()

    execution = stack.run(deal)

    assert (execution["status"], execution["error"]) == ("FAILED", "RunFailed")
    reason = stack.failure_reason(deal)
    assert reason.startswith("CustomerNotFound: ")
    assert "strict" in reason and "none was created" in reason
    assert target.writes(mark) == []
    assert target.customers(deal) == [] and target.documents(deal) == []
    assert stack.twenty.patched("opportunity", deal.id) == {}
    assert len(stack.notifications_for(deal)) == 1


@pytest.mark.parametrize("target", ALL, indirect=True)
def test_strict_matching_uses_the_customer_found_and_the_known_product(stack: Stack, target: Target) -> None:
    deal, customer_id = known_customer(stack, target, f"{target.prefix}-strict")
    mark = target.mark()

    assert stack.run(deal)["status"] == "SUCCEEDED"

    [document] = target.documents(deal)
    assert target.document_customer(document) == customer_id
    assert [target.customer_id(c) for c in target.customers(deal)] == [customer_id]  # none created
    created = [r for r in target.writes(mark) if r not in target.document_creates(mark)]
    if isinstance(target, StripeTarget):
        assert document["status"] == "draft"  # this rule leaves the invoice a draft
        assert all(r.path.startswith("/v1/invoice") for r in created)  # items, no customer
    else:
        assert created == []  # no customer, no product: both existed
        assert len(target.products(KNOWN_PRODUCT)) == 1
    assert stack.twenty.patched("company", deal.company_id) == {target.customer_field: customer_id}


@pytest.mark.parametrize("target", ACCOUNTING, indirect=True)
def test_a_product_nobody_has_fails_listing_the_line_and_creates_nothing(stack: Stack, target: Target) -> None:
    deal, _ = known_customer(stack, target, f"{target.prefix}-unknown")
    mark = target.mark()

    execution = stack.run(deal)

    assert execution["status"] == "FAILED"
    reason = stack.failure_reason(deal)
    assert reason.startswith("ProductNotFound: ")
    assert f"line 1 ('{deal.name}')" in reason and "create_products is off" in reason
    assert target.writes(mark) == []
    assert target.products(deal.name) == [] and target.documents(deal) == []


# --- exactly once -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ALL, indirect=True)
def test_the_same_webhook_ten_times_at_once_and_again_later_makes_one_document(
    stack: Stack, target: Target
) -> None:
    deal, _ = known_customer(stack, target, f"{target.prefix}-strict")
    headers, body = signed_twenty_delivery(SIGNING_SECRET, stack.won_event(deal))

    statuses = concurrently(10, lambda: stack.post(body, headers))
    stack.runtime.wait_idle(60)
    assert stack.deliver(deal) == 202  # delivered again later, signed anew
    stack.runtime.wait_idle(60)

    assert set(statuses) == {202}
    assert len(target.documents(deal)) == 1
    assert [e["status"] for e in stack.executions_for(deal)] == ["SUCCEEDED"]


# --- the target's errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ALL, indirect=True)
def test_a_429_with_retry_after_waits_that_long_then_succeeds(stack: Stack, target: Target) -> None:
    deal, _ = known_customer(stack, target, f"{target.prefix}-strict")
    target.throttle_document(retry_after=30)
    mark = target.mark()

    assert stack.deliver(deal) == 202
    stack.runtime.wait_idle(60, include_waiting=False)
    [waiting] = [w for w in stack.runtime.clock.waiters() if w.kind == "Wait"]
    assert waiting.state == "WaitRetryAfter"
    assert 25 < waiting.remaining(stack.runtime.clock.now()) <= 30  # the target's Retry-After, on the clock
    stack.runtime.advance_clock(30)
    stack.runtime.wait_idle(60)

    [execution] = stack.executions_for(deal)
    assert execution["status"] == "SUCCEEDED"
    assert execution["states"].count("WaitRetryAfter") == 1
    assert len(target.document_creates(mark)) == 2  # throttled, then created
    assert len(target.documents(deal)) == 1


@pytest.mark.parametrize("target", ALL, indirect=True)
def test_a_400_is_final_and_logged_with_the_targets_own_message(stack: Stack, target: Target) -> None:
    deal, _ = known_customer(stack, target, f"{target.prefix}-strict")
    message = f"Invoice date is outside the allowed period ({deal.id[:8]})"
    target.reject_document(message)
    mark = target.mark()

    execution = stack.run(deal)

    assert execution["status"] == "FAILED"
    assert execution["states"].count("Dispatch") == 1  # not retried
    assert len(target.document_creates(mark)) == 1
    reason = stack.failure_reason(deal)
    assert reason.startswith("TargetRejected: ") and message in reason
    assert "stackTrace" not in reason and ".py" not in reason  # the message, not the function's internals
    assert target.documents(deal) == []
    assert stack.twenty.patched("opportunity", deal.id) == {}


# --- OAuth ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ACCOUNTING, indirect=True)
def test_an_access_token_expiring_mid_run_is_refreshed_and_the_run_succeeds(stack: Stack, target: Target) -> None:
    assert target.idp is not None
    deal, _ = known_customer(stack, target, f"{target.prefix}-strict")
    target.expire_tokens_at_document()
    mark = target.mark()

    assert stack.run(deal)["status"] == "SUCCEEDED"

    refused, accepted = target.document_creates(mark)  # 401, then the same request with a new token
    assert refused.headers["authorization"] != accepted.headers["authorization"]
    assert refused.body == accepted.body
    assert len(target.documents(deal)) == 1
    stored = stack.secret(f"{target.prefix}-strict")
    assert accepted.headers["authorization"].endswith(" " + stored["access_token"])
    assert stored["refresh_token"] == target.idp.current_refresh_token(target.strict_grant)  # the newest kept
    if target.key == "zoho_books":  # the connection names no data centre: the token answer's is used and kept
        assert stored["api_domain"] == target.fake.url


@pytest.mark.parametrize("target", ACCOUNTING, indirect=True)
def test_a_revoked_grant_fails_the_run_once_and_tells_the_tenant_to_reconnect(
    stack: Stack, target: Target
) -> None:
    assert target.idp is not None
    target.idp.revoke(target.revoked_grant)
    deal = stack.deal(f"{target.prefix}-revoked")
    mark = target.mark()

    execution = stack.run(deal)

    assert execution["status"] == "FAILED"
    assert execution["states"].count("Dispatch") == 1  # final: no retry can help
    reason = stack.failure_reason(deal)
    assert reason.startswith("AuthorizationRevoked: ") and "reconnect" in reason
    [notice] = stack.notifications_for(deal)
    assert "AuthorizationRevoked" in notice["message"]
    assert "reconnect" in notice["message"]  # the admin is told what to do
    assert notice["attributes"]["status"] == "failed"
    assert target.since(mark) == []  # no token, no call
    assert target.documents(deal) == []
