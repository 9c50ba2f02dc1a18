"""ZohoBooksConnector against FakeZohoBooks (every request checked against the field list written from
Zoho's documentation) and the fake OAuth token endpoint in Zoho's style, with rate limits counted in a moto
DynamoDB counters table. The field list's validator has its own tests at the end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode
from urllib.request import Request as UrlRequest
from urllib.request import urlopen

import pytest
from billflow.connectors import http as billflow_http
from billflow.connectors.base import SendContext
from billflow.connectors.oauth import MemoryTokenStore
from billflow.connectors.zoho_books import ZohoBooksConnector, idempotency_marker, marked_reference
from billflow.connectors.zoho_books import token_url as zoho_token_url
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
from billflow.storage.rate_limits import ZOHO_BOOKS, RateLimiter
from billflow.storage.secrets import Connection

from tests.conftest import invoice_draft as draft
from tests.fakes.base import Request
from tests.fakes.oauth_server import OAuthFake
from tests.fakes.zoho_books_server import DEFAULT_TOKEN, FakeZohoBooks, ZohoFields

TENANT = "acme"


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
def idp_style() -> str:
    return "zoho"


@pytest.fixture
def zoho(idp: OAuthFake, aws: None) -> Iterator[FakeZohoBooks]:
    fake = FakeZohoBooks(token=None)
    fake.use_oauth(idp)
    fake.start()
    yield fake
    fake.stop()


def connect(zoho: FakeZohoBooks, idp: OAuthFake, **settings: Any) -> Connection:
    refresh = idp.grant()
    return Connection("zoho-main", "zoho_books", {
        "organization_id": zoho.organization_id, "api_domain": zoho.url, "token_url": idp.token_url,
        "client_id": "client-1", "client_secret": "client-secret-1", "refresh_token": refresh,
        "access_token": idp.issue_access_token(refresh), "access_token_expires_at": int(time.time()) + 1800,
        **settings,
    })


def send(connection: Connection, document: InvoiceDraft, key: str = "run-1") -> Any:
    return ZohoBooksConnector().create_document(document, connection, SendContext(TENANT, key))


def posts(zoho: FakeZohoBooks, path: str) -> list[Request]:
    return zoho.calls("POST", path)


# --- the happy paths ----------------------------------------------------------------------------------
def test_invoice_with_the_fields_zoho_takes(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    contact = zoho.add_contact("Globex Ltd", email="ap@globex.test")
    item = zoho.add_item("Widget", rate=25, sku="W-1")
    tax_id = zoho.add_tax("Sales tax", 10)
    document = draft(memo="Thank you", options={"date": "2024-03-01", "tax_id": tax_id}, lines=[
        {"description": "Widget, blue", "quantity": 2, "unit_amount_minor": 1999, "sku": "W-1", "taxable": True},
        {"description": "Widget, spare", "quantity": 1, "unit_amount_minor": 500, "sku": "W-1"},
    ])

    result = send(connect(zoho, idp), document)

    [request] = posts(zoho, "/invoices")
    reference = f"Deal 42 {idempotency_marker('run-1', 'invoice')}"
    assert request.json() == {
        "customer_id": contact["contact_id"],
        "date": "2024-03-01",
        "due_date": "2024-03-15",
        "payment_terms": 14,
        "reference_number": reference,
        "notes": "Thank you",
        "line_items": [
            {"item_id": item["item_id"], "description": "Widget, blue", "rate": 19.99, "quantity": 2.0,
             "tax_id": tax_id},
            {"item_id": item["item_id"], "description": "Widget, spare", "rate": 5.0, "quantity": 1.0},
        ],
    }
    assert request.query["organization_id"] == [zoho.organization_id]
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"].startswith("Zoho-oauthtoken ")
    invoice = zoho.invoices[result.external_id]
    assert invoice["total"] == 48.98  # 39.98 + 4.00 tax (10%, rounded) + 5.00
    assert (invoice["status"], result.details["number"]) == ("draft", "INV-000001")
    assert result.external_url == invoice["invoice_url"]
    assert result.details["reference_number"] == reference
    assert zoho.violations == []
    assert idp.violations == []


def test_send_option_has_zoho_email_the_invoice(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    result = send(connect(zoho, idp), draft(options={"send": True}))
    assert posts(zoho, "/invoices")[0].query["send"] == ["true"]
    assert zoho.invoices[result.external_id]["status"] == "sent"
    assert zoho.violations == []


def test_estimate(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    contact = zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    result = send(connect(zoho, idp), draft(document_type="estimate"))
    [request] = posts(zoho, "/estimates")
    body = request.json()
    assert (body["customer_id"], body["date"], body["expiry_date"]) == (contact["contact_id"], "2024-03-01",
                                                                        "2024-03-15")
    assert "due_date" not in body
    assert "payment_terms" not in body
    assert result.external_id in zoho.estimates
    assert result.details["number"] == "EST-000001"
    assert posts(zoho, "/invoices") == []
    assert zoho.violations == []


# --- customers --------------------------------------------------------------------------------------
def test_customer_found_by_the_stored_id(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    stored = zoho.add_contact("Globex (old name)")
    zoho.add_item("Widget", sku="W-1")
    document = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": stored["contact_id"]})
    result = send(connect(zoho, idp), document)
    assert result.details["customer_id"] == stored["contact_id"]
    assert result.details["customer_matched_by"] == "id"
    assert zoho.violations == []


def test_a_stored_id_zoho_does_not_know_falls_back_to_email(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    contact = zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    document = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": "999"})
    result = send(connect(zoho, idp), document)
    assert result.details["customer_id"] == contact["contact_id"]
    assert result.details["customer_matched_by"] == "email"
    assert zoho.violations == []  # the 404 of the lookup is an answer, not a mistake


def test_a_stored_id_from_another_system_is_not_looked_up(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    document = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": "cus_Stripe1"})
    result = send(connect(zoho, idp), document)
    assert result.details["customer_matched_by"] == "email"
    assert [r.path for r in zoho.requests if "/contacts/" in r.path] == []
    assert zoho.violations == []


def test_customer_found_by_email(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Supplies", email="ap@globex.test", contact_type="vendor")  # not a customer
    contact = zoho.add_contact("Globex Incorporated", email="AP@globex.test")
    zoho.add_item("Widget", sku="W-1")
    result = send(connect(zoho, idp), draft())
    assert result.details["customer_id"] == contact["contact_id"]
    lookup = zoho.calls("GET", "/contacts")[0]
    assert (lookup.query["email"], lookup.query["filter_by"]) == (["ap@globex.test"], ["Status.Active"])
    assert zoho.violations == []


def test_customer_found_by_first_and_last_name(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    contact = zoho.add_contact("Lovelace Consulting", first_name="Ada", last_name="Lovelace")
    zoho.add_item("Widget", sku="W-1")
    document = draft(customer={"name": "Ada Lovelace", "email": "ada@example.test", "first_name": "Ada",
                               "last_name": "Lovelace"})
    result = send(connect(zoho, idp), document)
    assert result.details["customer_id"] == contact["contact_id"]
    assert result.details["customer_matched_by"] == "person_name"
    assert zoho.violations == []


def test_customer_found_by_name(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    contact = zoho.add_contact("Globex Ltd")
    zoho.add_item("Widget", sku="W-1")
    result = send(connect(zoho, idp), draft(customer={"name": "globex ltd"}))
    assert result.details["customer_id"] == contact["contact_id"]
    assert result.details["customer_matched_by"] == "name"
    assert zoho.calls("GET", "/contacts")[0].query["contact_name"] == ["globex ltd"]
    assert zoho.violations == []


def test_an_inactive_customer_is_not_invoiced(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test", status="inactive")
    zoho.add_item("Widget", sku="W-1")
    with pytest.raises(TargetRejected) as caught:
        send(connect(zoho, idp), draft())
    # Not matched, so billflow tries to create it, and Zoho refuses the name, in its own words.
    assert caught.value.message == ('zoho_books answered 400 (code 3062): The contact "Globex Ltd" already '
                                    "exists. Please specify a different name.")
    assert zoho.invoices == {}
    assert len(zoho.violations) == 1


def test_missing_customer_is_created_in_the_drafts_currency(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_item("Widget", sku="W-1", rate=10)
    document = draft(currency="eur", options={"exchange_rate": "1.0825"}, customer={
        "name": "Initech", "email": "billing@initech.test", "first_name": "Bill", "last_name": "Lumbergh",
        "address": {"line1": "1 Main St", "city": "Austin", "state": "TX", "postal_code": "78701", "country": "US"},
    })

    result = send(connect(zoho, idp), document)

    [request] = posts(zoho, "/contacts")
    assert request.json() == {
        "contact_name": "Initech", "company_name": "Initech", "contact_type": "customer",
        "customer_sub_type": "business", "currency_id": zoho.currency_id("EUR"),
        "contact_persons": [{"first_name": "Bill", "last_name": "Lumbergh", "email": "billing@initech.test",
                             "is_primary_contact": True}],
        "billing_address": {"address": "1 Main St", "city": "Austin", "state": "TX", "zip": "78701",
                            "country": "US"},
    }
    assert result.details["customer_created"] is True
    assert zoho.invoices[result.external_id]["currency_code"] == "EUR"
    assert posts(zoho, "/invoices")[0].json()["exchange_rate"] == 1.0825
    assert zoho.calls("GET", "/invoices") == []  # a customer made just now has no earlier invoice
    assert zoho.violations == []


def test_a_person_is_created_as_an_individual_in_the_base_currency(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_item("Widget", sku="W-1")
    send(connect(zoho, idp), draft(customer={"name": "Ada Lovelace", "first_name": "Ada", "last_name": "Lovelace"}))
    body = posts(zoho, "/contacts")[0].json()
    assert body["customer_sub_type"] == "individual"
    assert "company_name" not in body
    assert "currency_id" not in body
    assert zoho.violations == []


def test_strict_matching_refuses_and_creates_nothing(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    connection = connect(zoho, idp, customer_matching="strict", create_products=True)
    with pytest.raises(CustomerNotFound):
        send(connection, draft())
    assert [r for r in zoho.requests if r.method == "POST"] == []
    assert zoho.contacts == {}
    assert zoho.violations == []


def test_a_customer_in_another_currency_is_refused_before_anything_is_made(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test", currency="GBP")
    with pytest.raises(TargetRejected) as caught:
        send(connect(zoho, idp, create_products=True), draft(currency="usd"))
    assert "GBP" in caught.value.message
    assert [r for r in zoho.requests if r.method == "POST"] == []
    assert zoho.violations == []


def test_a_currency_the_organization_lacks_is_refused(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_item("Widget", sku="W-1")
    with pytest.raises(TargetRejected) as caught:
        send(connect(zoho, idp), draft(currency="chf"))
    assert "no currency CHF" in caught.value.message
    assert [r for r in zoho.requests if r.method == "POST"] == []


# --- items ------------------------------------------------------------------------------------------
def test_item_found_by_sku(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("W-1 spare parts", sku="W-10")  # a name holding the SKU; the SKU itself does not match
    item = zoho.add_item("Widget", sku="w-1")
    send(connect(zoho, idp), draft())
    [lookup] = zoho.calls("GET", "/items")
    assert lookup.query == {"organization_id": [zoho.organization_id], "filter_by": ["Status.Active"],
                            "page": ["1"], "per_page": ["200"]}  # the active items, matched by SKU here
    assert posts(zoho, "/invoices")[0].json()["line_items"][0]["item_id"] == item["item_id"]
    assert zoho.violations == []


def test_item_found_by_name(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    item = zoho.add_item("Blue widget", sku="WID-BLUE")
    document = draft(lines=[{"description": "2 blue widgets", "unit_amount_minor": 1999, "sku": "W-1",
                             "product_name": "Blue widget"}])
    send(connect(zoho, idp), document)
    assert [r.query.get("name") for r in zoho.calls("GET", "/items")] == [None, ["Blue widget"]]
    assert posts(zoho, "/invoices")[0].json()["line_items"][0]["item_id"] == item["item_id"]
    assert posts(zoho, "/items") == []
    assert zoho.violations == []


def test_missing_items_are_created_once_when_allowed(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    document = draft(lines=[
        {"description": "Widget, blue", "quantity": 2, "unit_amount_minor": 1999, "sku": "W-1"},
        {"description": "Widget, blue again", "unit_amount_minor": 1999, "sku": "W-1"},
        {"description": "Installation", "unit_amount_minor": 5000},
    ])
    result = send(connect(zoho, idp, create_products=True, sales_account_id="4600001"), document)
    bodies = [r.json() for r in posts(zoho, "/items")]
    assert bodies == [
        {"name": "Widget, blue", "rate": 19.99, "description": "Widget, blue", "product_type": "service",
         "item_type": "sales", "sku": "W-1", "account_id": "4600001"},
        {"name": "Installation", "rate": 50.0, "description": "Installation", "product_type": "service",
         "item_type": "sales", "account_id": "4600001"},
    ]
    lines = posts(zoho, "/invoices")[0].json()["line_items"]
    assert lines[0]["item_id"] == lines[1]["item_id"] != lines[2]["item_id"]
    assert result.details["items_created"] == ["Widget, blue", "Installation"]
    assert zoho.violations == []


def test_missing_items_refuse_the_send_before_anything_is_created(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_item("Widget", sku="W-1")
    document = draft(lines=[
        {"description": "Widget", "unit_amount_minor": 1999, "sku": "W-1"},
        {"description": "Gadget", "unit_amount_minor": 500, "sku": "G-9"},
    ])
    with pytest.raises(ProductNotFound) as caught:
        send(connect(zoho, idp), document)
    assert [u["line"] for u in caught.value.details["unmatched_lines"]] == [2]
    assert [r for r in zoho.requests if r.method == "POST"] == []
    assert zoho.violations == []


# --- tokens, limits, failures, idempotency ------------------------------------------------------------
def test_an_expired_access_token_is_refreshed_and_the_refresh_token_kept(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    connection = connect(zoho, idp)
    refresh_token = connection.settings["refresh_token"]

    def expire_before_the_invoice(req: Request) -> None:
        if req.method == "POST" and req.path.endswith("/invoices") and idp.refreshes == 0:
            idp.expire_access_tokens()

    zoho.before_request.append(expire_before_the_invoice)
    result = send(connection, draft())

    assert idp.refreshes == 1
    assert idp.current_refresh_token(0) == refresh_token  # Zoho does not rotate it
    assert result.external_id in zoho.invoices
    assert len(zoho.invoices) == 1
    send(connection, draft(), key="run-2")  # the refreshed token is reused; the refresh token still works
    assert len(zoho.invoices) == 2
    assert zoho.violations == []
    assert idp.violations == []


def test_a_revoked_refresh_token_is_final(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    connection = connect(zoho, idp)
    del connection.settings["access_token"]
    idp.revoke(0)  # Zoho answers 200 {"error": "invalid_code"}
    with pytest.raises(AuthorizationRevoked):
        send(connection, draft())
    assert zoho.requests == []


def test_429_is_transient_and_the_retry_succeeds(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_item("Widget", sku="W-1")
    connection = connect(zoho, idp)
    zoho.fail_next("createInvoice", 429, retry_after=20)
    with pytest.raises(TransientError) as caught:
        send(connection, draft())
    assert caught.value.retry_after_seconds == 20
    assert "too many requests" in caught.value.message
    result = send(connection, draft())
    assert len(zoho.contacts) == 1  # found by email on the retry
    assert list(zoho.invoices) == [result.external_id]
    assert zoho.violations == []


def test_5xx_is_transient(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.fail_next("listContacts", 500)
    with pytest.raises(TransientError):
        send(connect(zoho, idp), draft())


def test_a_refusal_is_final_and_carries_zohos_message(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    zoho.fail_next("createInvoice", 400, code=1001, message="Invoice number INV-000001 already exists.")
    with pytest.raises(TargetRejected) as caught:
        send(connect(zoho, idp), draft())
    assert not isinstance(caught.value, TransientError)
    assert caught.value.message == "zoho_books answered 400 (code 1001): Invoice number INV-000001 already exists."
    assert caught.value.details["code"] == 1001
    assert zoho.violations == []


def test_a_retried_send_never_makes_a_second_invoice(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    connection = connect(zoho, idp)
    zoho.lose_next_answer("createInvoice")  # Zoho made the invoice, the answer never arrived

    with pytest.raises(TransientError):
        send(connection, draft())
    assert len(zoho.invoices) == 1

    result = send(connection, draft())  # the state machine's retry: same run, same key
    again = send(connection, draft())  # and a duplicate delivery of the same run

    assert len(zoho.invoices) == 1
    assert result.external_id == again.external_id == next(iter(zoho.invoices))
    assert result.details["already_existed"] is True
    assert len(posts(zoho, "/invoices")) == 1
    other = send(connection, draft(), key="run-2")  # another run is another invoice
    assert other.external_id != result.external_id
    assert zoho.violations == []


def test_markers_fit_zohos_reference_number() -> None:
    marker = idempotency_marker("run-1", "invoice")
    assert marker.startswith("bf-")
    assert marker != idempotency_marker("run-1", "estimate")
    assert marked_reference(None, marker) == marker
    long = marked_reference("x" * 300, marker)
    assert len(long) == 100
    assert long.endswith(" " + marker)


def test_an_exhausted_minute_budget_stops_before_calling_zoho(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    now = 1_699_999_995.0  # 15 s into a minute
    limiter = RateLimiter(clock=lambda: now)
    for _ in range(ZOHO_BOOKS.per_minute):
        limiter.take("zoho_books", f"{TENANT}#{zoho.organization_id}", ZOHO_BOOKS)
    with pytest.raises(TransientError) as caught:
        ZohoBooksConnector(rate_limiter=limiter).create_document(draft(), connect(zoho, idp),
                                                                  SendContext(TENANT, "run-1"))
    assert caught.value.retry_after_seconds == 45
    assert zoho.requests == []


def test_bad_options_are_refused_before_any_call(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    connection = connect(zoho, idp)
    for options in ({"date": "yesterday"}, {"send": "yes"}):
        with pytest.raises(ConfigurationError):
            send(connection, draft(options=options))
    with pytest.raises(ConfigurationError):
        send(connection, draft(document_type="sales_receipt"))
    with pytest.raises(ConfigurationError):
        send(connect(zoho, idp, item_product_type="hardware"), draft())
    assert zoho.requests == []


def test_preview_lists_the_requests_and_sends_nothing(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    steps = ZohoBooksConnector().preview_document(draft(), connect(zoho, idp, create_products=True),
                                                  SendContext(TENANT, "run-1"))
    assert [s["step"] for s in steps] == [
        "find_customer_by_email", "find_customer_by_name", "currencies", "customer", "list_items_for_skus",
        "find_item_by_name:0", "existing", "item:0", "invoice",
    ]
    assert steps[-1]["body"]["reference_number"] == f"Deal 42 {idempotency_marker('run-1', 'invoice')}"
    assert zoho.requests == []
    assert idp.requests == []


# --- the field list's validator ---------------------------------------------------------------------
def call(zoho: FakeZohoBooks, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None,
         token: str = DEFAULT_TOKEN, content_type: str = "application/json", raw: bytes | None = None,
         scheme: str = "Zoho-oauthtoken") -> tuple[int, dict[str, Any]]:
    params = {"organization_id": zoho.organization_id, **(query or {})}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = UrlRequest(f"{zoho.url}/books/v3{path}?{urlencode(params)}", data=data, method=method,
                         headers={"Authorization": f"{scheme} {token}", "Content-Type": content_type})
    try:
        with urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except Exception as err:  # urllib's HTTPError carries the error answer
        return int(getattr(err, "code", 0)), json.loads(err.read())  # type: ignore[attr-defined]


@pytest.fixture
def plain_zoho() -> Iterator[FakeZohoBooks]:
    fake = FakeZohoBooks().start()
    yield fake
    fake.stop()


def test_a_valid_request_passes(plain_zoho: FakeZohoBooks) -> None:
    status, body = call(plain_zoho, "POST", "/contacts", body={"contact_name": "Globex", "contact_type": "customer"})
    assert status == 201
    assert body["code"] == 0
    assert body["contact"]["contact_name"] == "Globex"
    assert plain_zoho.violations == []


@pytest.mark.parametrize(("body", "code", "message"), [
    ({"contact_name": "Globex", "contact_nmae": "typo"}, 2, "Invalid value passed for contact_nmae"),
    ({"contact_name": 42}, 2, "Invalid value passed for contact_name"),
    ({"contact_type": "customer"}, 4, "contact_name is required"),
    ({"contact_name": "G" * 201}, 15, "Please ensure that the contact_name has less than 200 characters."),
    ({"contact_name": "Globex", "contact_type": "partner"}, 2, "Invalid value passed for contact_type"),
    ({"contact_name": "Globex", "contact_persons": [{"email": "a@b.test", "mail": "x"}]}, 2,
     "Invalid value passed for mail"),
    ({"contact_name": "Globex", "billing_address": {"zip_code": "1"}}, 2, "Invalid value passed for zip_code"),
])
def test_bad_bodies_are_refused_in_zohos_shape(plain_zoho: FakeZohoBooks, body: Any, code: int, message: str) -> None:
    status, answer = call(plain_zoho, "POST", "/contacts", body=body)
    assert status == 400
    assert answer == {"code": code, "message": message}
    assert plain_zoho.contacts == {}
    assert len(plain_zoho.violations) == 1


def test_invoice_fields_are_checked_too(plain_zoho: FakeZohoBooks) -> None:
    bad = {"customer_id": "1", "line_items": [{"item_id": "2", "rate": "ten"}], "date": "01/03/2024"}
    status, answer = call(plain_zoho, "POST", "/invoices", body=bad)
    assert status == 400
    assert answer["code"] == 2
    assert len(plain_zoho.violations) == 1
    assert "date" in plain_zoho.violations[0]
    assert "rate" in plain_zoho.violations[0]
    status, answer = call(plain_zoho, "POST", "/invoices", body={"customer_id": "1"})
    assert answer == {"code": 4, "message": "line_items is required"}


def test_queries_are_checked(plain_zoho: FakeZohoBooks) -> None:
    assert call(plain_zoho, "GET", "/contacts", query={"email": "a@b.test"})[0] == 200
    status, answer = call(plain_zoho, "GET", "/contacts", query={"emial": "a@b.test"})
    assert (status, answer["code"]) == (400, 2)
    status, answer = call(plain_zoho, "GET", "/items", query={"filter_by": "Status.Everything"})
    assert answer == {"code": 2, "message": "Invalid value passed for filter_by"}
    status, answer = call(plain_zoho, "GET", "/invoices", query={"organization_id": "42"})
    assert (status, answer["code"]) == (400, 6041)
    assert len(plain_zoho.violations) == 3


def test_authentication_and_body_encodings(plain_zoho: FakeZohoBooks) -> None:
    status, answer = call(plain_zoho, "GET", "/contacts", scheme="Bearer")
    assert (status, answer["code"]) == (401, 14)
    status, answer = call(plain_zoho, "GET", "/contacts", token="1000.not-issued")
    assert (status, answer["code"]) == (401, 57)
    status, answer = call(plain_zoho, "POST", "/contacts", raw=b"{not json")
    assert answer == {"code": 1038, "message": "JSON is not well formed"}
    assert len(plain_zoho.violations) == 3
    form = urlencode({"JSONString": json.dumps({"contact_name": "Form Co"})}).encode()
    status, answer = call(plain_zoho, "POST", "/contacts", raw=form, content_type="application/x-www-form-urlencoded")
    assert (status, answer["contact"]["contact_name"]) == (201, "Form Co")
    assert len(plain_zoho.violations) == 3


def test_business_rules(plain_zoho: FakeZohoBooks) -> None:
    plain_zoho.add_contact("Globex")
    status, answer = call(plain_zoho, "POST", "/contacts", body={"contact_name": "GLOBEX"})
    assert (status, answer["code"]) == (400, 3062)
    status, answer = call(plain_zoho, "POST", "/invoices", body={"customer_id": "1", "line_items": [{"rate": 1}]})
    assert answer == {"code": 1002, "message": "Customer does not exist."}
    status, answer = call(plain_zoho, "POST", "/items", body={"name": "Widget"})
    assert answer == {"code": 4, "message": "rate is required"}


def test_every_documented_operation_is_served() -> None:
    fields = ZohoFields.load()
    served = {op.operation_id for op in fields.operations}
    assert served == {"listContacts", "getContact", "createContact", "listItems", "createItem", "listInvoices",
                      "createInvoice", "listEstimates", "createEstimate", "listCurrencies", "listOrganizations"}
    for op in fields.operations:  # every call names the organization, but the one that lists them
        assert ("organization_id" in op.query) is (op.operation_id != "listOrganizations")
        if op.operation_id != "listOrganizations":
            assert op.query["organization_id"]["required"] is True


# --- data centres (issue 9, item 2) -------------------------------------------------------------------
# Zoho (Multi-DC support): the accounts server URL "is specific to the location (i.e., datacenter)"; Zoho's
# table pairs each API domain with its accounts domain.
DATA_CENTRE_PAIRS = [
    ("https://www.zohoapis.com", "https://accounts.zoho.com"),
    ("https://www.zohoapis.eu", "https://accounts.zoho.eu"),
    ("https://www.zohoapis.in", "https://accounts.zoho.in"),
    ("https://www.zohoapis.com.au", "https://accounts.zoho.com.au"),
    ("https://www.zohoapis.jp", "https://accounts.zoho.jp"),
    ("https://www.zohoapis.ca", "https://accounts.zohocloud.ca"),
    ("https://www.zohoapis.com.cn", "https://accounts.zoho.com.cn"),
    ("https://www.zohoapis.sa", "https://accounts.zoho.sa"),
]


class _StopAtFirstCall(Exception):
    pass


@pytest.mark.parametrize(("api_domain", "accounts_server"), DATA_CENTRE_PAIRS)
def test_the_token_refresh_goes_to_the_data_centre_of_the_api_domain(
    api_domain: str, accounts_server: str, aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def first_call(method: str, url: str, **_: Any) -> Any:
        calls.append(url)
        raise _StopAtFirstCall  # nothing leaves the machine: the URL is what is checked

    monkeypatch.setattr(billflow_http, "request", first_call)
    connection = Connection("zoho-dc", "zoho_books", {
        "organization_id": "10234695", "api_domain": api_domain, "client_id": "client-1",
        "client_secret": "client-secret-1", "refresh_token": "1000.refresh"})
    with pytest.raises(_StopAtFirstCall):
        ZohoBooksConnector(token_store=MemoryTokenStore()).create_document(
            draft(), connection, SendContext(TENANT, "run-dc"))

    assert calls == [f"{accounts_server}/oauth/v2/token"]


@pytest.mark.parametrize(("api_domain", "accounts_server"), DATA_CENTRE_PAIRS)
def test_the_grant_accounts_server_is_used_as_given(api_domain: str, accounts_server: str) -> None:
    # Zoho answers the authorization with "location=...&accounts-server=https://accounts.zoho.eu".
    connection = Connection("zoho-dc", "zoho_books", {"api_domain": "https://www.zohoapis.com",
                                                      "accounts-server": accounts_server + "/"})
    assert zoho_token_url(connection) == f"{accounts_server}/oauth/v2/token"


def test_an_accounts_server_that_is_not_zoho_is_refused() -> None:
    connection = Connection("zoho-dc", "zoho_books", {"accounts-server": "https://accounts.evil.example"})
    with pytest.raises(ConfigurationError, match="not a Zoho accounts server"):
        zoho_token_url(connection)


def test_an_unknown_zoho_data_centre_asks_for_token_url() -> None:
    connection = Connection("zoho-dc", "zoho_books", {"api_domain": "https://www.zohoapis.mars"})
    with pytest.raises(ConfigurationError, match="set token_url"):
        zoho_token_url(connection)



# --- currencies, limits, SKUs, long names (issue 9, items 3, 4, 7, 8) -----------------------------------
def test_a_foreign_currency_invoice_without_exchange_rate_is_refused_before_anything_is_made(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    # Zoho's invoice schema, exchange_rate: "Required when the invoice currency differs from the
    # organization's base currency."
    zoho.add_contact("Globex Ltd", email="ap@globex.test", currency="EUR")
    with pytest.raises(TargetRejected, match="Required when the invoice currency differs") as caught:
        send(connect(zoho, idp, create_products=True), draft(currency="eur"))
    assert caught.value.details == {"currency": "EUR", "base_currency": "USD"}
    assert [r for r in zoho.requests if r.method == "POST"] == []
    assert zoho.violations == []


def test_a_foreign_currency_invoice_carries_the_rule_exchange_rate(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    contact = zoho.add_contact("Globex Ltd", email="ap@globex.test", currency="GBP")
    zoho.add_item("Widget", sku="W-1")
    result = send(connect(zoho, idp), draft(currency="gbp", options={"exchange_rate": 1.27}))
    body = posts(zoho, "/invoices")[0].json()
    assert (body["customer_id"], body["exchange_rate"]) == (contact["contact_id"], 1.27)
    assert zoho.invoices[result.external_id]["currency_code"] == "GBP"
    assert zoho.violations == []


def test_a_base_currency_invoice_has_no_exchange_rate(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    send(connect(zoho, idp), draft(options={"exchange_rate": 2}))
    assert "exchange_rate" not in posts(zoho, "/invoices")[0].json()


def test_payment_terms_above_100_days_are_refused_before_any_call(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    # Zoho's invoice schema, payment_terms: "Maximum value is 100 days."
    with pytest.raises(ConfigurationError, match="at most 100"):
        send(connect(zoho, idp), draft(days_until_due=120))
    assert zoho.requests == []


def test_an_item_whose_sku_is_not_in_its_name_is_found_and_never_created_again(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    # Zoho's items list: search_text searches "by name or description"; a SKU "should be unique".
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    item = zoho.add_item("Consulting hours", sku="CONS-7")
    document = draft(lines=[{"description": "Advisory", "unit_amount_minor": 1000, "sku": "cons-7"}])
    send(connect(zoho, idp, create_products=True), document)
    assert posts(zoho, "/items") == []
    assert posts(zoho, "/invoices")[0].json()["line_items"][0]["item_id"] == item["item_id"]
    assert zoho.violations == []


def test_skus_are_matched_across_every_page_of_items(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    zoho.add_contact("Globex Ltd", email="ap@globex.test")
    for number in range(205):
        zoho.add_item(f"Part {number}", sku=f"P-{number}")
    document = draft(lines=[{"description": "Part", "unit_amount_minor": 100, "sku": "P-204"},
                            {"description": "Part", "unit_amount_minor": 100, "sku": "P-3"}])
    send(connect(zoho, idp, create_products=True), document)
    assert [r.query["page"] for r in zoho.calls("GET", "/items")] == [["1"], ["2"]]  # read once per send
    assert posts(zoho, "/items") == []
    assert zoho.violations == []


def test_a_customer_name_longer_than_the_search_limit_is_searched_by_its_start(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    # Zoho's contacts list: contact_name "Max-length [100]"; a contact's name holds up to 200.
    long_name = "Globex " + "Very Long Subsidiary Name " * 6
    zoho.add_contact(long_name[:130] + " A")
    contact = zoho.add_contact(long_name[:130])
    zoho.add_item("Widget", sku="W-1")
    send(connect(zoho, idp), draft(customer={"name": long_name[:130]}))
    [search] = zoho.calls("GET", "/contacts")
    assert search.query["contact_name_startswith"] == [long_name[:100]]
    assert posts(zoho, "/invoices")[0].json()["customer_id"] == contact["contact_id"]
    assert zoho.violations == []


# --- ambiguous customers (issue 9, item 9) ------------------------------------------------------------
def test_two_contacts_with_the_same_email_are_not_guessed_from(zoho: FakeZohoBooks, idp: OAuthFake) -> None:
    first = zoho.add_contact("Globex Ltd", email="ap@globex.test")
    second = zoho.add_contact("Globex Holding", email="ap@globex.test")
    zoho.add_item("Widget", sku="W-1")
    with pytest.raises(AmbiguousCustomer) as caught:
        send(connect(zoho, idp, create_products=True), draft())
    assert caught.value.details["candidates"] == [f"contact_id {first['contact_id']} 'Globex Ltd'",
                                                  f"contact_id {second['contact_id']} 'Globex Holding'"]
    assert [r for r in zoho.requests if r.method == "POST"] == []

    stored = draft(customer={"name": "Globex Ltd", "email": "ap@globex.test", "external_id": second["contact_id"]})
    result = send(connect(zoho, idp), stored, key="run-2")
    assert result.details["customer_id"] == second["contact_id"]
    assert zoho.violations == []


# --- the connection test (issue 9) ----------------------------------------------------------------------
def test_the_connection_test_reports_the_organization_currency_and_data_centre(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    idp.api_domain = "https://www.zohoapis.eu"  # the data centre the token answer names
    connection = connect(zoho, idp)
    connection.settings.pop("access_token")  # expired: the test refreshes first, as a send would
    report = ZohoBooksConnector().test_connection(connection, TENANT)

    assert (report.account_name, report.account_id, report.currency, report.data_centre) == (
        "Billflow Test Org", zoho.organization_id, "USD", "EU")
    assert report.checked == "GET /organizations"
    [listing] = zoho.calls("GET", "/organizations")
    assert "organization_id" not in listing.query  # the one call that names no organization
    assert idp.refreshes == 1
    assert zoho.violations == []


def test_the_connection_test_fails_for_an_organization_the_grant_does_not_reach(
    zoho: FakeZohoBooks, idp: OAuthFake
) -> None:
    with pytest.raises(TargetRejected, match="does not reach organization 999"):
        ZohoBooksConnector().test_connection(connect(zoho, idp, organization_id="999"), TENANT)
