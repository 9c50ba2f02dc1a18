"""The QuickBooks contract: Intuit's XSD (through the JSON -> XML mapping), the practical rules, the query
language, and the connector's request bodies checked against them."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from billflow.connectors.base import SendContext
from billflow.connectors.quickbooks import QuickBooksConnector, query_literal
from billflow.models.documents import Address, CustomerInfo, InvoiceDraft, LineItem
from billflow.storage.secrets import Connection
from hypothesis import given
from hypothesis import strategies as st

from tests.fakes import quickbooks_contract as contract
from tests.fakes.oauth_server import OAuthFake
from tests.fakes.quickbooks_server import QueryError, QuickBooksFake, parse_query

NS = {"q": contract.NS}


def _invoice(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 39.98, "Description": "Consulting",
                  "SalesItemLineDetail": {"TaxCodeRef": {"value": "NON"}, "UnitPrice": 19.99, "Qty": 2,
                                          "ItemRef": {"value": "3", "name": "Consulting"}}}],
        "CustomerRef": {"value": "1"},
        "DueDate": "2026-03-16",
        "TxnDate": "2026-03-02",
    }
    body.update(overrides)
    return body


# --- the mapping -----------------------------------------------------------------------------------
def test_json_keys_become_elements_in_the_schemas_order() -> None:
    element = contract.to_xml("Invoice", _invoice(sparse=False))
    children = [child.tag.split("}")[1] for child in element]
    assert children == ["TxnDate", "Line", "CustomerRef", "DueDate"]  # XSD sequence, not JSON order
    detail = element.find("q:Line/q:SalesItemLineDetail", NS)
    assert detail is not None
    assert [c.tag.split("}")[1] for c in detail] == ["ItemRef", "UnitPrice", "Qty", "TaxCodeRef"]
    item_ref = detail.find("q:ItemRef", NS)
    assert item_ref is not None
    assert (item_ref.text, item_ref.get("name")) == ("3", "Consulting")
    assert element.get("sparse") == "false"
    assert contract.validate_entity("Invoice", _invoice(sparse=False)) == []


def test_numbers_are_written_as_xsd_decimals() -> None:
    line = _invoice()["Line"][0]
    line["Amount"] = 0.00001
    line["SalesItemLineDetail"].update(UnitPrice=0.00001, Qty=1)
    element = contract.to_xml("Invoice", _invoice(Line=[line]))
    amount = element.find("q:Line/q:Amount", NS)
    assert amount is not None
    assert amount.text == "0.00001"
    assert contract.schema_errors("Invoice", _invoice(Line=[line])) == []


# --- what the XSD rejects --------------------------------------------------------------------------
@pytest.mark.parametrize(("entity", "body", "expected"), [
    ("Invoice", _invoice(Shipping="fast"), "Unexpected child"),
    ("Invoice", _invoice(TxnDate="03/02/2026"), "TxnDate"),
    ("Invoice", _invoice(CustomerRef={"value": "1", "label": "x"}), "label"),
    ("Invoice", _invoice(CustomerRef="1"), "CustomerRef"),
    ("Invoice", _invoice(Line=[{**_invoice()["Line"][0], "Amount": "lots"}]), "Amount"),
    ("Invoice", _invoice(GlobalTaxCalculation="Sometimes"), "GlobalTaxCalculation"),
    ("Customer", {"DisplayName": "Acme", "PrimaryEmailAddr": "ap@acme.example"}, "PrimaryEmailAddr"),
    ("Customer", {"DisplayName": "Acme", "Active": "yes"}, "Active"),
    ("Item", {"Name": "Widget", "Type": "Gadget", "IncomeAccountRef": {"value": "1"}}, "Type"),
    ("Purchase", {"AccountRef": {"value": "35"}, "PaymentType": "Bitcoin",
                  "Line": [{"DetailType": "AccountBasedExpenseLineDetail", "Amount": 1,
                            "AccountBasedExpenseLineDetail": {"AccountRef": {"value": "13"}}}]}, "PaymentType"),
])
def test_the_schema_rejects(entity: str, body: dict[str, Any], expected: str) -> None:
    errors = contract.schema_errors(entity, body)
    assert errors, f"{entity} {body} passed the XSD"
    assert any(expected in error for error in errors), errors


# --- what QuickBooks requires beyond the XSD --------------------------------------------------------
@pytest.mark.parametrize(("entity", "body", "expected"), [
    ("Invoice", {k: v for k, v in _invoice().items() if k != "CustomerRef"}, "CustomerRef"),
    ("Invoice", _invoice(Line=[]), "at least one Line"),
    ("Invoice", _invoice(Line=_invoice()["Line"][0]), "Line must be an array"),
    ("Invoice", _invoice(Line=[{k: v for k, v in _invoice()["Line"][0].items() if k != "Amount"}]), "Amount"),
    ("Invoice", _invoice(Line=[{**_invoice()["Line"][0], "DetailType": "AccountBasedExpenseLineDetail"}]),
     "DetailType"),
    ("Invoice", _invoice(Line=[{"DetailType": "SalesItemLineDetail", "Amount": 1}]), "needs a SalesItemLineDetail"),
    ("Invoice", _invoice(Line=[{"DetailType": "SalesItemLineDetail", "Amount": 1,
                                "SalesItemLineDetail": {"Qty": 1}}]), "ItemRef"),
    ("Estimate", _invoice(CustomerRef={"value": ""}), "CustomerRef"),
    ("RefundReceipt", _invoice(), "DepositToAccountRef"),
    ("Payment", {"CustomerRef": {"value": "1"}, "TotalAmt": 5, "Line": [{"Amount": 5}]}, "LinkedTxn"),
    ("Payment", {"CustomerRef": {"value": "1"}}, "TotalAmt"),
    ("Customer", {"CompanyName": "Acme"}, "DisplayName"),
    ("Item", {"Name": "Widget", "Type": "Service"}, "IncomeAccountRef"),
    ("Item", {"Name": "Parent:Child", "Type": "Service", "IncomeAccountRef": {"value": "1"}}, "colon"),
    ("Purchase", {"PaymentType": "Cash", "Line": []}, "AccountRef"),
])
def test_the_practical_rules_reject(entity: str, body: dict[str, Any], expected: str) -> None:
    errors = contract.practical_errors(entity, body)
    assert any(expected in error for error in errors), errors


def test_a_sales_receipt_may_leave_the_customer_out() -> None:
    body = {k: v for k, v in _invoice().items() if k not in ("CustomerRef", "DueDate")}
    assert contract.validate_entity("SalesReceipt", body) == []


# --- the connector's bodies ------------------------------------------------------------------------
def _draft(document_type: str, *, currency: str = "usd") -> InvoiceDraft:
    return InvoiceDraft(
        document_type=document_type, currency=currency,
        customer=CustomerInfo(name="O'Brien: Sons & Co", email="ap@obrien.example", first_name="Pat",
                              last_name="O'Brien", crm_company_id="c-9",
                              address=Address(line1="1 High St", city="Leeds", postal_code="LS1",
                                              state="West Yorkshire", country="GB")),
        lines=[LineItem(description="Consulting", quantity=2.5, unit_amount_minor=12345, sku="C-1"),
               LineItem(description="Licence", unit_amount_minor=99900, product_name="Licence")],
        memo="Thanks", reference="Deal 42", metadata={"crm": "twenty"},
        options={"sales_term_id": "3", "expiration_days": 30, "payment_method_id": "1", "vendor_id": "56",
                 "doc_number": "INV-7"},
    )


@pytest.mark.parametrize("region", ["US", "GB"])
@pytest.mark.parametrize("document_type", sorted(QuickBooksConnector.document_types))
def test_every_body_the_connector_sends_is_valid(document_type: str, region: str) -> None:
    settings = {"realm_id": "1", "create_products": True, "income_account_id": "1", "region": region,
                "default_tax_code": "2", "deposit_account_id": "35", "refund_account_id": "35",
                "expense_account_id": "13", "payment_account_id": "35"}
    steps = QuickBooksConnector().preview_document(
        _draft(document_type, currency="gbp" if region == "GB" else "usd"),
        Connection("qbo", "quickbooks", settings), SendContext("t", "run-1"))
    bodies = [(step["entity"], step["json"]) for step in steps if step.get("method") == "POST"]
    assert bodies
    for entity, body in bodies:
        assert contract.validate_entity(entity, body) == [], (entity, body)
    for step in steps:
        if step.get("method") == "GET" and "query" in step:
            parse_query(step["query"])  # every query parses in Intuit's grammar


# --- the query language ----------------------------------------------------------------------------
@given(st.text(max_size=40))
def test_query_literals_round_trip_through_the_parser(text: str) -> None:
    literal = query_literal(text)
    parsed = parse_query(f"select * from Customer where DisplayName = {literal} maxresults 10")  # noqa: S608
    assert parsed.conditions[0].values == (text,)
    assert parsed.max_results == 10


def test_query_grammar() -> None:
    parsed = parse_query("SELECT count(*) FROM Item WHERE Type IN ('Service', 'NonInventory') AND Active = true "
                         "ORDERBY Name DESC STARTPOSITION 2 MAXRESULTS 5")
    assert parsed.count
    assert [(c.field, c.operator, c.values) for c in parsed.conditions] == [
        ("Type", "IN", ("Service", "NonInventory")), ("Active", "=", (True,))]
    assert (parsed.order_by, parsed.descending, parsed.start_position, parsed.max_results) == ("Name", True, 2, 5)


@pytest.mark.parametrize("statement", [
    "select * from Customer where DisplayName = 'a' or DisplayName = 'b'",  # OR is not supported
    "select Id from Customer",  # projections are not supported
    "select * from Customer where DisplayName = 'unterminated",
    "select * from Customer where DisplayName = O'Brien",
    "select * from Customer where DisplayName = 'O'Brien'",  # an unescaped quote ends the string early
])
def test_the_parser_rejects(statement: str) -> None:
    with pytest.raises(QueryError):
        parse_query(statement)


@pytest.fixture
def qbo() -> Iterator[tuple[QuickBooksFake, str]]:
    with OAuthFake() as idp, QuickBooksFake(idp) as fake:
        fake.add_realm("1")
        yield fake, idp.issue_access_token(idp.grant())


def _query(fake: QuickBooksFake, token: str, statement: str) -> tuple[int, Any]:
    req = urllib.request.Request(f"{fake.url}/v3/company/1/query?" + urlencode({"query": statement}),
                                 headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_fake_answers_queries_like_quickbooks(qbo: tuple[QuickBooksFake, str]) -> None:
    fake, token = qbo
    fake.seed("1", "Customer", {"DisplayName": "O'Brien & Co", "PrimaryEmailAddr": {"Address": "a@b.c"}})
    fake.seed("1", "Customer", {"DisplayName": "Gone Ltd", "Active": False})

    other_case = query_literal("o'brien & co")  # names compare case-insensitively
    status, body = _query(fake, token, f"select * from Customer where DisplayName = {other_case}")  # noqa: S608
    assert status == 200
    assert [c["DisplayName"] for c in body["QueryResponse"]["Customer"]] == ["O'Brien & Co"]
    assert _query(fake, token, "select * from Customer where PrimaryEmailAddr = 'a@b.c'")[1][
        "QueryResponse"]["maxResults"] == 1
    assert _query(fake, token, "select * from Customer where DisplayName = 'Gone Ltd'")[1]["QueryResponse"] == {}
    assert fake.violations == []

    status, body = _query(fake, token, "select * from Customer where Notes = 'x'")
    assert status == 400
    assert body["Fault"]["type"] == "ValidationFault"
    assert "not queryable" in body["Fault"]["Error"][0]["Detail"]
    assert fake.violations == ["query \"select * from Customer where Notes = 'x'\": Notes is not filterable on "
                               "Customer"]


def test_the_fake_refuses_an_unknown_token(qbo: tuple[QuickBooksFake, str]) -> None:
    fake, _ = qbo
    status, body = _query(fake, "at-made-up", "select * from Customer")
    assert status == 401
    assert body["fault"]["type"] == "AUTHENTICATION"


def test_the_xsd_copies_are_the_ones_recorded() -> None:
    source = (contract.CONTRACT_DIR / "SOURCE.md").read_text()
    for name in ("Finance.xsd", "IntuitBaseTypes.xsd", "IntuitNamesTypes.xsd"):
        digest = hashlib.sha256((contract.CONTRACT_DIR / name).read_bytes()).hexdigest()
        assert digest in source, name
    root = ET.parse(contract.SCHEMA_PATH).getroot()  # noqa: S314 (our own file)
    assert {e.get("name") for e in root.findall("{http://www.w3.org/2001/XMLSchema}element")} == set(
        contract.ENTITIES)
