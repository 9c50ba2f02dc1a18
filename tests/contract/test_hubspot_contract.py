"""The HubSpot contracts the stand-in enforces: they accept what HubSpot documents and refuse what it does not,
and the stand-in's own answers are HubSpot's shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from billflow_local.standins.hubspot_contract import CONTRACTS, SPECS, HubSpotContract
from billflow_local.standins.hubspot_server import FakeHubSpot

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def contract() -> HubSpotContract:
    return HubSpotContract()


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_the_trimmed_specs_hold_the_operations_billflow_calls_and_say_where_they_come_from() -> None:
    kept = set()
    for name in SPECS:
        spec = json.loads((CONTRACTS / f"{name}.trimmed.json").read_text())
        assert spec["info"]["x-billflow-trimmed-from"]["file"].endswith(f"{name}.json")
        kept |= {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert kept == {
        ("GET", "/crm/v3/objects/0-3"), ("GET", "/crm/v3/objects/0-3/{dealId}"),
        ("PATCH", "/crm/v3/objects/0-3/{dealId}"), ("POST", "/crm/v3/objects/0-3/search"),
        ("GET", "/crm/v3/objects/companies/{companyId}"), ("PATCH", "/crm/v3/objects/companies/{companyId}"),
        ("GET", "/crm/v3/objects/contacts/{contactId}"), ("POST", "/crm/v3/objects/line_items/batch/read"),
        ("GET", "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}"),
    }


def test_deals_are_served_under_their_name_and_their_type_id(contract: HubSpotContract) -> None:
    for path in ("/crm/v3/objects/deals/12", "/crm/v3/objects/0-3/12", "/crm/v3/objects/quotes/12"):
        assert contract.check_request("GET", path, {"properties": ["dealname,amount"]}, {}, b"") == []


def test_a_patch_of_string_properties_is_accepted_and_others_refused(contract: HubSpotContract) -> None:
    path = "/crm/v3/objects/deals/12"
    assert contract.check_request("PATCH", path, {}, JSON, body({"properties": {"invoice_id": "in_1"}})) == []
    assert contract.check_request("PATCH", path, {}, JSON, body({"properties": {"amount": 12}}))
    assert contract.check_request("PATCH", path, {}, JSON, body({"invoice_id": "in_1"}))
    assert contract.check_request("PATCH", path, {}, {"content-type": "text/plain"}, b"x")


def test_a_search_needs_what_the_spec_requires(contract: HubSpotContract) -> None:
    path = "/crm/v3/objects/deals/search"
    complete = {"filterGroups": [{"filters": [{"propertyName": "dealstage", "operator": "EQ",
                                               "value": "closedwon"}]}],
                "properties": ["dealname"], "sorts": ["hs_lastmodifieddate"], "limit": 200, "after": "0"}
    assert contract.check_request("POST", path, {}, JSON, body(complete)) == []
    assert contract.check_request("POST", path, {}, JSON, body({**complete, "limit": "200"}))
    wrong_operator = {**complete, "filterGroups": [{"filters": [{"propertyName": "x", "operator": "EQUALS"}]}]}
    assert any("EQUALS" in p for p in contract.check_request("POST", path, {}, JSON, body(wrong_operator)))
    assert contract.check_request("POST", path, {}, JSON, body({"limit": 10}))


def test_an_unknown_operation_is_reported(contract: HubSpotContract) -> None:
    assert contract.check_request("DELETE", "/crm/v3/objects/deals/12", {}, {}, b"")
    assert contract.check_request("GET", "/crm/v3/owners", {}, {}, b"")


def test_answers_are_checked_against_the_documented_shapes(contract: HubSpotContract) -> None:
    record = {"id": "12", "properties": {"dealname": "x"}, "createdAt": "2026-01-01T00:00:00Z",
              "updatedAt": "2026-01-01T00:00:00Z", "archived": False}
    assert contract.check_response("GET", "/crm/v3/objects/deals/12", 200, record) == []
    assert contract.check_response("GET", "/crm/v3/objects/deals/12", 200, {"id": "12"})
    error = {"message": "nope", "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf", "category": "X"}
    assert contract.check_response("GET", "/crm/v3/objects/deals/12", 404, error) == []
    associations = {"results": [{"toObjectId": "7", "associationTypes": [{"category": "HUBSPOT_DEFINED",
                                                                        "typeId": 3}]}]}
    assert contract.check_response("GET", "/crm/v4/objects/deals/12/associations/contacts", 200,
                                   associations) == []


def test_the_stand_in_refuses_what_hubspot_refuses() -> None:
    import urllib.error
    import urllib.request

    with FakeHubSpot() as hubspot:
        deal = hubspot.add("deal", {"dealname": "x"})

        def send(method: str, path: str, doc: Any = None, token: str = hubspot.token) -> int:
            request = urllib.request.Request(hubspot.url + path, method=method, data=None if doc is None else body(doc),
                                             headers={"Authorization": f"Bearer {token}", **(
                                                 {"Content-Type": "application/json"} if doc is not None else {})})
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as err:
                return err.code

        assert send("GET", f"/crm/v3/objects/deals/{deal}") == 200
        assert send("GET", f"/crm/v3/objects/deals/{deal}", token="wrong") == 401
        assert send("GET", "/crm/v3/objects/deals/424242") == 404
        assert send("PATCH", f"/crm/v3/objects/deals/{deal}", {"properties": {"no_such_property": "1"}}) == 400
        assert send("PATCH", f"/crm/v3/objects/deals/{deal}", {"properties": {"dealname": 5}}) == 400
        search = {"filterGroups": [], "properties": [], "sorts": [], "limit": 201, "after": "0"}
        assert send("POST", "/crm/v3/objects/deals/search", search) == 400
        assert send("POST", "/crm/v3/objects/deals/search", {**search, "limit": 100, "after": "9950"}) == 400
        assert len(hubspot.violations) == 5  # what billflow must never cause (an unknown id is no violation)
