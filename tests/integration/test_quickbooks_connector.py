"""QuickBooksConnector against the fake QuickBooks Online API and the fake Intuit token endpoint.

Credentials live in Secrets Manager and refreshes take the DynamoDB lease (both on moto), as in dispatch.
Every entity the connector sends is validated against Intuit's XSD by the fake: violations stay empty.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import billflow.aws
import pytest
from billflow.connectors.base import SendContext
from billflow.connectors.quickbooks import QuickBooksConnector, request_id
from billflow.errors import (
    AmbiguousCustomer,
    AuthorizationRevoked,
    ConfigurationError,
    CustomerNotFound,
    ProductNotFound,
    TargetRejected,
    TransientError,
)
from billflow.models.documents import Address, CustomerInfo, InvoiceDraft, LineItem
from billflow.storage.secrets import Connection, get_secret_store

from tests.fakes.oauth_server import OAuthFake
from tests.fakes.quickbooks_server import QuickBooksFake

REALM = "9130350000001"
UK_REALM = "9130350000044"
MC_REALM = "9130350000077"  # a US company with multicurrency on
TENANT = "acme"
TODAY = date(2026, 3, 2)


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def idp(idp: OAuthFake) -> Iterator[OAuthFake]:
    """The shared fake Intuit IdP (tests/conftest.py); no refresh may use a refresh token already rotated."""
    yield idp
    assert idp.stale_refreshes == []


@pytest.fixture
def qbo(idp: OAuthFake) -> Iterator[QuickBooksFake]:
    with QuickBooksFake(idp) as server:
        server.add_realm(REALM)
        server.add_realm(UK_REALM, country="GB")
        server.add_realm(MC_REALM, multicurrency=True, exchange_rates={"EUR": "1.0825", "GBP": "1.27"})
        yield server


class Env:
    """A tenant's QuickBooks connection stored the way dispatch loads it."""

    def __init__(self, idp: OAuthFake, qbo: QuickBooksFake) -> None:
        self.idp, self.qbo = idp, qbo
        self.names = 0

    def connection(self, realm: str = REALM, **settings: Any) -> Connection:
        self.names += 1
        name = f"qbo{self.names}"
        doc = {"type": "quickbooks", "realm_id": realm, "base_url": self.qbo.url, "token_url": self.idp.token_url,
               "client_id": "client-1", "client_secret": "client-secret-1", "refresh_token": self.idp.grant(),
               "income_account_id": "1", **settings}
        store = get_secret_store()
        billflow.aws.client("secretsmanager").create_secret(
            Name=store.connection_secret_id(TENANT, name), SecretString=json.dumps(doc))
        return store.connection(TENANT, name)

    def secret(self, connection: Connection) -> dict[str, Any]:
        raw = billflow.aws.client("secretsmanager").get_secret_value(SecretId=connection.secret_id)
        doc = json.loads(raw["SecretString"])
        assert isinstance(doc, dict)
        return doc


@pytest.fixture
def env(aws: None, idp: OAuthFake, qbo: QuickBooksFake) -> Iterator[Env]:
    yield Env(idp, qbo)
    assert qbo.violations == []  # every request was one QuickBooks would accept


def customer(**overrides: Any) -> CustomerInfo:
    fields: dict[str, Any] = {"name": "Acme Ltd", "email": "billing@acme.example", "first_name": "Ada",
                              "last_name": "Lovelace", "address": Address(line1="1 Main St", city="Springfield",
                                                                          postal_code="12345", country="US")}
    return CustomerInfo(**{**fields, **overrides})


def draft(document_type: str = "invoice", *, lines: list[LineItem] | None = None, currency: str = "usd",
          **overrides: Any) -> InvoiceDraft:
    fields: dict[str, Any] = {
        "document_type": document_type, "customer": customer(), "currency": currency,
        "lines": lines or [LineItem(description="Consulting", quantity=2, unit_amount_minor=1999, sku="CONS-1"),
                           LineItem(description="Widget", quantity=1.5, unit_amount_minor=1000,
                                    product_name="Widget")],
        "days_until_due": 14, "memo": "Thank you", "reference": "Deal 42",
        "options": {"txn_date": TODAY.isoformat()},
    }
    return InvoiceDraft(**{**fields, **overrides})


def send(connection: Connection, doc: InvoiceDraft, key: str = "run-1:action-0") -> Any:
    return QuickBooksConnector().create_document(doc, connection, SendContext(TENANT, key))


def seed_catalog(qbo: QuickBooksFake, realm: str = REALM) -> dict[str, dict[str, Any]]:
    return {
        "consulting": qbo.seed(realm, "Item", {"Name": "Consulting hours", "Sku": "CONS-1", "Type": "Service",
                                               "IncomeAccountRef": {"value": "1"}}),
        "widget": qbo.seed(realm, "Item", {"Name": "Widget", "Type": "NonInventory",
                                           "IncomeAccountRef": {"value": "1"}}),
    }


def seed_customer(qbo: QuickBooksFake, realm: str = REALM, **fields: Any) -> dict[str, Any]:
    body = {"DisplayName": "Acme Ltd", "GivenName": "Ada", "FamilyName": "Lovelace",
            "PrimaryEmailAddr": {"Address": "billing@acme.example"}, **fields}
    return qbo.seed(realm, "Customer", body)


def posts(qbo: QuickBooksFake) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in qbo.requests if r.method == "POST"]


# --- one happy path per document type --------------------------------------------------------------
def test_invoice(env: Env) -> None:
    items = seed_catalog(env.qbo)
    known = seed_customer(env.qbo)
    connection = env.connection()

    result = send(connection, draft(options={"txn_date": TODAY.isoformat(), "sales_term_id": "3"}))

    invoice = env.qbo.all(REALM, "Invoice")[0]
    assert result.external_id == invoice["Id"]
    assert result.external_url == f"https://app.qbo.intuit.com/app/invoice?txnId={invoice['Id']}"
    assert result.details == {"entity": "Invoice", "realm_id": REALM, "customer_id": known["Id"],
                              "customer_created": False, "items_created": [], "doc_number": "1001",
                              "total": 54.98}
    assert invoice["CustomerRef"]["value"] == known["Id"]
    assert invoice["TxnDate"] == "2026-03-02"
    assert invoice["DueDate"] == (TODAY + timedelta(days=14)).isoformat()
    assert invoice["SalesTermRef"] == {"value": "3"}
    assert invoice["CustomerMemo"] == {"value": "Thank you"}
    assert invoice["PrivateNote"] == "Deal 42"
    assert invoice["BillEmail"] == {"Address": "billing@acme.example"}
    first, second = invoice["Line"][:2]
    assert first["SalesItemLineDetail"]["ItemRef"]["value"] == items["consulting"]["Id"]
    assert (first["Amount"], first["SalesItemLineDetail"]["Qty"], first["SalesItemLineDetail"]["UnitPrice"]) \
        == (39.98, 2, 19.99)
    assert first["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "NON"}
    assert second["SalesItemLineDetail"]["ItemRef"]["value"] == items["widget"]["Id"]
    assert (second["Amount"], second["SalesItemLineDetail"]["Qty"]) == (15, 1.5)
    assert posts(env.qbo) == ["invoice"]  # nothing else was created


def test_estimate(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    result = send(env.connection(), draft("estimate", options={"txn_date": TODAY.isoformat(),
                                                               "expiration_days": 30}))

    estimate = env.qbo.all(REALM, "Estimate")[0]
    assert result.external_id == estimate["Id"]
    assert result.external_url.endswith(f"/app/estimate?txnId={estimate['Id']}")
    assert estimate["ExpirationDate"] == (TODAY + timedelta(days=30)).isoformat()
    assert "DueDate" not in estimate
    assert posts(env.qbo) == ["estimate"]


def test_sales_receipt(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    connection = env.connection(deposit_account_id="35")
    result = send(connection, draft("sales_receipt", options={"payment_method_id": "1"}))

    receipt = env.qbo.all(REALM, "SalesReceipt")[0]
    assert result.details["entity"] == "SalesReceipt"
    assert receipt["DepositToAccountRef"] == {"value": "35"}
    assert receipt["PaymentMethodRef"] == {"value": "1"}
    assert receipt["TotalAmt"] == 54.98


def test_paid_invoice_is_an_invoice_and_a_payment_for_its_total(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    result = send(env.connection(deposit_account_id="35"), draft("paid_invoice"))

    invoice = env.qbo.all(REALM, "Invoice")[0]
    payment = env.qbo.all(REALM, "Payment")[0]
    assert result.external_id == invoice["Id"]
    assert result.details["payment_id"] == payment["Id"]
    assert payment["TotalAmt"] == 54.98
    assert payment["Line"][0]["LinkedTxn"] == [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]
    assert payment["DepositToAccountRef"] == {"value": "35"}
    assert invoice["Balance"] == 0  # paid
    assert posts(env.qbo) == ["invoice", "payment"]


def test_refund_receipt(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    result = send(env.connection(refund_account_id="35"), draft("refund_receipt"))

    refund = env.qbo.all(REALM, "RefundReceipt")[0]
    assert result.external_url.endswith(f"/app/refundreceipt?txnId={refund['Id']}")
    assert refund["DepositToAccountRef"] == {"value": "35"}
    assert refund["TotalAmt"] == 54.98


def test_expense_is_a_purchase_without_customer_or_product_lookups(env: Env) -> None:
    connection = env.connection(expense_account_id="13", payment_account_id="41", payment_type="CreditCard")
    fee = [LineItem(description="Payment processing fee", unit_amount_minor=290)]
    result = send(connection, draft("expense", lines=fee, options={"vendor_id": "56"}))

    purchase = env.qbo.all(REALM, "Purchase")[0]
    assert result.external_id == purchase["Id"]
    assert result.external_url.endswith(f"/app/expense?txnId={purchase['Id']}")
    assert purchase["AccountRef"] == {"value": "41"}
    assert purchase["PaymentType"] == "CreditCard"
    assert purchase["EntityRef"] == {"value": "56", "type": "Vendor"}
    assert purchase["Line"][0]["AccountBasedExpenseLineDetail"]["AccountRef"] == {"value": "13"}
    assert purchase["TotalAmt"] == 2.9
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in env.qbo.requests] == [
        ("GET", "preferences"), ("POST", "purchase")]  # the currency settings, no customer or item lookup


# --- customers -------------------------------------------------------------------------------------
def test_customer_found_by_the_id_stored_on_the_crm(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)  # an email match too: the id must win
    stored = seed_customer(env.qbo, DisplayName="Acme (billing entity)", PrimaryEmailAddr={"Address": "x@y.z"})
    result = send(env.connection(), draft(customer=customer(external_id=stored["Id"])))

    assert result.details["customer_id"] == stored["Id"]
    assert env.qbo.requests[1].path.endswith(f"/customer/{stored['Id']}")


def test_an_unknown_or_inactive_stored_id_falls_back_to_email(env: Env) -> None:
    seed_catalog(env.qbo)
    by_email = seed_customer(env.qbo)
    inactive = seed_customer(env.qbo, DisplayName="Old Acme", PrimaryEmailAddr={"Address": "old@acme.example"},
                             Active=False)
    for stale_id in ("99999", inactive["Id"], "cus_NffrFeUfNV2Hib"):  # the last: another system's id
        result = send(env.connection(), draft(customer=customer(external_id=stale_id)), key=f"run-{stale_id}")
        assert result.details["customer_id"] == by_email["Id"]


def test_customer_found_by_email(env: Env) -> None:
    seed_catalog(env.qbo)
    known = seed_customer(env.qbo, DisplayName="Acme Limited", GivenName="Someone", FamilyName="Else")
    result = send(env.connection(), draft())

    assert result.details["customer_id"] == known["Id"]
    queries = [r.query["query"][0] for r in env.qbo.requests if "query" in r.query]
    assert queries[0] == "select * from Customer where PrimaryEmailAddr = 'billing@acme.example' maxresults 10"


def test_customer_found_by_first_and_last_name_with_quotes_escaped(env: Env) -> None:
    seed_catalog(env.qbo)
    known = seed_customer(env.qbo, DisplayName="Pat's Bakery", GivenName="Pat", FamilyName="O'Brien",
                          PrimaryEmailAddr={"Address": "other@bakery.example"})
    result = send(env.connection(), draft(customer=customer(name="Pat's Bakery Ltd", first_name="Pat",
                                                            last_name="O'Brien")))

    assert result.details["customer_id"] == known["Id"]
    assert any(r.query.get("query") == ["select * from Customer where GivenName = 'Pat' and FamilyName = "
                                        "'O\\'Brien' maxresults 10"] for r in env.qbo.requests)


def test_customer_found_by_display_name(env: Env) -> None:
    seed_catalog(env.qbo)
    known = seed_customer(env.qbo, DisplayName="Acme Ltd", GivenName="Grace", FamilyName="Hopper",
                          PrimaryEmailAddr={"Address": "ap@acme.example"})
    result = send(env.connection(), draft())
    assert result.details["customer_id"] == known["Id"]


def test_missing_customer_is_created(env: Env) -> None:
    seed_catalog(env.qbo)
    result = send(env.connection(), draft())

    created = env.qbo.created(REALM, "Customer")
    assert len(created) == 1
    assert result.details["customer_id"] == created[0]["Id"]
    assert result.details["customer_created"] is True
    assert created[0]["DisplayName"] == "Acme Ltd"
    assert created[0]["GivenName"] == "Ada"
    assert created[0]["PrimaryEmailAddr"] == {"Address": "billing@acme.example"}
    assert created[0]["BillAddr"]["City"] == "Springfield"
    assert posts(env.qbo) == ["customer", "invoice"]


def test_strict_matching_creates_nothing_when_no_customer_matches(env: Env) -> None:
    seed_catalog(env.qbo)
    connection = env.connection(customer_matching="strict")
    with pytest.raises(CustomerNotFound, match="strict") as caught:
        send(connection, draft(customer=customer(external_id="424242")))

    assert "billing@acme.example" not in caught.value.message  # emails stay out of logs
    assert "id '424242'" in caught.value.message
    assert posts(env.qbo) == []
    assert env.qbo.created(REALM) == []


# --- products --------------------------------------------------------------------------------------
def test_products_found_by_sku_then_by_name(env: Env) -> None:
    items = seed_catalog(env.qbo)
    seed_customer(env.qbo)
    send(env.connection(), draft())

    queries = [r.query["query"][0] for r in env.qbo.requests if "query" in r.query and "Item" in r.query["query"][0]]
    assert queries == ["select * from Item where Sku = 'CONS-1' maxresults 10",
                       "select * from Item where Name = 'Widget' maxresults 10"]
    lines = env.qbo.all(REALM, "Invoice")[0]["Line"]
    assert [line["SalesItemLineDetail"]["ItemRef"]["value"] for line in lines[:2]] \
        == [items["consulting"]["Id"], items["widget"]["Id"]]


def test_a_line_with_an_unknown_sku_is_matched_by_name(env: Env) -> None:
    items = seed_catalog(env.qbo)
    seed_customer(env.qbo)
    line = LineItem(description="Widget", unit_amount_minor=1000, sku="NEW-SKU", product_name="Widget")
    send(env.connection(), draft(lines=[line]))
    assert env.qbo.all(REALM, "Invoice")[0]["Line"][0]["SalesItemLineDetail"]["ItemRef"]["value"] \
        == items["widget"]["Id"]


def test_missing_products_are_created_once_when_allowed(env: Env) -> None:
    seed_customer(env.qbo)
    lines = [LineItem(description="Onboarding", unit_amount_minor=50000, sku="ONB-1", product_name="Onboarding"),
             LineItem(description="Onboarding (2nd site)", unit_amount_minor=50000, sku="ONB-1",
                      product_name="Onboarding"),
             LineItem(description="Support plan", unit_amount_minor=9900, taxable=True)]
    result = send(env.connection(create_products=True), draft(lines=lines))

    created = env.qbo.created(REALM, "Item")
    assert [(i["Name"], i.get("Sku"), i["Type"], i["IncomeAccountRef"]["value"]) for i in created] == [
        ("Onboarding", "ONB-1", "Service", "1"), ("Support plan", None, "Service", "1")]
    assert created[1]["Taxable"] is True
    assert result.details["items_created"] == [created[0]["Id"], created[1]["Id"]]
    refs = [line["SalesItemLineDetail"]["ItemRef"]["value"] for line in env.qbo.all(REALM, "Invoice")[0]["Line"][:3]]
    assert refs == [created[0]["Id"], created[0]["Id"], created[1]["Id"]]


def test_missing_products_list_every_line_and_nothing_is_created(env: Env) -> None:
    seed_catalog(env.qbo)  # the customer is missing too: it must not be created either
    lines = [LineItem(description="Mystery", unit_amount_minor=100, sku="NOPE-1"),
             LineItem(description="Consulting", unit_amount_minor=100, sku="CONS-1"),
             LineItem(description="Gizmo", unit_amount_minor=100, product_name="Gizmo")]
    with pytest.raises(ProductNotFound) as caught:
        send(env.connection(create_products=False), draft(lines=lines))

    assert "line 1 ('Mystery', SKU 'NOPE-1')" in caught.value.message
    assert "line 3 ('Gizmo')" in caught.value.message
    assert "line 2" not in caught.value.message
    assert [entry["line"] for entry in caught.value.details["unmatched_lines"]] == [1, 3]
    assert posts(env.qbo) == []


def test_creating_products_without_an_income_account_fails_before_anything_is_created(env: Env) -> None:
    connection = env.connection(create_products=True, income_account_id="")
    with pytest.raises(ConfigurationError, match="income_account_id"):
        send(connection, draft())
    assert posts(env.qbo) == []


def test_lines_naming_no_product_use_the_default_item(env: Env) -> None:
    seed_customer(env.qbo)
    deal_line = LineItem(description="Website redesign (deal 42)", unit_amount_minor=1250000)
    send(env.connection(default_item_id="1"), draft(lines=[deal_line]))

    line = env.qbo.all(REALM, "Invoice")[0]["Line"][0]
    assert line["SalesItemLineDetail"]["ItemRef"]["value"] == "1"
    assert line["Amount"] == 12500
    assert not any("Item" in r.query.get("query", [""])[0] for r in env.qbo.requests)


# --- taxes -----------------------------------------------------------------------------------------
def test_paid_invoice_with_a_taxable_line_is_refused_before_any_call(env: Env) -> None:
    lines = [LineItem(description="Consulting", unit_amount_minor=100, sku="CONS-1"),
             LineItem(description="Widget", unit_amount_minor=100, product_name="Widget", taxable=True)]
    with pytest.raises(TargetRejected, match=r"non-taxable.*line\(s\) 2"):
        send(env.connection(), draft("paid_invoice", lines=lines))
    assert env.qbo.requests == []


def test_uk_company_gets_a_vat_code_on_every_line(env: Env) -> None:
    seed_catalog(env.qbo, UK_REALM)
    seed_customer(env.qbo, UK_REALM)
    connection = env.connection(UK_REALM, region="GB", default_tax_code="2", non_taxable_tax_code="10")
    lines = [LineItem(description="Consulting", unit_amount_minor=10000, sku="CONS-1", taxable=True),
             LineItem(description="Widget", unit_amount_minor=5000, product_name="Widget")]
    result = send(connection, draft(lines=lines, currency="gbp"))

    invoice = env.qbo.all(UK_REALM, "Invoice")[0]
    assert [line["SalesItemLineDetail"]["TaxCodeRef"]["value"] for line in invoice["Line"][:2]] == ["2", "10"]
    assert invoice["GlobalTaxCalculation"] == "TaxExcluded"
    assert invoice["TxnTaxDetail"]["TotalTax"] == 20
    assert result.details["total"] == 170


def test_uk_company_without_a_tax_code_is_refused_with_the_reason(env: Env) -> None:
    with pytest.raises(TargetRejected, match="default_tax_code"):
        send(env.connection(UK_REALM, region="GB"), draft(currency="gbp"))
    assert env.qbo.requests == []


def test_uk_company_refuses_lines_marked_not_taxable_without_a_non_taxable_code(env: Env) -> None:
    # The fake's rule, like QuickBooks' VAT editions: "Make sure all your transactions have a VAT rate"; with
    # only default_tax_code set the exempt line would be charged 20% VAT.
    lines = [LineItem(description="Consulting", unit_amount_minor=10000, sku="CONS-1", taxable=True),
             LineItem(description="Postage", unit_amount_minor=500, product_name="Postage", taxable=False)]
    with pytest.raises(TargetRejected, match=r"line\(s\) 2, which are marked not taxable.*non_taxable_tax_code"):
        send(env.connection(UK_REALM, region="GB", default_tax_code="2", create_products=True),
             draft(lines=lines, currency="gbp"))
    assert env.qbo.created(UK_REALM) == []
    assert [r.path.rsplit("/", 1)[-1] for r in env.qbo.requests] == []  # refused before any call


# --- tokens ----------------------------------------------------------------------------------------
def test_token_expired_mid_run_is_refreshed_and_the_run_succeeds(env: Env) -> None:
    seed_catalog(env.qbo)
    connection = env.connection()
    env.qbo.expire_tokens_on("POST", r"/invoice$")  # after the lookups and the customer

    result = send(connection, draft())

    assert env.idp.refreshes == 2  # the first access token, then one refresh after the 401
    assert len(env.qbo.all(REALM, "Invoice")) == 1
    assert result.external_id == env.qbo.all(REALM, "Invoice")[0]["Id"]
    assert env.secret(connection)["refresh_token"] == env.idp.current_refresh_token(connection_index(env))


def connection_index(env: Env) -> int:
    return len(env.idp.grants) - 1


def test_concurrent_runs_refresh_once_and_store_the_newest_refresh_token(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    env.idp.delay_seconds = 0.05
    connection = env.connection()
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def run(index: int) -> None:
        try:
            start.wait()
            results.append(str(send(connection, draft(), key=f"run-{index}").external_id))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert errors == []
    assert len(set(results)) == 6  # six runs, six invoices
    assert env.idp.refreshes == 1
    assert env.secret(connection)["refresh_token"] == env.idp.current_refresh_token(connection_index(env))

    # an hour later every access token has expired: the next run refreshes from the stored token
    env.idp.expire_access_tokens()
    later = get_secret_store().connection(TENANT, connection.name)
    send(later, draft(), key="run-later")
    assert env.idp.refreshes == 2
    assert env.idp.stale_refreshes == []


def test_revoked_grant_raises_authorization_revoked(env: Env) -> None:
    connection = env.connection()
    env.idp.revoke(connection_index(env))
    with pytest.raises(AuthorizationRevoked, match="reconnect"):
        send(connection, draft())
    assert env.qbo.created(REALM) == []


# --- errors ----------------------------------------------------------------------------------------
def test_throttling_is_transient_and_carries_retry_after(env: Env) -> None:
    connection = env.connection()
    env.qbo.throttle_next(retry_after="7")
    with pytest.raises(TransientError, match="ThrottleExceeded") as caught:
        send(connection, draft())
    assert caught.value.retry_after_seconds == 7


def test_a_server_error_is_transient(env: Env) -> None:
    connection = env.connection()
    env.qbo.fail_next(503)
    with pytest.raises(TransientError, match="503"):
        send(connection, draft())


def test_a_validation_fault_is_rejected_with_intuits_message(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    env.qbo.reject_next("Duplicate Document Number Error",
                        "Duplicate Document Number Error : You must specify a different number.", "6140",
                        method="POST", path=r"/invoice$")
    with pytest.raises(TargetRejected, match=r"Duplicate Document Number Error.*code 6140") as caught:
        send(env.connection(), draft(options={"doc_number": "1001"}))
    assert not isinstance(caught.value, TransientError)
    assert env.qbo.all(REALM, "Invoice") == []


def test_the_same_run_twice_creates_one_of_everything(env: Env) -> None:
    connection = env.connection(create_products=True)
    first = send(connection, draft("paid_invoice"), key="run-7:action-0")
    second = send(connection, draft("paid_invoice"), key="run-7:action-0")

    assert first.external_id == second.external_id
    assert first.details["payment_id"] == second.details["payment_id"]
    assert len(env.qbo.all(REALM, "Invoice")) == 1
    assert len(env.qbo.all(REALM, "Payment")) == 1
    assert len(env.qbo.created(REALM, "Customer")) == 1
    assert len(env.qbo.created(REALM, "Item")) == 2
    assert env.qbo.replays == 2  # invoice and payment answered again from their requestid


def test_a_retry_after_a_failed_payment_reuses_the_invoice(env: Env) -> None:
    seed_catalog(env.qbo)
    seed_customer(env.qbo)
    connection = env.connection()
    env.qbo.fail_next(503, method="POST", path=r"/payment$")
    with pytest.raises(TransientError):
        send(connection, draft("paid_invoice"), key="run-9")
    result = send(connection, draft("paid_invoice"), key="run-9")  # what the state machine's retry does

    invoices = env.qbo.all(REALM, "Invoice")
    assert len(invoices) == 1
    assert len(env.qbo.all(REALM, "Payment")) == 1
    assert invoices[0]["Balance"] == 0
    assert result.external_id == invoices[0]["Id"]
    assert env.qbo.replays == 1  # the invoice's answer, replayed from its requestid


def test_request_ids_fit_intuits_limit_and_differ_per_step() -> None:
    long_key = "tenant-with-a-long-name:" + "x" * 300
    ids = {request_id(long_key, step) for step in ("customer", "item::Widget", "document", "payment")}
    assert len(ids) == 4
    assert all(len(i) <= 50 for i in ids)
    assert request_id(long_key, "document") == request_id(long_key, "document")


# --- previews --------------------------------------------------------------------------------------
def test_preview_lists_the_requests_and_sends_nothing(env: Env) -> None:
    connection = env.connection(create_products=True, deposit_account_id="35")
    steps = QuickBooksConnector().preview_document(draft("paid_invoice"), connection,
                                                   SendContext(TENANT, "run-1:action-0"))

    assert env.qbo.requests == []
    assert env.idp.refreshes == 0
    assert [s["step"] for s in steps] == [
        "read_preferences", "read_exchange_rate",
        "find_customer_by_email", "find_customer_by_person_name", "find_customer_by_name",
        "find_item:1_by_sku", "find_item:1_by_name", "find_item:2_by_name",
        "customer", "item:CONS-1:Consulting", "item::Widget", "document", "payment"]
    document = next(s for s in steps if s["step"] == "document")
    assert document["entity"] == "Invoice"
    assert document["requestid"] == request_id("run-1:action-0", "document")
    assert document["json"]["CustomerRef"] == {"value": "{customer.Id}"}
    assert document["json"]["Line"][1]["SalesItemLineDetail"]["ItemRef"] == {"value": "{item:2.Id}"}
    assert steps[-1]["json"]["Line"][0]["LinkedTxn"][0]["TxnId"] == "{document.Id}"


def test_preview_refuses_what_create_would_refuse(env: Env) -> None:
    taxable = [LineItem(description="Widget", unit_amount_minor=100, taxable=True)]
    with pytest.raises(TargetRejected):
        QuickBooksConnector().preview_document(draft("paid_invoice", lines=taxable), env.connection(),
                                               SendContext(TENANT, "k"))


# --- currencies (issue 9, item 1) --------------------------------------------------------------------
# Finance.xsd, Customer.CurrencyRef: "Reference to the currency code for all the business transactions
# created for or received from the customer." CurrencyPrefs.MultiCurrencyEnabled: "Multicurrency enabled
# for this company"; ExchangeRate: "exchange rates are always recorded as the number of home currency units
# it takes to equal one foreign currency unit".
def test_a_foreign_currency_without_multicurrency_is_refused_before_anything_is_created(env: Env) -> None:
    with pytest.raises(TargetRejected, match=r"home currency USD.*multicurrency is off.*EUR"):
        send(env.connection(create_products=True), draft(currency="eur"))

    assert env.qbo.created(REALM) == []
    assert [r.path.rsplit("/", 1)[-1] for r in env.qbo.requests] == ["preferences"]  # no lookup either


def test_multicurrency_creates_the_customer_in_the_document_currency_at_quickbooks_rate(env: Env) -> None:
    seed_catalog(env.qbo, MC_REALM)
    result = send(env.connection(MC_REALM), draft(currency="eur"))

    customer = env.qbo.created(MC_REALM, "Customer")[0]
    invoice = env.qbo.all(MC_REALM, "Invoice")[0]
    assert customer["CurrencyRef"] == {"value": "EUR"}
    assert invoice["CurrencyRef"] == {"value": "EUR"}
    assert invoice["ExchangeRate"] == 1.0825  # the company's own rate for the transaction date
    assert invoice["HomeTotalAmt"] == 59.52
    assert result.details["customer_created"] is True
    rate_read = env.qbo.calls("GET", r".*/exchangerate$")[0]
    assert rate_read.query["sourcecurrencycode"] == ["EUR"]
    assert rate_read.query["asofdate"] == [TODAY.isoformat()]


def test_the_rule_exchange_rate_wins_over_quickbooks_rate(env: Env) -> None:
    seed_catalog(env.qbo, MC_REALM)
    seed_customer(env.qbo, MC_REALM, CurrencyRef={"value": "GBP"})
    options = {"txn_date": TODAY.isoformat(), "exchange_rate": "1.3"}
    send(env.connection(MC_REALM, deposit_account_id="35"), draft("paid_invoice", currency="gbp",
                                                                  options=options))

    invoice = env.qbo.all(MC_REALM, "Invoice")[0]
    payment = env.qbo.all(MC_REALM, "Payment")[0]
    assert invoice["ExchangeRate"] == payment["ExchangeRate"] == 1.3
    assert env.qbo.calls("GET", r".*/exchangerate$") == []


def test_home_currency_documents_carry_no_exchange_rate(env: Env) -> None:
    seed_catalog(env.qbo, MC_REALM)
    send(env.connection(MC_REALM), draft(currency="usd"))

    assert "ExchangeRate" not in env.qbo.all(MC_REALM, "Invoice")[0]
    assert env.qbo.created(MC_REALM, "Customer")[0]["CurrencyRef"] == {"value": "USD"}


def test_a_matched_customer_in_another_currency_is_refused_before_anything_is_created(env: Env) -> None:
    known = seed_customer(env.qbo, MC_REALM, CurrencyRef={"value": "GBP"})
    with pytest.raises(TargetRejected, match=r"bills in GBP.*is in EUR") as refused:
        send(env.connection(MC_REALM, create_products=True), draft(currency="eur"))

    assert refused.value.details["customer_id"] == known["Id"]
    assert env.qbo.created(MC_REALM) == []


def test_no_exchange_rate_anywhere_is_refused_before_anything_is_created(env: Env) -> None:
    with pytest.raises(TargetRejected, match="no exchange rate from JPY to USD"):
        send(env.connection(MC_REALM, create_products=True), draft(currency="jpy"))

    assert env.qbo.created(MC_REALM) == []


# --- ambiguous customers (issue 9, item 9) ------------------------------------------------------------
def test_two_active_customers_with_the_same_email_are_not_guessed_from(env: Env) -> None:
    seed_catalog(env.qbo)
    first = seed_customer(env.qbo)
    second = seed_customer(env.qbo, DisplayName="Acme Holding")
    with pytest.raises(AmbiguousCustomer) as caught:
        send(env.connection(create_products=True), draft())
    assert caught.value.details["candidates"] == [f"Id {first['Id']} 'Acme Ltd'", f"Id {second['Id']} 'Acme Holding'"]
    assert "billing@acme.example" not in caught.value.message
    assert env.qbo.created(REALM) == []

    stored = draft(customer=customer(external_id=second["Id"]))
    assert send(env.connection(), stored, key="run-2").details["customer_id"] == second["Id"]
