"""The Twenty contract the fake enforces: it accepts what Twenty accepts and refuses what Twenty refuses."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.signing import EVENTS_DIR, twenty_event
from tests.fakes.twenty_contract import DEFAULT_STAGES, SPEC_PATH, TwentyContract
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace

OPP = "bde53504-c80c-4c1b-ba92-7bd1c914fb22"
COMPANY = "8fd9c244-1456-454b-b624-3f30b44e1144"
PERSON = "2ae94757-723e-44e5-ae76-3eb3c18cfd45"
JSON = {"content-type": "application/json"}
CUSTOM_STAGES = ("NEW", "SCREENING", "MEETING", "PROPOSAL", "CLOSED_WON")


@pytest.fixture(scope="module")
def contract() -> TwentyContract:
    return TwentyContract()


def patch_problems(contract: TwentyContract, plural: str, record_id: str, body: Any) -> list[str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return contract.check_request("PATCH", f"/rest/{plural}/{record_id}", {}, JSON, raw)


# --- the trimmed copy ----------------------------------------------------------------------------
def test_the_trimmed_spec_holds_the_nine_operations_and_everything_they_reference() -> None:
    spec = json.loads(SPEC_PATH.read_text())
    assert {(p, m) for p, item in spec["paths"].items() for m in item} == {
        (f"/{plural}/{{id}}", method)
        for plural in ("companies", "people", "opportunities") for method in ("get", "patch")
    } | {(f"/{plural}", "get") for plural in ("companies", "people", "opportunities")}  # lists: search
    refs: set[str] = set()
    stack: list[Any] = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.add(node["$ref"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    for ref in refs:  # a dangling reference would make the validator fail on the first answer using it
        target: Any = spec
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    assert SPEC_PATH.stat().st_size < 100_000


# --- requests it accepts -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("plural", "record_id", "body"),
    [
        ("opportunities", OPP, {"stage": "CUSTOMER"}),
        ("opportunities", OPP, {"amount": {"amountMicros": 14000000000, "currencyCode": "USD"}}),
        ("opportunities", OPP, {"closeDate": "2026-03-31T00:00:00.000Z", "name": "Renewal", "position": 2.5}),
        ("opportunities", OPP, {"companyId": COMPANY, "pointOfContactId": PERSON}),
        ("companies", COMPANY, {"name": "Acme Robotics Inc.", "employees": 250}),
        ("companies", COMPANY, {"address": {"addressCity": "Oakland", "addressPostcode": "94607"}}),
        ("companies", COMPANY, {"domainName": {"primaryLinkUrl": "https://acme.example.com"}}),
        ("people", PERSON, {"name": {"firstName": "Maya", "lastName": "Chen-Ortiz"}}),
        ("people", PERSON, {"emails": {"primaryEmail": "maya@acme.example.com", "additionalEmails": []}}),
    ],
)
def test_good_patches_are_accepted(contract: TwentyContract, plural: str, record_id: str, body: Any) -> None:
    assert patch_problems(contract, plural, record_id, body) == []


@pytest.mark.parametrize("depth", [None, "0", "1"])
def test_good_reads_are_accepted(contract: TwentyContract, depth: str | None) -> None:
    query = {} if depth is None else {"depth": [depth]}
    for path in (f"/rest/opportunities/{OPP}", f"/rest/companies/{COMPANY}", f"/rest/people/{PERSON}"):
        assert contract.check_request("GET", path, query, {}, b"") == []


# --- requests it refuses -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"invoiceId": "in_1"}, "'invoiceId' was unexpected"),
        ({"amount": {"amountMicros": 1, "currency": "USD"}}, "'currency' was unexpected"),
        ({"amount": {"amountMicros": "14000000000", "currencyCode": "USD"}}, "is not of type 'number'"),
        ({"amount": 14000}, "is not of type 'object'"),
        ({"stage": "CLOSED_WON"}, "is not one of"),
        ({"stage": "customer"}, "is not one of"),
        ({"closeDate": "31/03/2026"}, "is not a 'date-time'"),
        ({"companyId": "acme"}, "is not a 'uuid'"),
        ({"name": ["Renewal"]}, "is not of type 'string'"),
        ({"position": True}, "is not of type 'number'"),
        ([{"stage": "CUSTOMER"}], "is not of type 'object'"),
    ],
)
def test_bad_opportunity_patches_are_refused(contract: TwentyContract, body: Any, problem: str) -> None:
    problems = patch_problems(contract, "opportunities", OPP, body)
    assert any(problem in p for p in problems), problems


def test_a_company_patch_with_a_person_field_is_refused(contract: TwentyContract) -> None:
    problems = patch_problems(contract, "companies", COMPANY, {"emails": {"primaryEmail": "a@b.example"}})
    assert problems == ["body: Additional properties are not allowed ('emails' was unexpected)"]


def test_a_patch_must_have_a_json_body(contract: TwentyContract) -> None:
    path = f"/rest/opportunities/{OPP}"
    assert contract.check_request("PATCH", path, {}, JSON, b"") == ["the request body is required"]
    assert "not JSON" in contract.check_request("PATCH", path, {}, JSON, b"{stage: CUSTOMER}")[0]
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert "content type" in contract.check_request("PATCH", path, {}, form, b"stage=CUSTOMER")[0]


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "problem"),
    [
        ("GET", "/rest/opportunities/42", {}, b"", "is not a 'uuid'"),
        ("GET", f"/rest/opportunities/{OPP}", {"depth": ["2"]}, b"", "is not one of [0, 1]"),
        ("GET", f"/rest/opportunities/{OPP}", {"depth": ["all"]}, b"", "is not of type 'integer'"),
        ("GET", f"/rest/opportunities/{OPP}", {}, b"{}", "takes no body"),
        ("DELETE", f"/rest/opportunities/{OPP}", {}, b"", "no such operation"),
        ("GET", f"/rest/invoices/{OPP}", {}, b"", "no such operation"),
        ("GET", f"/opportunities/{OPP}", {}, b"", "no such operation"),  # the /rest prefix is part of it
    ],
)
def test_bad_requests_are_refused(
    contract: TwentyContract, method: str, path: str, query: dict[str, list[str]], body: bytes, problem: str
) -> None:
    problems = contract.check_request(method, path, query, JSON, body)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("Basic abc", None), ("Bearer ", None), ("", None)],
)
def test_the_bearer_token_is_read_as_the_spec_says(
    contract: TwentyContract, header: str, token: str | None
) -> None:
    assert contract.bearer_token({"authorization": header} if header else {}) == token


# --- a workspace's own spec ----------------------------------------------------------------------
def test_renamed_stages_replace_the_default_ones() -> None:
    custom = TwentyContract(stages=CUSTOM_STAGES)
    assert patch_problems(custom, "opportunities", OPP, {"stage": "CLOSED_WON"}) == []
    assert patch_problems(custom, "opportunities", OPP, {"stage": "CUSTOMER"})  # renamed away


def test_custom_fields_are_accepted_once_the_workspace_has_them() -> None:
    custom = TwentyContract(custom_fields={"opportunity": {"invoiceId": {"type": "string"}}})
    assert patch_problems(custom, "opportunities", OPP, {"invoiceId": "in_1"}) == []
    assert patch_problems(custom, "opportunities", OPP, {"invoiceId": 7})
    assert patch_problems(custom, "companies", COMPANY, {"invoiceId": "in_1"})  # only where created


def test_custom_fields_on_an_object_outside_the_trimmed_spec_are_a_mistake() -> None:
    with pytest.raises(KeyError, match="invoice"):
        TwentyContract(custom_fields={"invoice": {"number": {"type": "string"}}})


# --- responses -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", sorted(p.name for p in (EVENTS_DIR / "twenty").glob("*.json")))
def test_every_sample_webhook_record_is_a_record_twenty_could_return(sample: str) -> None:
    event = twenty_event(sample)
    stages = CUSTOM_STAGES if event["record"].get("stage") == "CLOSED_WON" else DEFAULT_STAGES
    contract = TwentyContract(stages=stages)
    assert contract.response_schema_errors(event["objectMetadata"]["nameSingular"], event["record"]) == []


def test_the_sample_workspace_records_are_records_twenty_could_return(contract: TwentyContract) -> None:
    for plural, singular in (("companies", "company"), ("people", "person"), ("opportunities", "opportunity")):
        for record in load_sample_workspace()[plural]:
            assert contract.response_schema_errors(singular, record) == [], record["id"]


def test_responses_are_checked_field_by_field(contract: TwentyContract) -> None:
    record = twenty_event("opportunity-won")["record"]
    good = {"data": {"opportunity": record}}
    assert contract.check_response("GET", f"/rest/opportunities/{OPP}", 200, good) == []
    record["amount"]["amountMicros"] = "12500000000"  # numeric text: what an older ORM leaked
    record["createdAt"] = "yesterday"
    assert contract.check_response("GET", f"/rest/opportunities/{OPP}", 200, good) == [
        "data.opportunity.amount.amountMicros: '12500000000' is not of type 'number'",
        "data.opportunity.createdAt: 'yesterday' is not a 'date-time'",
    ]


def test_nulls_are_accepted_in_answers(contract: TwentyContract) -> None:
    record = {"id": OPP, "amount": None, "closeDate": None, "companyId": None, "deletedAt": None, "stage": None}
    assert contract.response_schema_errors("opportunity", record) == []


def test_error_answers_have_twentys_error_shape(contract: TwentyContract) -> None:
    path = f"/rest/opportunities/{OPP}"
    not_found = {"statusCode": 404, "error": "NotFoundException", "messages": ["Record not found"]}
    assert contract.check_response("GET", path, 404, not_found) == []
    assert contract.check_response("GET", path, 404, {"statusCode": 404, "messages": "Record not found"})
    unauthorized = {"statusCode": 401, "message": "Token invalid.", "error": "Unauthorized"}
    assert contract.check_response("GET", path, 401, unauthorized) == []
    assert contract.check_response("GET", path, 204, None) == [
        "status 204 is not a documented answer of GET /opportunities/{id}"
    ]


# --- the fake holds itself to the contract -------------------------------------------------------
@pytest.fixture
def twenty() -> Iterator[FakeTwenty]:
    with FakeTwenty() as fake:
        fake.seed(load_sample_workspace())
        yield fake


def call(fake: FakeTwenty, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {fake.api_key}", "Content-Type": "application/json"}
    req = urllib.request.Request(fake.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_fake_embeds_relations_at_twentys_default_depth(twenty: FakeTwenty) -> None:
    status, body = call(twenty, "GET", f"/rest/opportunities/{OPP}")
    assert status == 200
    opportunity = body["data"]["opportunity"]
    assert opportunity["company"]["name"] == "Acme Robotics"
    assert opportunity["pointOfContact"]["emails"]["primaryEmail"] == "maya.chen@acme-robotics.example.com"
    status, body = call(twenty, "GET", f"/rest/companies/{COMPANY}?depth=1")
    assert {o["id"] for o in body["data"]["company"]["opportunities"]} == {
        OPP, "8850e910-7d2f-4b0e-ab19-37e2004f16ee",
    }
    assert twenty.violations == []


def test_the_fake_answers_a_refused_patch_like_twenty(twenty: FakeTwenty) -> None:
    status, body = call(twenty, "PATCH", f"/rest/opportunities/{OPP}", {"stage": "WON", "invoiceId": "x"})
    assert status == 400
    assert body["statusCode"] == 400
    assert body["error"] == "BadRequestException"
    assert len(body["messages"]) == 2
    assert len(twenty.violations) == 2
    assert twenty.patches == []
    stored = twenty.get("opportunity", OPP)
    assert stored is not None
    assert stored["stage"] == "PROPOSAL"


def test_the_fake_enforces_foreign_keys(twenty: FakeTwenty) -> None:
    unknown = "0e7c1d8a-44b1-4f6e-9a55-1f0f7d0b2c3d"
    status, body = call(twenty, "PATCH", f"/rest/opportunities/{OPP}", {"companyId": unknown})
    assert status == 400
    assert "foreign key" in body["messages"][0]
    assert twenty.violations


def test_the_fake_answers_unknown_routes_like_nest(twenty: FakeTwenty) -> None:
    status, body = call(twenty, "POST", "/rest/opportunities", {"name": "x"})
    assert status == 404
    assert body["messages"] == ["Cannot POST /rest/opportunities"]
    assert twenty.violations == ["POST /rest/opportunities: no such operation"]


def test_a_fake_that_drifts_from_twenty_is_caught(twenty: FakeTwenty) -> None:
    twenty.opportunities[OPP]["amount"] = "12500 USD"  # a shape Twenty never sends
    status, _ = call(twenty, "GET", f"/rest/opportunities/{OPP}?depth=0")
    assert status == 200
    assert twenty.violations == [
        f"GET /rest/opportunities/{OPP}: answer 200 is not Twenty's: "
        "data.opportunity.amount: '12500 USD' is not of type 'object'"
    ]


def test_a_seed_twenty_could_never_hold_is_refused() -> None:
    fake = FakeTwenty()
    with pytest.raises(ValueError, match="not a Twenty opportunity"):
        fake.add_opportunity("Bad", stage="CLOSED_WON")
    with pytest.raises(ValueError, match="not a Twenty company"):
        fake.add_company("Bad", employees="many")
