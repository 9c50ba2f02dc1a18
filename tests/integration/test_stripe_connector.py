"""StripeConnector against FakeStripe: a real HTTP server on 127.0.0.1 that validates every request against
Stripe's trimmed official spec and behaves like Stripe (ids, idempotency keys, invoice states, errors)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from billflow.connectors.base import SendContext
from billflow.connectors.stripe import API_VERSION, StripeConnector
from billflow.errors import (
    AmbiguousCustomer,
    ConfigurationError,
    CustomerNotFound,
    TargetRejected,
    TransientError,
)
from billflow.models.documents import DispatchResult, InvoiceDraft
from billflow.storage.secrets import Connection

from tests.fakes.stripe_server import FakeStripe


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe(seed=7) as server:
        yield server


@pytest.fixture
def fake(stripe_server: FakeStripe) -> FakeStripe:
    stripe_server.reset()  # a fresh account per test on one running server
    return stripe_server


def connection(fake: FakeStripe, **settings: Any) -> Connection:
    return Connection("stripe-main", "stripe", {"api_key": fake.api_key, "base_url": fake.url, **settings})


def draft(**overrides: Any) -> InvoiceDraft:
    fields: dict[str, Any] = {
        "customer": {
            "name": "Acme GmbH", "email": "billing@acme.test", "crm_company_id": "company-42",
            "address": {"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        },
        "currency": "eur",
        "lines": [{"description": "Implementation", "quantity": 1, "unit_amount_minor": 250000}],
        "memo": "Thank you for your business",
        "metadata": {"crm_record_id": "opp-1", "crm_object": "opportunity"},
    }
    fields.update(overrides)
    return InvoiceDraft.model_validate(fields)


def send(fake: FakeStripe, document: InvoiceDraft, key: str = "run-1", **settings: Any) -> DispatchResult:
    return StripeConnector().create_document(document, connection(fake, **settings), SendContext("acme", key))


def form(fake: FakeStripe, method: str, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(r.body.decode(), keep_blank_values=True) for r in fake.calls(method, path)]


def posts(fake: FakeStripe) -> list[str]:
    return [r.path for r in fake.requests if r.method == "POST"]


# --- the happy path -------------------------------------------------------------------------------
def test_creates_customer_invoice_item_and_finalizes(fake: FakeStripe) -> None:
    result = send(fake, draft())

    assert fake.violations == []
    assert len(fake.customers) == 1
    assert len(fake.invoices) == 1
    assert len(fake.invoice_items) == 1
    invoice = fake.invoices[result.external_id or ""]
    customer = fake.customers[invoice["customer"]]
    assert result.external_id.startswith("in_")
    assert customer["id"].startswith("cus_")
    assert result.external_url == invoice["hosted_invoice_url"]
    assert result.external_url
    assert result.details["customer_id"] == customer["id"]
    assert result.details["customer_created"] is True
    assert result.details["invoice_status"] == "open"
    assert (customer["name"], customer["email"]) == ("Acme GmbH", "billing@acme.test")
    assert customer["address"]["city"] == "Berlin"
    assert customer["metadata"] == {"crm_company_id": "company-42"}
    assert invoice["status"] == "open"
    assert invoice["collection_method"] == "send_invoice"
    assert invoice["auto_advance"] is False
    assert invoice["currency"] == "eur"
    assert invoice["description"] == "Thank you for your business"
    assert invoice["metadata"] == {"crm_record_id": "opp-1", "crm_object": "opportunity"}
    assert invoice["total"] == invoice["amount_due"] == 250000
    assert invoice["due_date"] == invoice["status_transitions"]["finalized_at"] + 30 * 86400
    assert fake.sent_invoices == []


def test_every_post_is_authenticated_versioned_and_keyed_by_step(fake: FakeStripe) -> None:
    send(fake, draft(lines=[{"description": "a", "unit_amount_minor": 100},
                            {"description": "b", "unit_amount_minor": 200}], options={"send": True}))

    assert all(r.headers["authorization"] == f"Bearer {fake.api_key}" for r in fake.requests)
    assert all(r.headers["stripe-version"] == API_VERSION for r in fake.requests)
    keys = [r.headers.get("idempotency-key") for r in fake.requests if r.method == "POST"]
    # The customer's key follows the CRM company (one customer however many first deals race for it).
    assert keys[0].startswith("billflow-customer-") and len(keys[0]) <= 255
    assert keys[1:] == ["run-1:invoice", "run-1:item:0", "run-1:item:1", "run-1:finalize",
                    "run-1:send"]
    assert all(r.headers["content-type"] == "application/x-www-form-urlencoded"
               for r in fake.requests if r.method == "POST")


# --- finding the customer -------------------------------------------------------------------------
def test_existing_customer_by_external_id(fake: FakeStripe) -> None:
    known = fake.add_customer(name="Acme (as named in Stripe)", email="other@acme.test")
    document = draft(customer={"name": "Acme GmbH", "email": "billing@acme.test", "external_id": known["id"]})

    result = send(fake, document)

    assert fake.violations == []
    assert result.details == {**result.details, "customer_id": known["id"], "customer_created": False}
    assert [r.path for r in fake.requests if r.method == "GET"] == [f"/v1/customers/{known['id']}"]
    assert "/v1/customers" not in posts(fake)
    assert len(fake.customers) == 1


def test_deleted_or_unknown_external_id_falls_through_to_email(fake: FakeStripe) -> None:
    deleted = fake.add_customer(name="Acme GmbH", email="billing@acme.test")
    fake.delete_customer(deleted["id"])
    by_email = fake.add_customer(name="Acme GmbH", email="billing@acme.test")

    for external_id in (deleted["id"], "cus_doesnotexist"):
        document = draft(customer={"name": "Acme GmbH", "email": "billing@acme.test", "external_id": external_id})
        result = send(fake, document, key=f"run-{external_id}")
        assert result.details["customer_id"] == by_email["id"]

    assert fake.violations == []  # a 404 on a lookup is an answer, not a rejected request
    assert "/v1/customers" not in posts(fake)


def test_existing_customer_by_email_is_case_sensitive_like_stripe(fake: FakeStripe) -> None:
    existing = fake.add_customer(name="Acme Holding", email="billing@acme.test")

    assert send(fake, draft()).details["customer_id"] == existing["id"]
    other = send(fake, draft(customer={"name": "Someone Else", "email": "BILLING@acme.test"}), key="run-2")

    assert other.details["customer_created"] is True
    assert other.details["customer_id"] != existing["id"]
    assert fake.violations == []


def test_existing_customer_by_person_name(fake: FakeStripe) -> None:
    existing = fake.add_customer(name="Jane O'Neil")
    document = draft(customer={"name": "O'Neil Consulting", "first_name": "Jane", "last_name": "O'Neil"})

    result = send(fake, document)

    assert result.details["customer_id"] == existing["id"]
    assert result.details["customer_created"] is False
    searches = [r.query["query"] for r in fake.calls("GET", "/v1/customers/search")]
    assert searches[0] == ["name:'Jane O\\'Neil'"]
    assert fake.violations == []


def test_existing_customer_by_company_name_with_quotes_and_backslashes(fake: FakeStripe) -> None:
    tricky = "O'Brien \\ Sons \"Ltd\""
    existing = fake.add_customer(name=tricky)

    result = send(fake, draft(customer={"name": tricky}))

    assert result.details["customer_id"] == existing["id"]
    assert fake.violations == []


def test_strict_matching_creates_nothing_when_no_customer_matches(fake: FakeStripe) -> None:
    fake.add_customer(name="Somebody Else", email="else@example.test")

    with pytest.raises(CustomerNotFound, match="strict") as caught:
        send(fake, draft(), customer_matching="strict")

    assert posts(fake) == []
    assert len(fake.customers) == 1
    assert fake.invoices == {}
    assert "Acme GmbH" in caught.value.message
    assert "billing@acme.test" not in caught.value.message


def test_strict_matching_uses_the_customer_it_finds(fake: FakeStripe) -> None:
    existing = fake.add_customer(name="Acme GmbH")

    result = send(fake, draft(customer={"name": "Acme GmbH"}), customer_matching="strict")

    assert result.details["customer_id"] == existing["id"]
    assert fake.violations == []


def test_unknown_matching_mode_is_a_configuration_error(fake: FakeStripe) -> None:
    with pytest.raises(ConfigurationError, match="customer_matching"):
        send(fake, draft(), customer_matching="sometimes")
    assert fake.requests == []


# --- lines, taxes, metadata, currencies -----------------------------------------------------------
def test_multiple_line_items_in_order_with_totals(fake: FakeStripe) -> None:
    lines = [
        {"description": "Licences", "quantity": 12, "unit_amount_minor": 4900, "sku": "LIC-1"},
        {"description": "Onboarding", "quantity": 1, "unit_amount_minor": 150000, "product_name": "Onboarding"},
        {"description": "Support hours", "quantity": 2.5, "unit_amount_minor": 9999},
        {"description": "Goodwill credit", "quantity": 1, "unit_amount_minor": -5000},
    ]
    result = send(fake, draft(lines=lines))

    assert fake.violations == []
    invoice = fake.invoices[result.external_id or ""]
    assert [line["description"] for line in invoice["lines"]["data"]] == [x["description"] for x in lines]
    assert [line["amount"] for line in invoice["lines"]["data"]] == [58800, 150000, 24998, -5000]
    assert invoice["subtotal"] == invoice["total"] == result.details["amount_due"] == 228798
    items = form(fake, "POST", "/v1/invoiceitems")
    assert items[0]["quantity"] == ["12"]
    assert items[0]["unit_amount"] == ["4900"]
    assert "quantity" not in items[2]
    assert items[2]["amount"] == ["24998"]
    assert items[0]["metadata[sku]"] == ["LIC-1"]
    assert items[1]["metadata[product_name]"] == ["Onboarding"]


def test_tax_rates_on_the_invoice(fake: FakeStripe) -> None:
    vat = fake.add_tax_rate(19.0, display_name="USt.")
    result = send(fake, draft(options={"tax_rates": [vat["id"]]}))

    invoice = fake.invoices[result.external_id or ""]
    assert [r["id"] for r in invoice["default_tax_rates"]] == [vat["id"]]
    assert invoice["subtotal"] == 250000
    assert invoice["total"] == 297500
    assert invoice["total_tax_amounts"][0]["amount"] == 47500
    assert "tax_rates[0]" not in form(fake, "POST", "/v1/invoiceitems")[0]
    assert fake.violations == []


def test_tax_rates_on_taxable_lines_only(fake: FakeStripe) -> None:
    vat = fake.add_tax_rate(20.0)
    included = fake.add_tax_rate(10.0, inclusive=True, display_name="GST")
    lines = [
        {"description": "Taxable", "unit_amount_minor": 10000, "taxable": True},
        {"description": "Exempt", "unit_amount_minor": 5000, "taxable": False},
    ]
    options = {"tax_rates": [vat["id"], included["id"]], "tax_rates_on": "taxable_lines"}
    result = send(fake, draft(lines=lines, options=options))

    items = form(fake, "POST", "/v1/invoiceitems")
    assert items[0]["tax_rates[0]"] == [vat["id"]]
    assert items[0]["tax_rates[1]"] == [included["id"]]
    assert not any(k.startswith("tax_rates") for k in items[1])
    assert "default_tax_rates[0]" not in form(fake, "POST", "/v1/invoices")[0]
    invoice = fake.invoices[result.external_id or ""]
    assert invoice["subtotal"] == 15000
    assert invoice["total"] == 17000
    assert fake.violations == []


def test_tax_rates_on_the_invoice_never_tax_a_line_marked_not_taxable(fake: FakeStripe) -> None:
    # Stripe, POST /v1/invoices default_tax_rates: "The tax rates that will apply to any line item that does
    # not have `tax_rates` set." A mixed invoice: the exempt line must stay untaxed, the fake totals as Stripe.
    vat = fake.add_tax_rate(20.0)
    lines = [
        {"description": "Taxable", "unit_amount_minor": 10000, "taxable": True},
        {"description": "Exempt", "unit_amount_minor": 5000, "taxable": False},
        {"description": "Unsaid", "unit_amount_minor": 1000},
    ]
    result = send(fake, draft(lines=lines, options={"tax_rates": [vat["id"]]}))

    items = form(fake, "POST", "/v1/invoiceitems")
    assert [item.get("tax_rates[0]") for item in items] == [[vat["id"]], None, [vat["id"]]]
    assert "default_tax_rates[0]" not in form(fake, "POST", "/v1/invoices")[0]
    invoice = fake.invoices[result.external_id or ""]
    assert invoice["subtotal"] == 16000
    assert invoice["total_tax_amounts"][0]["amount"] == 2200  # 20% of 10000 + 1000, none on the 5000
    assert invoice["total"] == 18200
    assert fake.violations == []


def test_unknown_tax_rate_is_rejected_with_stripes_message(fake: FakeStripe) -> None:
    with pytest.raises(TargetRejected) as caught:
        send(fake, draft(options={"tax_rates": ["txr_missing"]}))

    assert not isinstance(caught.value, TransientError)
    assert "No such tax_rate: 'txr_missing'" in caught.value.message
    assert caught.value.details["status"] == 400
    assert fake.invoices == {}
    assert len(fake.violations) == 1


def test_metadata_points_back_to_the_crm_record(fake: FakeStripe) -> None:
    metadata = {"crm_record_id": "opp-77", "crm_url": "https://crm.example/opportunities/opp-77", "0": "zero"}
    result = send(fake, draft(metadata=metadata, reference="PO-2024-001"))

    invoice = fake.invoices[result.external_id or ""]
    assert invoice["metadata"] == metadata
    assert invoice["custom_fields"] == [{"name": "Reference", "value": "PO-2024-001"}]
    assert all(item["metadata"] == metadata for item in fake.invoice_items.values())
    assert fake.violations == []


def test_a_reference_too_long_for_a_custom_field_goes_to_metadata(fake: FakeStripe) -> None:
    reference = "purchase order " + "x" * 40
    result = send(fake, draft(reference=reference))

    invoice = fake.invoices[result.external_id or ""]
    assert invoice["custom_fields"] is None
    assert invoice["metadata"]["reference"] == reference
    assert fake.violations == []


def test_metadata_stripe_would_refuse_is_refused_before_any_call(fake: FakeStripe) -> None:
    with pytest.raises(TargetRejected, match="at most 40 characters"):
        send(fake, draft(metadata={"k" * 41: "v"}))
    with pytest.raises(TargetRejected, match="longer than 500"):
        send(fake, draft(metadata={"note": "v" * 501}))
    with pytest.raises(TargetRejected, match="at most 1500 characters"):
        send(fake, draft(memo="m" * 1501))
    assert fake.requests == []


def test_jpy_amounts_are_sent_in_yen(fake: FakeStripe) -> None:
    lines = [{"description": "Consulting (day)", "quantity": 3, "unit_amount_minor": 120000},
             {"description": "Travel", "quantity": 0.5, "unit_amount_minor": 3333}]
    result = send(fake, draft(currency="jpy", lines=lines))

    items = form(fake, "POST", "/v1/invoiceitems")
    assert items[0]["unit_amount"] == ["120000"]
    assert items[0]["currency"] == ["jpy"]
    assert items[1]["amount"] == ["1667"]  # 1666.5 yen rounds half up to a whole yen
    invoice = fake.invoices[result.external_id or ""]
    assert invoice["currency"] == "jpy"
    assert invoice["total"] == 361667
    assert fake.violations == []


# --- finalize and send ----------------------------------------------------------------------------
def test_leave_as_draft(fake: FakeStripe) -> None:
    result = send(fake, draft(options={"finalize": False}))

    assert result.details["invoice_status"] == "draft"
    assert result.external_url is None
    assert fake.calls("POST", r"/v1/invoices/.*/finalize") == []
    assert fake.violations == []


def test_finalize_and_send(fake: FakeStripe) -> None:
    result = send(fake, draft(options={"send": True}))

    assert fake.sent_invoices == [result.external_id]
    assert result.details["invoice_status"] == "open"
    assert result.details["invoice_number"]
    assert fake.violations == []


def test_send_without_finalize_is_refused_before_any_call(fake: FakeStripe) -> None:
    with pytest.raises(ConfigurationError, match="send needs finalize"):
        send(fake, draft(options={"finalize": False, "send": True}))
    assert fake.requests == []


# --- retries and idempotency ----------------------------------------------------------------------
def test_the_same_run_twice_creates_everything_once(fake: FakeStripe) -> None:
    document = draft(lines=[{"description": "a", "unit_amount_minor": 100},
                            {"description": "b", "unit_amount_minor": 200}], options={"send": True})
    first = send(fake, document)
    second = send(fake, document)

    assert (len(fake.customers), len(fake.invoices), len(fake.invoice_items)) == (1, 1, 2)
    assert second.external_id == first.external_id
    assert second.external_url == first.external_url
    assert fake.replayed == ["run-1:invoice", "run-1:item:0", "run-1:item:1", "run-1:finalize", "run-1:send"]
    assert fake.violations == []


def test_another_run_creates_another_invoice(fake: FakeStripe) -> None:
    first = send(fake, draft(), key="run-1")
    second = send(fake, draft(), key="run-2")

    assert first.external_id != second.external_id
    assert len(fake.invoices) == 2
    assert len(fake.customers) == 1  # found by email the second time


def test_a_run_failing_half_way_completes_on_retry_without_duplicates(fake: FakeStripe) -> None:
    fake.fail_next("PostInvoicesInvoiceFinalize", status=500)
    document = draft(lines=[{"description": "a", "unit_amount_minor": 100},
                            {"description": "b", "unit_amount_minor": 200}])

    with pytest.raises(TransientError):
        send(fake, document)
    result = send(fake, document)

    assert (len(fake.customers), len(fake.invoices), len(fake.invoice_items)) == (1, 1, 2)
    assert result.details["invoice_status"] == "open"
    assert fake.violations == []


def test_rate_limit_is_transient_with_retry_after(fake: FakeStripe) -> None:
    fake.fail_next("PostInvoices", status=429, retry_after=7)

    with pytest.raises(TransientError) as caught:
        send(fake, draft())

    assert caught.value.retry_after_seconds == 7
    assert "429" in caught.value.message
    assert fake.invoices == {}
    result = send(fake, draft())
    assert len(fake.invoices) == 1
    assert result.details["customer_created"] is False
    assert fake.violations == []


def test_changed_parameters_under_the_same_key_are_refused_not_duplicated(fake: FakeStripe) -> None:
    send(fake, draft(options={"finalize": False}))

    with pytest.raises(TargetRejected, match="same parameters"):
        send(fake, draft(memo="Another memo", options={"finalize": False}))

    assert len(fake.invoices) == 1


def test_a_very_long_run_key_still_fits_stripes_255_characters(fake: FakeStripe) -> None:
    key = "tenant/rule/record/" + "x" * 300
    send(fake, draft(), key=key)
    send(fake, draft(), key=key)

    assert len(fake.invoices) == 1
    assert fake.violations == []
    assert all(len(r.headers["idempotency-key"]) <= 255 for r in fake.requests if r.method == "POST")


# --- credentials ----------------------------------------------------------------------------------
def test_a_wrong_api_key_is_rejected_without_echoing_it(fake: FakeStripe) -> None:
    secret = "sk_test_wrong_key_that_must_not_leak_1234"
    conn = Connection("stripe-main", "stripe", {"api_key": secret, "base_url": fake.url})

    with pytest.raises(TargetRejected, match="Invalid API Key") as caught:
        StripeConnector().create_document(draft(), conn, SendContext("acme", "run-1"))

    assert secret not in caught.value.message
    assert caught.value.details["status"] == 401
    assert secret not in repr(conn)


def test_a_connection_without_api_key_is_a_configuration_error(fake: FakeStripe) -> None:
    conn = Connection("stripe-main", "stripe", {"base_url": fake.url})
    with pytest.raises(ConfigurationError, match="api_key"):
        StripeConnector().create_document(draft(), conn, SendContext("acme", "run-1"))
    assert fake.requests == []


# --- dry runs -------------------------------------------------------------------------------------
def test_preview_sends_nothing_and_lists_valid_requests(fake: FakeStripe) -> None:
    vat = fake.add_tax_rate(19.0)
    document = draft(customer={"name": "Acme GmbH", "email": "billing@acme.test", "external_id": "cus_known"},
                     lines=[{"description": "a", "unit_amount_minor": 100},
                            {"description": "b", "quantity": 2, "unit_amount_minor": 200}],
                     options={"send": True, "tax_rates": [vat["id"]]})

    steps = StripeConnector().preview_document(document, connection(fake), SendContext("acme", "run-9"))

    assert fake.requests == []
    assert [s["step"] for s in steps] == ["find_customer_by_id", "find_customer_by_email", "find_customer_by_name",
                                          "customer", "invoice", "item:0", "item:1", "finalize", "send"]
    assert [s["idempotency_key"] for s in steps if s["method"] == "POST"] == [
        "run-9:customer", "run-9:invoice", "run-9:item:0", "run-9:item:1", "run-9:finalize", "run-9:send"]
    for step in steps:  # what a dry run shows is what Stripe's contract accepts
        body = step.get("form", "").encode()
        checked = fake.contract.check_request(step["method"], step["path"], step.get("query", ""), body,
                                              "application/x-www-form-urlencoded")
        assert checked.problems == [], step["step"]
    assert all("api_key" not in str(s) and fake.api_key not in str(s) for s in steps)


def test_preview_in_strict_mode_ends_in_failure_when_nothing_matches(fake: FakeStripe) -> None:
    steps = StripeConnector().preview_document(draft(), connection(fake, customer_matching="strict"),
                                               SendContext("acme", "run-9"))
    assert {"step": "fail", "when": "no customer found", "error": "CustomerNotFound"} in steps
    assert "customer" not in [s["step"] for s in steps]


def test_connector_is_registered_under_stripe() -> None:
    from billflow.connectors import get_connector

    connector = get_connector("stripe")
    assert isinstance(connector, StripeConnector)
    assert connector.document_types == {"invoice"}


# --- money (issue 9: each target's unit and maximum) ---------------------------------------------------
def test_an_amount_above_stripe_maximum_is_refused_before_any_call(fake: FakeStripe) -> None:
    # Stripe: "The amount value supports up to eight digits (e.g., a value of 99999999 for a USD charge of
    # $999,999.99)."
    lines = [{"description": "Plant", "quantity": 2, "unit_amount_minor": 60_000_000}]
    with pytest.raises(TargetRejected, match=r"at most 99999999 minor units of EUR; line 1 \(120000000"):
        send(fake, draft(lines=lines))
    assert fake.requests == []


def test_amounts_are_sent_in_stripe_own_unit(fake: FakeStripe) -> None:
    # ISO 4217 gives MGA two decimals and ISK none; Stripe lists MGA as zero-decimal and keeps ISK two-decimal.
    send(fake, draft(currency="mga", lines=[{"description": "Ariary", "unit_amount_minor": 150000}]), key="mga")
    send(fake, draft(currency="isk", lines=[{"description": "Króna", "unit_amount_minor": 4990}]), key="isk")
    items = form(fake, "POST", "/v1/invoiceitems")
    assert [item["unit_amount"] for item in items] == [["1500"], ["499000"]]
    assert fake.violations == []


# --- ambiguous customers (issue 9, item 9) ------------------------------------------------------------
def test_two_customers_with_the_same_email_are_not_guessed_from(fake: FakeStripe) -> None:
    first = fake.add_customer(name="Acme GmbH", email="billing@acme.test")
    second = fake.add_customer(name="Acme Holding", email="billing@acme.test")
    with pytest.raises(AmbiguousCustomer) as caught:
        send(fake, draft())
    assert sorted(caught.value.details["candidates"]) == sorted(
        [f"{first['id']} 'Acme GmbH'", f"{second['id']} 'Acme Holding'"])
    assert "billing@acme.test" not in caught.value.message
    assert posts(fake) == []

    stored = draft(customer={"name": "Acme GmbH", "email": "billing@acme.test", "external_id": second["id"]})
    assert send(fake, stored, key="run-2").details["customer_id"] == second["id"]
    assert fake.violations == []
