"""The Stripe contract checks themselves: the validator must refuse what Stripe refuses (so a fake built on it
cannot pass vacuously), accept what Stripe accepts, and the fake's answers must match the spec's schemas."""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billflow.connectors.base import SendContext
from billflow.connectors.stripe import API_VERSION, StripeConnector, encode_form
from billflow.models.documents import InvoiceDraft
from billflow.storage.secrets import Connection

from tests.fakes.stripe_contract import SPEC_PATH, FormDecodeError, StripeContract, decode_form
from tests.fakes.stripe_server import FakeStripe

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def contract() -> StripeContract:
    return StripeContract.load()


@pytest.fixture(scope="module")
def stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe(seed=11) as server:
        yield server


@pytest.fixture
def fake(stripe_server: FakeStripe) -> FakeStripe:
    stripe_server.reset()
    return stripe_server


def problems(contract: StripeContract, method: str, path: str, params: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> list[tuple[str, str | None]]:
    body = encode_form(params).encode() if params else b""
    checked = contract.check_request(method, path, encode_form(query or {}), body, FORM)
    return [(p.message, p.param) for p in checked.problems]


def call(fake: FakeStripe, method: str, path: str, params: dict[str, Any] | None = None, *,
         key: str | None = None, auth: bool = True) -> tuple[int, dict[str, str], Any]:
    """A raw HTTP call, so the tests see exactly what Stripe's clients would."""
    data = encode_form(params or {})
    url = fake.url + path + (f"?{data}" if method == "GET" and data else "")
    headers = {"Content-Type": FORM}
    if auth:
        headers["Authorization"] = f"Bearer {fake.api_key}"
    if key:
        headers["Idempotency-Key"] = key
    body = data.encode() if method == "POST" else None
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


# --- the trimmed spec -----------------------------------------------------------------------------
def test_trimmed_spec_holds_exactly_the_operations_billflow_uses(contract: StripeContract) -> None:
    spec_file = Path(__file__).resolve().parents[1] / "contracts" / "stripe" / "trim.py"
    spec = importlib.util.spec_from_file_location("stripe_trim", spec_file)
    assert spec
    assert spec.loader
    trim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trim)

    held = {(o.path, o.method.lower()) for o in contract.operations}
    assert held == set(trim.OPERATIONS)
    assert contract.api_version == API_VERSION == "2023-08-16"


def test_trimmed_spec_is_self_contained(contract: StripeContract) -> None:
    text = SPEC_PATH.read_text()
    schemas = contract.spec["components"]["schemas"]
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert refs
    assert refs <= set(schemas)


# --- the validator refuses ------------------------------------------------------------------------
def test_unknown_parameters_are_refused_top_level_and_nested(contract: StripeContract) -> None:
    found = problems(contract, "POST", "/v1/customers", {"name": "A", "nickname": "a", "address": {"planet": "x"}})
    assert ("Received unknown parameter: nickname", "nickname") in found
    assert ("Received unknown parameter: address[planet]", "address[planet]") in found


def test_unknown_query_parameters_are_refused(contract: StripeContract) -> None:
    found = problems(contract, "GET", "/v1/customers", query={"email": "a@b.test", "name": "A"})
    assert found == [("Received unknown parameter: name", "name")]


def test_wrong_types_are_refused(contract: StripeContract) -> None:
    found = problems(contract, "POST", "/v1/invoices",
                     {"customer": "cus_1", "days_until_due": "thirty", "auto_advance": "maybe"})
    assert ("Invalid integer: thirty", "days_until_due") in found
    assert ("Invalid boolean: maybe", "auto_advance") in found
    assert problems(contract, "POST", "/v1/invoiceitems", {"customer": "cus_1", "unit_amount": "9.99"}) == [
        ("Invalid integer: 9.99", "unit_amount")]
    assert problems(contract, "GET", "/v1/customers", query={"limit": "ten"}) == [("Invalid integer: ten", "limit")]


def test_structure_where_a_scalar_belongs_is_refused(contract: StripeContract) -> None:
    found = problems(contract, "POST", "/v1/customers", {"name": {"first": "A"}, "metadata": {"k": {"x": "y"}}})
    assert {param for _, param in found} == {"name", "metadata[k]"}


def test_missing_required_parameters_are_refused(contract: StripeContract) -> None:
    assert problems(contract, "POST", "/v1/invoiceitems", {"amount": 100, "currency": "usd"}) == [
        ("Missing required param: customer.", "customer")]
    assert problems(contract, "GET", "/v1/customers/search", query={"limit": 1}) == [
        ("Missing required param: query.", "query")]
    found = problems(contract, "POST", "/v1/invoices", {"customer": "cus_1", "custom_fields": [{"name": "PO"}]})
    assert found == [("Missing required param: custom_fields[0][value].", "custom_fields[0][value]")]


def test_values_outside_an_enum_or_too_long_are_refused(contract: StripeContract) -> None:
    found = problems(contract, "POST", "/v1/invoices", {"customer": "cus_1", "collection_method": "invoice",
                                                        "pending_invoice_items_behavior": "exclude_all"})
    assert [param for _, param in found] == ["collection_method", "pending_invoice_items_behavior"]
    assert problems(contract, "POST", "/v1/invoices", {"customer": "cus_1", "description": "x" * 1501}) == [
        ("Invalid description: must be at most 1500 characters", "description")]


def test_unknown_operations_and_bad_bodies_are_refused(contract: StripeContract) -> None:
    assert problems(contract, "POST", "/v1/charges", {"amount": 1})[0][0].startswith("Unrecognized request URL")
    assert problems(contract, "DELETE", "/v1/invoices/in_1/finalize")[0][0].startswith("Unrecognized")
    checked = contract.check_request("POST", "/v1/customers", "", b'{"name": "A"}', "application/json")
    assert checked.problems  # a JSON body is not a form; Stripe takes forms
    checked = contract.check_request("POST", "/v1/customers", "", b"name=A", "application/json")
    assert [p.message for p in checked.problems] == [f"Request bodies must be {FORM}, not application/json."]
    checked = contract.check_request("POST", "/v1/customers", "", b"address[city=x", FORM)
    assert checked.problems[0].param == "address[city"


# --- the validator accepts ------------------------------------------------------------------------
def test_what_the_connector_sends_is_accepted(contract: StripeContract) -> None:
    invoice = {
        "customer": "cus_1", "collection_method": "send_invoice", "days_until_due": 30, "currency": "jpy",
        "description": "Memo", "auto_advance": False, "pending_invoice_items_behavior": "exclude",
        "metadata": {"crm_record_id": "opp-1", "0": "metadata keyed like an index is still an object"},
        "custom_fields": [{"name": "Reference", "value": "PO-1"}], "default_tax_rates": ["txr_1", "txr_2"],
    }
    item = {"customer": "cus_1", "invoice": "in_1", "currency": "jpy", "description": "x", "quantity": 3,
            "unit_amount": -1200, "tax_rates": ["txr_1"], "metadata": {"sku": "A-1"}}
    customer = {"name": "A", "email": "a@b.test", "address": {"city": "Tokyo", "country": "JP"},
                "metadata": {"crm_company_id": "c-1"}, "preferred_locales": ["ja", "en"], "expand": ["tax"]}
    assert problems(contract, "POST", "/v1/invoices", invoice) == []
    assert problems(contract, "POST", "/v1/invoiceitems", item) == []
    assert problems(contract, "POST", "/v1/invoiceitems", {"customer": "cus_1", "amount": 5, "currency": "usd",
                                                           "unit_amount_decimal": "12.3456"}) == []
    assert problems(contract, "POST", "/v1/customers", customer) == []
    assert problems(contract, "POST", "/v1/invoices/in_1/finalize") == []
    assert problems(contract, "POST", "/v1/invoices/in_1/finalize", {"auto_advance": True}) == []
    assert problems(contract, "POST", "/v1/invoices/in_1/send") == []
    assert problems(contract, "GET", "/v1/customers", query={"email": "a@b.test", "limit": 1,
                                                             "created": {"gte": 1700000000}}) == []
    assert problems(contract, "GET", "/v1/customers/search", query={"query": "name:'A'", "limit": 1}) == []
    assert problems(contract, "GET", "/v1/customers/cus_1", query={"expand": ["tax"]}) == []


def test_empty_string_unsets_where_stripe_allows_it(contract: StripeContract) -> None:
    assert problems(contract, "POST", "/v1/invoices", {"customer": "cus_1", "metadata": "", "custom_fields": ""}) == []
    assert problems(contract, "POST", "/v1/invoices", {"customer": "cus_1", "metadata": "x"}) != []


def test_literal_paths_win_over_templates(contract: StripeContract) -> None:
    found = contract.operation("GET", "/v1/customers/search")
    assert found is not None
    assert found[0].operation_id == "GetCustomersSearch"
    found = contract.operation("GET", "/v1/customers/cus_123")
    assert found is not None
    assert found[0].operation_id == "GetCustomersCustomer"
    assert found[1] == {"customer": "cus_123"}


def test_bracket_notation_decoding() -> None:
    assert decode_form("a[b][0]=x&a[b][1]=y&c[]=1&c[]=2&d=") == {"a": {"b": ["x", "y"]}, "c": ["1", "2"], "d": ""}
    assert decode_form("m[1]=x") == {"m": {"1": "x"}}  # not 0..n-1: stays an object
    for bad in ("a=1&a[b]=2", "a[b]=1&a=2", "a=1&a=2", "a[]=1&a[0]=2", "a[=1", "[a]=1"):
        with pytest.raises(FormDecodeError):
            decode_form(bad)


# --- the fake over HTTP: errors in Stripe's shape, recorded as violations ---------------------------
def test_invalid_requests_get_stripes_error_shape_and_are_recorded(fake: FakeStripe) -> None:
    status, _, body = call(fake, "POST", "/v1/invoices", {"customer": "cus_x", "colour": "blue"}, key="k1")

    assert status == 400
    assert body["error"] == {"type": "invalid_request_error", "message": "Received unknown parameter: colour",
                             "param": "colour"}
    assert fake.contract.check_error(body) == []
    assert fake.violations == ["POST /v1/invoices: Received unknown parameter: colour"]


def test_no_api_key_is_401_in_stripes_shape(fake: FakeStripe) -> None:
    status, _, body = call(fake, "GET", "/v1/customers", auth=False)

    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "You did not provide an API key" in body["error"]["message"]
    assert fake.contract.check_error(body) == []
    assert len(fake.violations) == 1


def test_unknown_urls_are_404_and_recorded(fake: FakeStripe) -> None:
    status, _, body = call(fake, "POST", "/v1/charges", {"amount": 100})
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL")
    assert len(fake.violations) == 1


def test_idempotency_replays_the_first_answer(fake: FakeStripe) -> None:
    first = call(fake, "POST", "/v1/customers", {"name": "A"}, key="same")
    second = call(fake, "POST", "/v1/customers", {"name": "A"}, key="same")

    assert first[0] == second[0] == 200
    assert first[2] == second[2]
    assert len(fake.customers) == 1
    assert second[1].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[1]
    assert fake.replayed == ["same"]
    assert fake.violations == []


def test_idempotency_key_with_other_parameters_or_endpoint_is_an_idempotency_error(fake: FakeStripe) -> None:
    call(fake, "POST", "/v1/customers", {"name": "A"}, key="once")

    status, _, body = call(fake, "POST", "/v1/customers", {"name": "B"}, key="once")
    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert "same parameters" in body["error"]["message"]
    status, _, body = call(fake, "POST", "/v1/invoices", {"customer": "cus_x"}, key="once")
    assert status == 400
    assert body["error"]["type"] == "idempotency_error"
    assert "same endpoint" in body["error"]["message"]
    assert len(fake.customers) == 1
    assert len(fake.violations) == 2


def test_requests_refused_by_validation_do_not_use_up_the_key(fake: FakeStripe) -> None:
    refused = call(fake, "POST", "/v1/customers", {"name": "A", "bogus": "1"}, key="k")
    accepted = call(fake, "POST", "/v1/customers", {"name": "A"}, key="k")
    assert (refused[0], accepted[0]) == (400, 200)
    assert len(fake.customers) == 1


def test_errors_after_validation_are_saved_under_the_key(fake: FakeStripe) -> None:
    first = call(fake, "POST", "/v1/invoices", {"customer": "cus_missing"}, key="k")
    fake.customers["cus_missing"] = fake.add_customer(name="late") | {"id": "cus_missing"}
    again = call(fake, "POST", "/v1/invoices", {"customer": "cus_missing"}, key="k")
    assert first[0] == again[0] == 400
    assert first[2] == again[2]
    assert fake.replayed == ["k"]


def test_injected_failures_answer_first_and_are_not_saved(fake: FakeStripe) -> None:
    fake.fail_next("PostCustomers", status=429, retry_after=3, times=2)
    fake.fail_next("GetCustomers", status=503)

    limited = [call(fake, "POST", "/v1/customers", {"name": "A"}, key="k") for _ in range(3)]
    assert [c[0] for c in limited] == [429, 429, 200]
    assert limited[0][1]["Retry-After"] == "3"
    assert limited[0][2]["error"]["code"] == "rate_limit"
    status, headers, body = call(fake, "GET", "/v1/customers")
    assert (status, headers["Stripe-Should-Retry"], body["error"]["type"]) == (503, "true", "api_error")
    assert fake.violations == []
    assert len(fake.customers) == 1
    with pytest.raises(KeyError):
        fake.fail_next("PostCharges")


def test_invoice_state_machine(fake: FakeStripe) -> None:
    customer = fake.add_customer(name="A")
    _, _, invoice = call(fake, "POST", "/v1/invoices", {"customer": customer["id"], "currency": "usd",
                                                        "collection_method": "send_invoice", "days_until_due": 7})
    assert invoice["status"] == "draft"
    assert invoice["id"].startswith("in_")
    item = {"customer": customer["id"], "invoice": invoice["id"], "unit_amount": 500, "quantity": 2}
    _, _, created = call(fake, "POST", "/v1/invoiceitems", item)
    assert created["id"].startswith("ii_")
    assert created["amount"] == 1000

    status, _, body = call(fake, "POST", f"/v1/invoices/{invoice['id']}/send")
    assert status == 400
    assert "draft" in body["error"]["message"]
    status, _, finalized = call(fake, "POST", f"/v1/invoices/{invoice['id']}/finalize")
    assert status == 200
    assert finalized["status"] == "open"
    assert finalized["amount_due"] == 1000
    assert finalized["number"]
    assert finalized["hosted_invoice_url"].startswith("https://invoice.stripe.com/")

    status, _, body = call(fake, "POST", f"/v1/invoices/{invoice['id']}/finalize")
    assert status == 400
    assert "re-finalize" in body["error"]["message"]
    status, _, body = call(fake, "POST", "/v1/invoiceitems", item)
    assert status == 400
    assert "draft invoices" in body["error"]["message"]
    status, _, body = call(fake, "POST", "/v1/invoices/in_nope/finalize")
    assert status == 404
    assert body["error"]["code"] == "resource_missing"
    assert len(fake.violations) == 4


def test_invoice_rules_from_stripes_documentation(fake: FakeStripe) -> None:
    customer = fake.add_customer(name="A")
    _, _, invoice = call(fake, "POST", "/v1/invoices", {"customer": customer["id"], "currency": "eur"})
    base = {"customer": customer["id"], "invoice": invoice["id"]}

    refusals = [
        call(fake, "POST", "/v1/invoiceitems", {**base, "currency": "usd", "unit_amount": 1}),
        call(fake, "POST", "/v1/invoiceitems", {**base, "amount": 1, "unit_amount": 1}),
        call(fake, "POST", "/v1/invoiceitems", {**base, "quantity": 1}),
        call(fake, "POST", "/v1/invoiceitems", {**base, "unit_amount": 1, "tax_rates": ["txr_nope"]}),
        call(fake, "POST", "/v1/invoices", {"customer": customer["id"], "collection_method": "send_invoice"}),
        call(fake, "POST", "/v1/invoices", {"customer": customer["id"], "metadata": {"k" * 41: "v"}}),
        call(fake, "POST", f"/v1/invoices/{invoice['id']}/send"),
    ]
    assert [status for status, _, _ in refusals] == [400] * len(refusals)
    assert all(fake.contract.check_error(body) == [] for _, _, body in refusals)
    # an invoice with nothing due is paid as soon as it is finalized
    _, _, finalized = call(fake, "POST", f"/v1/invoices/{invoice['id']}/finalize")
    assert finalized["status"] == "paid"
    assert finalized["paid"] is True


def test_customer_list_and_search(fake: FakeStripe) -> None:
    older = fake.add_customer(name="Zed Ltd", email="z@example.test", metadata={"crm": "1"})
    newer = fake.add_customer(name="Zed Ltd", email="z@example.test")
    fake.add_customer(name="Other", email="o@example.test")

    _, _, page = call(fake, "GET", "/v1/customers", {"email": "z@example.test", "limit": 1})
    assert [c["id"] for c in page["data"]] == [newer["id"]]
    assert page["has_more"] is True
    _, _, found = call(fake, "GET", "/v1/customers/search", {"query": "name:'zed ltd'"})
    assert {c["id"] for c in found["data"]} == {older["id"], newer["id"]}
    _, _, found = call(fake, "GET", "/v1/customers/search", {"query": "metadata['crm']:'1' AND email:'z@example.test'"})
    assert [c["id"] for c in found["data"]] == [older["id"]]
    _, _, found = call(fake, "GET", "/v1/customers/search", {"query": "name~'the' OR -name:'Zed Ltd'"})
    assert [c["name"] for c in found["data"]] == ["Other"]


def test_search_queries_must_be_quoted_and_escaped(fake: FakeStripe) -> None:
    fake.add_customer(name="O'Brien")
    for query in ("name:'O'Brien'", "name:O'Brien", "nickname:'x'", "name:'a' AND email:'b' OR name:'c'"):
        status, _, body = call(fake, "GET", "/v1/customers/search", {"query": query})
        assert (status, body["error"]["param"]) == (400, "query"), query
    _, _, found = call(fake, "GET", "/v1/customers/search", {"query": "name:'O\\'Brien'"})
    assert [c["name"] for c in found["data"]] == ["O'Brien"]


# --- the fake's answers are shaped like Stripe's --------------------------------------------------
def test_every_answer_of_a_full_run_matches_the_spec(fake: FakeStripe) -> None:
    deleted = fake.add_customer(name="Gone")
    fake.delete_customer(deleted["id"])
    vat = fake.add_tax_rate(7.5)
    draft = InvoiceDraft.model_validate({
        "customer": {"name": "Acme", "email": "a@acme.test", "external_id": deleted["id"],
                     "address": {"line1": "1 Main St", "country": "US"}, "crm_company_id": "c-1"},
        "currency": "usd", "reference": "PO-7", "metadata": {"crm_record_id": "opp-1"},
        "lines": [{"description": "a", "quantity": 2, "unit_amount_minor": 1999, "taxable": True},
                  {"description": "b", "quantity": 0.5, "unit_amount_minor": 1000}],
        "options": {"send": True, "tax_rates": [vat["id"]], "tax_rates_on": "taxable_lines"},
    })
    conn = Connection("s", "stripe", {"api_key": fake.api_key, "base_url": fake.url})
    StripeConnector().create_document(draft, conn, SendContext("t", "k"))
    StripeConnector().test_connection(conn, "t")
    call(fake, "GET", "/v1/customers/cus_missing")

    checked = {op for op, _, _ in fake.answers}
    assert checked == {o.operation_id for o in fake.contract.operations}
    for operation_id, status, body in fake.answers:
        if status == 200:
            assert fake.contract.check_response(fake.contract.by_id(operation_id), body) == [], operation_id
        else:
            assert fake.contract.check_error(body) == [], operation_id


def test_response_checks_can_fail(contract: StripeContract) -> None:
    invoice_op = contract.by_id("PostInvoices")
    assert contract.check_response(invoice_op, {"id": "in_1", "object": "invoice"})  # required fields missing
    assert contract.check_error({"error": {"type": "teapot", "message": "x"}})
