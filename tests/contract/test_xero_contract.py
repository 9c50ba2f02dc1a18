"""The trimmed Xero contract, its validator (tests/fakes/xero_contract.py) and the fake built on it: bad
requests are refused the way Xero refuses them, and the fake's answers match Xero's response schemas."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import Request as UrlRequest
from urllib.request import urlopen

import pytest

from tests.fakes.xero_contract import SPEC_PATH, XeroContract
from tests.fakes.xero_server import BASE_PATH, DEFAULT_TOKEN, FakeXero, XeroError, parse_where

CONTACT_ID = "3ff6d40c-af9a-40a3-89ce-3c1556a25591"


@pytest.fixture(scope="module")
def contract() -> XeroContract:
    return XeroContract.load()


def good_invoice() -> dict[str, Any]:
    return {"Invoices": [{
        "Type": "ACCREC", "Contact": {"ContactID": CONTACT_ID}, "Date": "2024-03-01", "DueDate": "2024-03-15",
        "Status": "AUTHORISED", "CurrencyCode": "USD", "Reference": "Deal 42",
        "LineItems": [{"Description": "Widget", "Quantity": 2.0, "UnitAmount": 19.99, "ItemCode": "W-1",
                       "AccountCode": "200", "TaxType": "OUTPUT"}],
    }]}


def headers(**extra: str) -> dict[str, str]:
    return {"xero-tenant-id": "tenant", "content-type": "application/json", **extra}


# --- the trimmed document -----------------------------------------------------------------------------
def test_the_trimmed_spec_is_the_official_one_cut_down(contract: XeroContract) -> None:
    info = contract.spec["info"]
    assert info["title"] == "Xero Accounting API"
    assert info["version"] == "16.1.0"
    assert re.fullmatch(r"[0-9a-f]{64}", info["x-billflow-trimmed-from"]["sha256"])
    assert SPEC_PATH.stat().st_size < 100_000  # the source is 926 KB
    assert (SPEC_PATH.parent / "SOURCE.md").exists()
    assert (SPEC_PATH.parent / "trim.py").exists()


def test_it_holds_every_operation_billflow_calls(contract: XeroContract) -> None:
    ids = {(op.method, op.path): op.operation_id for op in contract.operations}
    assert ids == {
        ("GET", "/Contacts"): "getContacts", ("PUT", "/Contacts"): "createContacts",
        ("GET", "/Items"): "getItems", ("PUT", "/Items"): "createItems",
        ("PUT", "/Invoices"): "createInvoices", ("PUT", "/Quotes"): "createQuotes",
        ("GET", "/Organisation"): "getOrganisations",  # the connection test
    }
    for op in contract.operations:
        assert op.required_headers == ("xero-tenant-id",)
        if op.method == "PUT":
            assert "idempotency-key" in op.headers


def test_every_reference_resolves(contract: XeroContract) -> None:
    refs = set(re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(contract.spec)))
    for ref in refs:
        node: Any = contract.spec
        for part in ref.split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


# --- the validator ------------------------------------------------------------------------------------
def test_a_good_invoice_passes(contract: XeroContract) -> None:
    checked = contract.check_request("PUT", "/Invoices", {"unitdp": ["4"]}, headers(),
                                     json.dumps(good_invoice()).encode())
    assert checked.problems == []
    assert checked.query == {"unitdp": 4}
    assert checked.operation is not None
    assert checked.operation.operation_id == "createInvoices"


@pytest.mark.parametrize(("change", "expected"), [
    (lambda i: i["LineItems"][0].update(Descripton="typo"), "LineItems.0.Descripton: is not an element"),
    (lambda i: i.update(Total=10.0), "Total: is read-only"),
    (lambda i: i["LineItems"][0].update(Quantity="2"), "LineItems.0.Quantity: '2' is not of type number"),
    (lambda i: i["Contact"].update(ContactID="42"), "Contact.ContactID: '42' is not a valid uuid"),
    (lambda i: i.update(Status="SENT"), "Status: 'SENT' is not one of DRAFT"),
    (lambda i: i.update(CurrencyCode="XYZ"), "CurrencyCode: 'XYZ' is not one of the"),
    (lambda i: i.update(InvoiceNumber="I" * 256), "InvoiceNumber: must be at most 255 characters"),
    (lambda i: i.update(Type="SALES"), "Type: 'SALES' is not one of"),
])
def test_bad_invoices_are_refused(contract: XeroContract, change: Any, expected: str) -> None:
    body = good_invoice()
    change(body["Invoices"][0])
    checked = contract.check_request("PUT", "/Invoices", {}, headers(), json.dumps(body).encode())
    problems = [str(p) for p in checked.problems]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"Invoices.0.{expected}"), problems


def test_items_need_a_code_of_at_most_30_characters(contract: XeroContract) -> None:
    op = contract.by_id("createItems")
    assert [str(p) for p in contract.check_body(op, {"Items": [{"Name": "Widget"}]})] == [
        "Items.0: 'Code' is a required property"]
    assert [str(p) for p in contract.check_body(op, {"Items": [{"Code": "C" * 31}]})] == [
        "Items.0.Code: must be at most 30 characters"]


def test_headers_query_and_encoding_are_checked(contract: XeroContract) -> None:
    body = json.dumps(good_invoice()).encode()
    assert [str(p) for p in contract.check_request("PUT", "/Invoices", {}, {"content-type": "application/json"},
                                                   body).problems] == ["the xero-tenant-id header is required"]
    checked = contract.check_request("PUT", "/Invoices", {}, {**headers(), "content-type": "text/plain"}, body)
    assert [str(p) for p in checked.problems] == ["the body must be application/json, not text/plain"]
    checked = contract.check_request("PUT", "/Invoices", {}, headers(), b"{nope")
    assert str(checked.problems[0]).startswith("the body is not JSON")
    checked = contract.check_request("GET", "/Contacts", {"wherre": ["x"], "IDs": ["nope"]}, headers(), b"")
    assert sorted(str(p) for p in checked.problems) == [
        "IDs.0: 'nope' is not a valid uuid",
        "wherre: unknown query parameter (known: IDs, includeArchived, order, page, pageSize, searchTerm, "
        "summaryOnly, where)",
    ]
    checked = contract.check_request("GET", "/Contacts", {"page": ["two"]}, headers(), b"")
    assert [str(p) for p in checked.problems] == ["page: 'two' is not of type integer"]
    checked = contract.check_request("GET", "/Contacts", {"includeArchived": ["true"]}, headers(), b"")
    assert checked.query == {"includeArchived": True}
    assert checked.problems == []
    assert contract.check_request("DELETE", "/Invoices", {}, headers(), b"").operation is None


# --- where filters ------------------------------------------------------------------------------------
def test_where_filters_parse_as_xero_reads_them() -> None:
    fields = ("Name", "FirstName", "LastName", "EmailAddress", "IsCustomer")
    clauses = parse_where('FirstName=="Ada" AND LastName=="Love""lace" && IsCustomer==true', fields)
    assert [(c.field, c.op, c.value) for c in clauses] == [
        ("FirstName", "==", "Ada"), ("LastName", "==", 'Love"lace'), ("IsCustomer", "==", True)]
    assert parse_where('Name.Contains("Glo")', fields)[0].op == "Contains"
    for bad in ('Nmae=="x"', 'Name=="x', 'Name=="x" OR Name=="y"', 'Name.EndsWith("x")', "Name=="):
        with pytest.raises(XeroError) as caught:
            parse_where(bad, fields)
        assert caught.value.status == 400
        assert caught.value.body["Type"] == "QueryParseException"


# --- the fake over HTTP -------------------------------------------------------------------------------
@pytest.fixture
def xero() -> Iterator[FakeXero]:
    fake = FakeXero().start()
    yield fake
    fake.stop()


def call(xero: FakeXero, method: str, path: str, *, body: Any = None, query: dict[str, str] | None = None,
         **extra: str) -> tuple[int, dict[str, str], Any]:
    sent = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "xero-tenant-id": xero.tenant_id,
            "Content-Type": "application/json", **extra}
    url = f"{xero.url}{BASE_PATH}{path}" + (f"?{urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = UrlRequest(url, data=data, method=method, headers={k: v for k, v in sent.items() if v})
    try:
        with urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def test_answers_match_xeros_response_schemas(xero: FakeXero, contract: XeroContract) -> None:
    contact = xero.add_contact("Globex", email="ap@globex.test")
    assert call(xero, "PUT", "/Contacts", body={"Contacts": [{"Name": "Initech"}]})[0] == 200
    assert call(xero, "GET", "/Contacts", query={"where": 'Name=="Globex"', "page": "1"})[0] == 200
    assert call(xero, "PUT", "/Items", body={"Items": [{"Code": "W-1", "Name": "Widget",
                                                        "SalesDetails": {"UnitPrice": 19.99}}]})[0] == 200
    assert call(xero, "GET", "/Items", query={"where": 'Code=="W-1"'})[0] == 200
    invoice = good_invoice()
    invoice["Invoices"][0]["Contact"]["ContactID"] = contact["ContactID"]
    status, _, answer = call(xero, "PUT", "/Invoices", body=invoice)
    assert status == 200
    assert answer["Invoices"][0]["Total"] == 45.98  # 39.98 and 15% OUTPUT tax
    quote = {"Quotes": [{"Contact": {"ContactID": contact["ContactID"]}, "Date": "2024-03-01",
                         "LineItems": [{"Description": "Widget", "Quantity": 1.0, "UnitAmount": 5.0}]}]}
    assert call(xero, "PUT", "/Quotes", body=quote)[0] == 200
    assert call(xero, "PUT", "/Invoices", body={"Invoices": [{"Type": "ACCREC"}]})[0] == 400
    assert call(xero, "GET", "/Organisation")[0] == 200
    assert len(xero.answers) == 8
    for operation_id, status, body in xero.answers:
        problems = contract.check_response(contract.by_id(operation_id), status, body) if status == 200 \
            else contract.check_error(body)
        assert problems == [], (operation_id, problems)
    assert xero.violations == ["PUT /api.xro/2.0/Invoices: A Contact must be specified for this type of transaction"]


def test_validation_errors_come_in_xeros_shape(xero: FakeXero) -> None:
    xero.add_contact("Globex")
    status, _, answer = call(xero, "PUT", "/Contacts", body={"Contacts": [{"Name": "globex"}]})
    assert status == 400
    assert answer["ErrorNumber"] == 10
    assert answer["Type"] == "ValidationException"
    assert answer["Elements"][0]["ValidationErrors"] == [{"Message": (
        "The contact name globex is already assigned to another contact. The contact name must be unique "
        "across all active contacts.")}]
    invoice = good_invoice()  # its ContactID is unknown; its item code and account too
    invoice["Invoices"][0]["LineItems"][0]["AccountCode"] = "999"
    status, _, answer = call(xero, "PUT", "/Invoices", body=invoice)
    messages = [e["Message"] for e in answer["Elements"][0]["ValidationErrors"]]
    assert messages == [f"Contact with ContactID {CONTACT_ID} could not be found.", "Item code 'W-1' is not valid",
                        "Account code '999' is not a valid code for this document."]
    assert xero.invoices == {}


def test_contract_problems_answer_post_data_invalid(xero: FakeXero) -> None:
    status, _, answer = call(xero, "PUT", "/Contacts", body={"Contacts": [{"Name": "A", "Emial": "a@b.test"}]})
    assert status == 400
    assert answer["Type"] == "PostDataInvalidException"
    assert "Contacts.0.Emial: is not an element of this object" in answer["Message"]
    assert len(xero.violations) == 1


def test_idempotency_keys_replay_and_refuse_reuse(xero: FakeXero) -> None:
    body = {"Contacts": [{"Name": "Initech"}]}
    first = call(xero, "PUT", "/Contacts", body=body, **{"Idempotency-Key": "k-1"})
    again = call(xero, "PUT", "/Contacts", body=body, **{"Idempotency-Key": "k-1"})
    assert first[2]["Contacts"] == again[2]["Contacts"]
    assert len(xero.contacts) == 1
    assert xero.replayed == ["k-1"]
    status, _, _ = call(xero, "PUT", "/Contacts", body={"Contacts": [{"Name": "Other"}]}, **{"Idempotency-Key": "k-1"})
    assert status == 400
    status, _, _ = call(xero, "PUT", "/Contacts", body=body, **{"Idempotency-Key": "k" * 129})
    assert status == 400
    assert len(xero.violations) == 2


def test_auth_tenant_and_rate_limits(xero: FakeXero) -> None:
    status, answer_headers, answer = call(xero, "GET", "/Items", Authorization="")
    assert (status, answer["Detail"]) == (401, "AuthenticationUnsuccessful")
    assert answer_headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    xero.expire_token(DEFAULT_TOKEN)
    assert call(xero, "GET", "/Items")[2]["Detail"].startswith("TokenExpired")
    xero.accept_token(DEFAULT_TOKEN)
    assert call(xero, "GET", "/Items", **{"xero-tenant-id": "another-org"})[0] == 403
    assert len(xero.violations) == 2  # the missing token and the foreign tenant; expiry is an answer

    for _ in range(60):  # refused calls did not count
        assert call(xero, "GET", "/Items")[0] == 200
    status, answer_headers, _ = call(xero, "GET", "/Items")
    assert status == 429
    assert answer_headers["X-Rate-Limit-Problem"] == "minute"
    assert 1 <= int(answer_headers["Retry-After"]) <= 60


def test_knobs_are_not_violations(xero: FakeXero) -> None:
    xero.fail_next("getItems", 429, retry_after=3, rate_problem="concurrent")
    xero.fail_next("getItems", 503)
    status, answer_headers, _ = call(xero, "GET", "/Items")
    assert (status, answer_headers["Retry-After"], answer_headers["X-Rate-Limit-Problem"]) == (429, "3", "concurrent")
    assert call(xero, "GET", "/Items")[0] == 503
    assert call(xero, "GET", "/Items")[0] == 200
    with pytest.raises(KeyError):
        xero.fail_next("getInvoices")
    assert xero.violations == []


def test_source_notes_name_the_upstream_file() -> None:
    notes = (Path(SPEC_PATH).parent / "SOURCE.md").read_text()
    assert "XeroAPI/Xero-OpenAPI" in notes
    assert "xero_accounting.yaml" in notes
