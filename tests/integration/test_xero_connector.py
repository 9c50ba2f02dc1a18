"""XeroConnector against FakeXero (every request checked against Xero's trimmed OpenAPI document) and the
fake OAuth token endpoint, with rate limits counted in a moto DynamoDB counters table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from billflow.connectors import xero as xero_module
from billflow.connectors.base import SendContext
from billflow.connectors.xero import XeroConnector, step_key, where_literal
from billflow.errors import (
    AmbiguousCustomer,
    AuthorizationRevoked,
    ConfigurationError,
    CustomerNotFound,
    ProductNotFound,
    TargetRejected,
    TransientError,
)
from billflow.models.documents import InvoiceDraft
from billflow.storage.rate_limits import XERO, RateLimiter
from billflow.storage.secrets import Connection

from tests.conftest import invoice_draft as draft
from tests.fakes.base import Request
from tests.fakes.oauth_server import OAuthFake
from tests.fakes.xero_server import FakeXero

TENANT = "acme"


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def idp_style() -> str:
    return "xero"


@pytest.fixture
def xero(idp: OAuthFake, aws: None) -> Iterator[FakeXero]:
    fake = FakeXero(token=None)
    fake.use_oauth(idp)
    fake.start()
    yield fake
    fake.stop()


def connect(xero: FakeXero, idp: OAuthFake, **settings: Any) -> Connection:
    refresh = idp.grant()
    return Connection("xero-main", "xero", {
        "tenant_id": xero.tenant_id, "base_url": xero.url, "token_url": idp.token_url,
        "client_id": "client-1", "client_secret": "client-secret-1", "refresh_token": refresh,
        "access_token": idp.issue_access_token(refresh), "access_token_expires_at": int(time.time()) + 1800,
        "sales_account_code": "200", **settings,
    })


def send(connection: Connection, document: InvoiceDraft, key: str = "run-1") -> Any:
    return XeroConnector().create_document(document, connection, SendContext(TENANT, key))


def puts(xero: FakeXero, path: str) -> list[Request]:
    return xero.calls("PUT", path)


# --- the happy paths ----------------------------------------------------------------------------------
def test_invoice_with_every_field_xero_takes(xero: FakeXero, idp: OAuthFake) -> None:
    contact = xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1", "Widget")
    connection = connect(xero, idp)
    document = draft(lines=[
        {"description": "Widget, blue", "quantity": 2, "unit_amount_minor": 1999, "sku": "W-1", "taxable": True},
        {"description": "Widget, blue", "quantity": 1.5, "unit_amount_minor": 1000, "sku": "W-1"},
    ], options={"date": "2024-03-01", "tax_type": "OUTPUT2", "tax_type_exempt": "EXEMPTOUTPUT"})

    result = send(connection, document)

    [request] = puts(xero, "/Invoices")
    [invoice] = request.json()["Invoices"]
    assert invoice == {
        "Type": "ACCREC",
        "Contact": {"ContactID": contact["ContactID"]},
        "Date": "2024-03-01",
        "DueDate": "2024-03-15",
        "Status": "AUTHORISED",
        "CurrencyCode": "USD",
        "Reference": "Deal 42",
        "LineItems": [
            {"Description": "Widget, blue", "Quantity": 2.0, "UnitAmount": 19.99, "ItemCode": "W-1",
             "AccountCode": "200", "TaxType": "OUTPUT2"},
            {"Description": "Widget, blue", "Quantity": 1.5, "UnitAmount": 10.0, "ItemCode": "W-1",
             "AccountCode": "200", "TaxType": "EXEMPTOUTPUT"},
        ],
    }
    assert request.headers["xero-tenant-id"] == xero.tenant_id
    assert request.headers["idempotency-key"] == "run-1:invoice"
    assert request.headers["authorization"].startswith("Bearer ")
    stored = xero.invoices[result.external_id]
    assert stored["Total"] == 62.98  # 39.98 + 8.00 tax (20%, rounded per line) + 15.00 tax-exempt
    assert result.details["number"] == "INV-0001"
    assert result.details["status"] == "AUTHORISED"
    assert result.details["contact_matched_by"] == "email"
    assert result.external_url.endswith(result.external_id)
    assert xero.violations == []
    assert idp.violations == []


@pytest.mark.parametrize("status", ["DRAFT", "SUBMITTED", "AUTHORISED"])
def test_invoice_status_comes_from_the_options(xero: FakeXero, idp: OAuthFake, status: str) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    result = send(connect(xero, idp), draft(options={"status": status.lower()}))
    assert xero.invoices[result.external_id]["Status"] == status
    assert xero.violations == []


def test_estimate_becomes_a_quote(xero: FakeXero, idp: OAuthFake) -> None:
    contact = xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    document = draft(document_type="estimate", memo="Valid for two weeks",
                     options={"date": "2024-03-01", "title": "Widgets for Globex", "status": "sent"})

    result = send(connect(xero, idp), document)

    [request] = puts(xero, "/Quotes")
    [quote] = request.json()["Quotes"]
    assert quote["Contact"] == {"ContactID": contact["ContactID"]}
    assert (quote["Date"], quote["ExpiryDate"], quote["Status"]) == ("2024-03-01", "2024-03-15", "SENT")
    assert (quote["Title"], quote["Summary"], quote["Reference"]) == ("Widgets for Globex", "Valid for two weeks",
                                                                     "Deal 42")
    assert request.headers["idempotency-key"] == "run-1:quote"
    assert result.external_id in xero.quotes
    assert result.details["number"] == "QU-0001"
    assert puts(xero, "/Invoices") == []
    assert xero.violations == []


def test_three_decimal_currencies_ask_for_four_unit_decimals(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    result = send(connect(xero, idp), draft(currency="kwd", lines=[
        {"description": "Widget", "unit_amount_minor": 12345, "sku": "W-1"}]))
    [request] = puts(xero, "/Invoices")
    assert request.query["unitdp"] == ["4"]
    assert request.json()["Invoices"][0]["LineItems"][0]["UnitAmount"] == 12.345
    assert xero.invoices[result.external_id]["CurrencyCode"] == "KWD"
    assert xero.violations == []


def test_three_decimal_quotes_are_rounded_explicitly_and_say_so(
    xero: FakeXero, idp: OAuthFake, caplog: pytest.LogCaptureFixture
) -> None:
    # Xero's OpenAPI: PUT /Quotes has no unitdp parameter (PUT /Invoices has: "(Unit Decimal
    # Places) You can opt in to use four decimal places for unit amounts"), so a quote keeps two.
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    lines = [{"description": "Widget", "unit_amount_minor": 12345, "sku": "W-1"},
             {"description": "Bolt", "unit_amount_minor": 2500, "sku": "W-1"}]
    result = send(connect(xero, idp), draft(document_type="estimate", currency="kwd", lines=lines))

    [request] = puts(xero, "/Quotes")
    assert "unitdp" not in request.query
    assert [line["UnitAmount"] for line in request.json()["Quotes"][0]["LineItems"]] == [12.35, 2.5]
    assert result.details["unit_amounts_rounded"] == [{"line": 1, "unit_amount": "12.345", "sent": "12.35"}]
    assert any("12.345 to 12.35" in r.getMessage() for r in caplog.records)
    assert xero.violations == []


# --- contacts ---------------------------------------------------------------------------------------
def test_contact_found_by_the_stored_id_first(xero: FakeXero, idp: OAuthFake) -> None:
    stored = xero.add_contact("Globex (old name)")
    xero.add_contact("Globex Ltd", email="ap@globex.test")  # would match by email; the id wins
    xero.add_item("W-1")
    document = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": stored["ContactID"]})

    result = send(connect(xero, idp), document)

    assert result.details["contact_id"] == stored["ContactID"]
    assert result.details["contact_matched_by"] == "id"
    [lookup] = xero.calls("GET", "/Contacts")
    assert lookup.query["IDs"] == [stored["ContactID"]]
    assert xero.violations == []


def test_a_stored_id_that_is_no_guid_is_not_looked_up(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    document = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": "cus_Stripe123"})
    result = send(connect(xero, idp), document)
    assert result.details["contact_matched_by"] == "email"
    assert all("IDs" not in r.query for r in xero.calls("GET", "/Contacts"))
    assert xero.violations == []


def test_contact_found_by_email_without_regard_to_case(xero: FakeXero, idp: OAuthFake) -> None:
    contact = xero.add_contact("Globex Incorporated", email="AP@Globex.test")
    xero.add_item("W-1")
    result = send(connect(xero, idp), draft())
    assert result.details["contact_id"] == contact["ContactID"]
    [lookup] = xero.calls("GET", "/Contacts")
    assert lookup.query["where"] == ['EmailAddress=="ap@globex.test"']
    assert xero.violations == []


def test_contact_found_by_first_and_last_name(xero: FakeXero, idp: OAuthFake) -> None:
    contact = xero.add_contact("Ada L. (consulting)", first_name="Ada", last_name="Lovelace")
    xero.add_item("W-1")
    document = draft(customer={"name": "Ada Lovelace", "email": "ada@example.test",
                               "first_name": "Ada", "last_name": "Lovelace"})
    result = send(connect(xero, idp), document)
    assert result.details["contact_id"] == contact["ContactID"]
    assert result.details["contact_matched_by"] == "person_name"
    assert xero.calls("GET", "/Contacts")[-1].query["where"] == ['FirstName=="Ada" AND LastName=="Lovelace"']
    assert xero.violations == []


def test_contact_found_by_a_name_with_quotes(xero: FakeXero, idp: OAuthFake) -> None:
    contact = xero.add_contact('The "Best" Widgets')
    xero.add_item("W-1")
    result = send(connect(xero, idp), draft(customer={"name": 'The "Best" Widgets'}))
    assert result.details["contact_id"] == contact["ContactID"]
    assert result.details["contact_matched_by"] == "name"
    assert xero.calls("GET", "/Contacts")[-1].query["where"] == ['Name=="The ""Best"" Widgets"']
    assert xero.violations == []


def test_archived_contacts_do_not_match(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd (2019)", email="ap@globex.test", status="ARCHIVED")
    xero.add_item("W-1")
    result = send(connect(xero, idp), draft())
    assert result.details["contact_created"] is True
    assert xero.violations == []


def test_missing_contact_is_created(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_item("W-1")
    document = draft(customer={
        "name": "Initech", "email": "billing@initech.test", "first_name": "Bill", "last_name": "Lumbergh",
        "tax_id": "GB123", "crm_company_id": "crm-77",
        "address": {"line1": "1 Main St", "city": "Austin", "state": "TX", "postal_code": "78701", "country": "US"},
    })

    result = send(connect(xero, idp), document)

    [request] = puts(xero, "/Contacts")
    assert request.json() == {"Contacts": [{
        "Name": "Initech", "FirstName": "Bill", "LastName": "Lumbergh", "EmailAddress": "billing@initech.test",
        "TaxNumber": "GB123", "ContactNumber": "crm-77",
        "Addresses": [{"AddressType": "POBOX", "AddressLine1": "1 Main St", "City": "Austin", "Region": "TX",
                       "PostalCode": "78701", "Country": "US"}],
    }]}
    assert request.headers["idempotency-key"] == "run-1:contact"
    assert result.details["contact_created"] is True
    assert xero.contacts[result.details["contact_id"]]["IsCustomer"] is True  # invoiced, so a customer now
    assert xero.violations == []


def test_strict_matching_refuses_and_creates_nothing(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_item("W-1")
    connection = connect(xero, idp, customer_matching="strict", create_products=True)
    document = draft(lines=[{"description": "New thing", "unit_amount_minor": 100, "sku": "NEW-1"}])

    with pytest.raises(CustomerNotFound) as caught:
        send(connection, document)

    assert "strict" in caught.value.message
    assert "ap@globex.test" not in caught.value.message
    assert [r for r in xero.requests if r.method == "PUT"] == []
    assert xero.contacts == {}
    assert len(xero.items) == 1
    assert xero.invoices == {}
    assert xero.violations == []


# --- items ------------------------------------------------------------------------------------------
def test_item_found_by_code(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("w-1", "Widget")  # codes compare without regard to case, as in Xero
    send(connect(xero, idp), draft())
    [lookup] = xero.calls("GET", "/Items")
    assert lookup.query["where"] == ['Code=="W-1"']
    assert puts(xero, "/Invoices")[0].json()["Invoices"][0]["LineItems"][0]["ItemCode"] == "w-1"
    assert xero.violations == []


def test_item_found_by_name_when_no_code_matches(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("WID-BLUE", "Blue widget")
    document = draft(lines=[{"description": "2 blue widgets", "unit_amount_minor": 1999, "sku": "W-1",
                             "product_name": "Blue widget"}])
    send(connect(xero, idp), document)
    wheres = [r.query["where"][0] for r in xero.calls("GET", "/Items")]
    assert wheres == ['Code=="W-1"', 'Name=="Blue widget"']
    assert puts(xero, "/Invoices")[0].json()["Invoices"][0]["LineItems"][0]["ItemCode"] == "WID-BLUE"
    assert puts(xero, "/Items") == []
    assert xero.violations == []


def test_missing_items_are_created_once_when_allowed(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    document = draft(lines=[
        {"description": "Widget, blue", "quantity": 2, "unit_amount_minor": 1999, "sku": "W-1"},
        {"description": "Widget, blue again", "unit_amount_minor": 1999, "sku": "W-1"},
        {"description": "An installation service with a very long name indeed", "unit_amount_minor": 5000},
    ])

    result = send(connect(xero, idp, create_products=True), document)

    [request] = puts(xero, "/Items")
    items = request.json()["Items"]
    assert [i["Code"] for i in items] == ["W-1", xero_module.item_code(None, document.lines[2].description)]
    assert len(items[1]["Code"]) <= 30
    assert items[0] == {"Code": "W-1", "Name": "Widget, blue", "Description": "Widget, blue", "IsSold": True,
                        "IsPurchased": False, "SalesDetails": {"UnitPrice": 19.99, "AccountCode": "200"}}
    assert request.headers["idempotency-key"] == "run-1:items"
    codes = [line["ItemCode"] for line in puts(xero, "/Invoices")[0].json()["Invoices"][0]["LineItems"]]
    assert codes == ["W-1", "W-1", items[1]["Code"]]
    assert len(result.details["items_created"]) == 2
    assert xero.violations == []


def test_missing_items_refuse_the_send_before_anything_is_created(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_item("W-1")
    document = draft(lines=[
        {"description": "Widget", "unit_amount_minor": 1999, "sku": "W-1"},
        {"description": "Gadget", "unit_amount_minor": 500, "sku": "G-9"},
        {"description": "Gizmo", "unit_amount_minor": 700},
    ])

    with pytest.raises(ProductNotFound) as caught:
        send(connect(xero, idp), document)  # the contact is missing too: it must not be created

    assert "line 2" in caught.value.message
    assert "line 3" in caught.value.message
    assert [u["line"] for u in caught.value.details["unmatched_lines"]] == [2, 3]
    assert [r for r in xero.requests if r.method == "PUT"] == []
    assert xero.contacts == {}
    assert xero.violations == []


# --- tokens, limits and failures --------------------------------------------------------------------
def test_an_access_token_that_expires_mid_run_is_refreshed(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    connection = connect(xero, idp)
    first_refresh_token = connection.settings["refresh_token"]

    def expire_before_the_invoice(req: Request) -> None:
        if req.method == "PUT" and req.path.endswith("/Invoices") and idp.refreshes == 0:
            idp.expire_access_tokens()

    xero.before_request.append(expire_before_the_invoice)
    result = send(connection, draft())

    assert idp.refreshes == 1
    statuses = [status for op, status, _ in xero.answers if op == "createInvoices"]
    assert statuses == [401, 200]
    assert len(xero.invoices) == 1
    assert result.external_id in xero.invoices
    # Xero rotated the refresh token; the token store keeps the new tokens for the next send.
    assert idp.current_refresh_token(0) != first_refresh_token
    send(connection, draft(), key="run-2")
    assert idp.refreshes == 1
    assert idp.stale_refreshes == []
    assert len(xero.invoices) == 2
    assert xero.violations == []
    assert idp.violations == []


def test_a_connection_without_an_access_token_refreshes_first(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    connection = connect(xero, idp)
    del connection.settings["access_token"]
    send(connection, draft())
    assert idp.refreshes == 1
    assert [s for _, s, _ in xero.answers] == [200, 200, 200]
    assert xero.violations == []
    assert idp.violations == []


def test_a_connection_revoked_mid_run_is_final(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_item("W-1")
    connection = connect(xero, idp)

    def disconnect_before_creating(req: Request) -> None:
        if req.method == "PUT":
            idp.revoke(0)  # the user disconnected billflow in Xero

    xero.before_request.append(disconnect_before_creating)
    with pytest.raises(AuthorizationRevoked):
        send(connection, draft())
    assert xero.contacts == {}
    assert xero.invoices == {}
    assert xero.violations == []
    assert idp.violations == []


def test_429_waits_for_retry_after_and_the_retry_succeeds(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_item("W-1")
    connection = connect(xero, idp)
    xero.fail_next("createInvoices", 429, retry_after=7)

    with pytest.raises(TransientError) as caught:
        send(connection, draft())
    assert caught.value.retry_after_seconds == 7
    assert "minute limit" in caught.value.message
    assert len(xero.contacts) == 1
    assert xero.invoices == {}

    result = send(connection, draft())  # the state machine's retry: same run, same key

    assert len(xero.contacts) == 1  # found by email this time, not created twice
    assert list(xero.invoices) == [result.external_id]
    assert xero.violations == []


def test_5xx_is_transient(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    xero.fail_next("getItems", 503)
    with pytest.raises(TransientError) as caught:
        send(connect(xero, idp), draft())
    assert caught.value.details["status"] == 503
    assert xero.violations == []


def test_a_validation_error_is_final_and_carries_xeros_message(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    xero.fail_next("createInvoices", 400, message="Account code '200' has been archived, or has been deleted.")
    with pytest.raises(TargetRejected) as caught:
        send(connect(xero, idp), draft())
    assert not isinstance(caught.value, TransientError)
    assert caught.value.message == ("xero answered 400: Account code '200' has been archived, or has been "
                                    "deleted.")
    assert xero.violations == []


def test_xeros_own_validation_reaches_the_caller(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    with pytest.raises(TargetRejected) as caught:
        send(connect(xero, idp), draft(currency="chf"))  # not a currency of this organisation
    assert "The currency code 'CHF' has not been added to this organisation." in caught.value.message
    assert caught.value.details["status"] == 400
    assert len(xero.violations) == 1
    assert "CHF" in xero.violations[0]


def test_a_retried_send_with_the_same_key_makes_one_invoice(xero: FakeXero, idp: OAuthFake) -> None:
    connection = connect(xero, idp, create_products=True)
    first = send(connection, draft())
    again = send(connection, draft())
    assert again.external_id == first.external_id
    assert len(xero.invoices) == 1
    assert len(xero.contacts) == 1
    assert len(xero.items) == 1
    assert "run-1:invoice" in xero.replayed
    other = send(connection, draft(), key="run-2")  # another run is another invoice
    assert other.external_id != first.external_id
    assert len(xero.invoices) == 2
    assert xero.violations == []


def test_long_run_keys_fit_xeros_128_characters() -> None:
    key = step_key("k" * 200, "invoice")
    assert len(key) <= 128
    assert key.endswith(":invoice")
    assert key == step_key("k" * 200, "invoice")
    assert step_key("short", "contact") == "short:contact"
    assert where_literal('a"b') == '"a""b"'


def test_an_exhausted_minute_budget_stops_before_calling_xero(xero: FakeXero, idp: OAuthFake) -> None:
    xero.add_contact("Globex Ltd", email="ap@globex.test")
    xero.add_item("W-1")
    now = 1_699_999_990.0  # 10 s into a minute (1_699_999_980 is a multiple of 60)
    limiter = RateLimiter(clock=lambda: now)
    scope = f"{TENANT}#{xero.tenant_id}"
    for _ in range(XERO.per_minute - 2):
        limiter.take("xero", scope, XERO)
    connector = XeroConnector(rate_limiter=limiter)

    with pytest.raises(TransientError) as caught:
        connector.create_document(draft(), connect(xero, idp), SendContext(TENANT, "run-1"))

    assert caught.value.retry_after_seconds == 50
    assert len(xero.requests) == 2
    assert xero.invoices == {}
    other_tenant = XeroConnector(rate_limiter=limiter).create_document(
        draft(), connect(xero, idp), SendContext("another-tenant", "run-1"))
    assert other_tenant.external_id in xero.invoices
    assert xero.violations == []


# --- configuration and previews ---------------------------------------------------------------------
def test_bad_options_are_refused_before_any_call(xero: FakeXero, idp: OAuthFake) -> None:
    connection = connect(xero, idp)
    for options in ({"status": "PAID"}, {"date": "1 March"}, {"line_amount_types": "Gross"}):
        with pytest.raises(ConfigurationError):
            send(connection, draft(options=options))
    with pytest.raises(ConfigurationError):
        send(connection, draft(document_type="credit_note"))
    with pytest.raises(ConfigurationError):
        send(Connection("x", "xero", {"client_id": "c"}), draft())
    assert xero.requests == []


def test_preview_lists_the_requests_and_sends_nothing(xero: FakeXero, idp: OAuthFake) -> None:
    connection = connect(xero, idp, create_products=True)
    steps = XeroConnector().preview_document(draft(), connection, SendContext(TENANT, "run-1"))
    assert [s["step"] for s in steps] == [
        "find_contact_by_email", "find_contact_by_name", "contact", "find_item_by_sku:0", "find_item_by_name:0",
        "items", "invoice",
    ]
    invoice = steps[-1]
    assert invoice["method"] == "PUT"
    assert invoice["idempotency_key"] == "run-1:invoice"
    assert invoice["body"]["Invoices"][0]["Contact"] == {"ContactID": "{contact.ContactID}"}
    assert xero.requests == []
    assert idp.requests == []


# --- ambiguous customers (issue 9, item 9) ------------------------------------------------------------
def test_two_contacts_with_the_same_email_are_not_guessed_from(xero: FakeXero, idp: OAuthFake) -> None:
    first = xero.add_contact("Globex Ltd", email="ap@globex.test")
    second = xero.add_contact("Globex Holding", email="ap@globex.test")
    xero.add_item("W-1")
    with pytest.raises(AmbiguousCustomer) as caught:
        send(connect(xero, idp, create_products=True), draft())
    assert caught.value.details["candidates"] == [f"ContactID {first['ContactID']} 'Globex Ltd'",
                                                  f"ContactID {second['ContactID']} 'Globex Holding'"]
    assert "ap@globex.test" not in caught.value.message
    assert [r for r in xero.requests if r.method in ("PUT", "POST")] == []
    assert xero.violations == []

    # the cure the message names: the stored id is taken first
    stored = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": second["ContactID"]})
    result = send(connect(xero, idp), stored, key="run-2")
    assert result.details["contact_id"] == second["ContactID"]
