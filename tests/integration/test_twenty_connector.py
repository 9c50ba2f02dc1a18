"""TwentyConnector against FakeTwenty: lookups, write-back, and how failures are classified."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from billflow.connectors import get_crm
from billflow.connectors.twenty import TwentyConnector, _plural
from billflow.errors import ConfigurationError, TargetRejected, TransientError
from billflow.storage.secrets import Connection

from tests.fakes.signing import twenty_event
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace

COMPANY_ID = "8fd9c244-1456-454b-b624-3f30b44e1144"
PERSON_ID = "2ae94757-723e-44e5-ae76-3eb3c18cfd45"
OPPORTUNITY_ID = "bde53504-c80c-4c1b-ba92-7bd1c914fb22"
UNKNOWN_ID = "5d0c3c9e-0a8e-4bd4-9d46-3f4c0e1f2a77"
# The custom fields a workspace creates for billflow's write-back (Twenty lists them in its OpenAPI).
WRITE_BACK_FIELDS = {
    "opportunity": {"billflowInvoiceId": {"type": "string"}},
    "company": {"stripeCustomerId": {"type": "string"}},
}


@pytest.fixture
def twenty() -> Iterator[FakeTwenty]:
    with FakeTwenty(custom_fields=WRITE_BACK_FIELDS) as fake:
        fake.seed(load_sample_workspace())
        yield fake


@pytest.fixture
def crm(aws: None) -> TwentyConnector:
    """On moto's counters table: list calls (the company's people, line items) take the key's budget."""
    return TwentyConnector()


@pytest.fixture
def won_record() -> dict[str, Any]:
    record: dict[str, Any] = twenty_event("opportunity-won")["record"]
    return record


def test_the_registry_gives_this_connector_for_twenty_connections() -> None:
    assert isinstance(get_crm("twenty"), TwentyConnector)
    assert TwentyConnector.kind == "twenty"


# --- lookup --------------------------------------------------------------------------------------
def test_lookup_fetches_the_company_and_the_point_of_contact(
    twenty: FakeTwenty, crm: TwentyConnector, won_record: dict[str, Any]
) -> None:
    found = crm.lookup(twenty.connection(), "opportunity", won_record)

    assert found["company"] == twenty.get("company", COMPANY_ID)
    assert found["company"]["name"] == "Acme Robotics"
    assert found["company"]["address"]["addressCity"] == "San Francisco"
    assert found["company"]["domainName"]["primaryLinkUrl"] == "https://acme-robotics.example.com"
    assert found["contact"] == twenty.get("person", PERSON_ID)
    assert found["contact"]["name"] == {"firstName": "Maya", "lastName": "Chen"}
    assert found["contact"]["emails"]["primaryEmail"] == "maya.chen@acme-robotics.example.com"

    assert found["people"] == []  # the company's other people: Maya is its only one
    calls = [(r.method, r.path, r.query) for r in twenty.requests]
    assert calls == [
        ("GET", f"/rest/companies/{COMPANY_ID}", {"depth": ["0"]}),
        ("GET", f"/rest/people/{PERSON_ID}", {"depth": ["0"]}),
        ("GET", "/rest/people", {"filter": [f'companyId[eq]:"{COMPANY_ID}"'], "order_by": ["id[AscNullsFirst]"],
                                 "limit": ["50"], "depth": ["0"]}),
    ]
    assert all(r.headers["authorization"] == f"Bearer {twenty.api_key}" for r in twenty.requests)
    assert twenty.violations == []


def test_lookup_without_ids_makes_no_call(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    record = {"id": OPPORTUNITY_ID, "companyId": None, "pointOfContactId": ""}
    assert crm.lookup(twenty.connection(), "opportunity", record) == {"company": None, "contact": None}
    assert twenty.requests == []


def test_lookup_with_only_a_company(twenty: FakeTwenty, crm: TwentyConnector, won_record: dict[str, Any]) -> None:
    won_record["pointOfContactId"] = None
    found = crm.lookup(twenty.connection(), "opportunity", won_record)
    assert found["company"]["id"] == COMPANY_ID
    assert found["contact"] is None
    assert [p["id"] for p in found["people"]] == [PERSON_ID]  # no point of contact: every person is "other"
    assert len(twenty.requests) == 2
    assert twenty.violations == []


def test_lookup_of_a_deleted_company_gives_none(
    twenty: FakeTwenty, crm: TwentyConnector, won_record: dict[str, Any]
) -> None:
    won_record["companyId"] = UNKNOWN_ID
    found = crm.lookup(twenty.connection(), "opportunity", won_record)
    assert found["company"] is None
    assert found["contact"]["id"] == PERSON_ID
    assert twenty.violations == []


# --- get_record ----------------------------------------------------------------------------------
def test_get_record_returns_the_record_inside_data(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    record = crm.get_record(twenty.connection(), "opportunity", OPPORTUNITY_ID)
    assert record == twenty.get("opportunity", OPPORTUNITY_ID)
    assert record is not None
    assert record["amount"] == {"amountMicros": 12_500_000_000, "currencyCode": "USD"}
    assert "company" not in record  # depth=0: no embedded relations
    assert twenty.violations == []


def test_an_unknown_id_is_none_not_an_error(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    assert crm.get_record(twenty.connection(), "company", UNKNOWN_ID) is None
    assert twenty.violations == []


def test_older_twenty_record_not_found_as_400_is_none_too(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    # Twenty before its 404 answered BadRequestException "Record not found" for an unknown id.
    twenty.fail_next(400, body={"statusCode": 400, "error": "BadRequestException", "messages": ["Record not found"]})
    assert crm.get_record(twenty.connection(), "company", UNKNOWN_ID) is None


def test_a_base_url_that_already_ends_in_rest_is_accepted(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    settings = {**twenty.connection_settings(), "base_url": twenty.url + "/rest/"}
    connection = Connection(name="crm", type="twenty", settings=settings)
    assert crm.get_record(connection, "person", PERSON_ID) is not None
    assert twenty.requests[-1].path == f"/rest/people/{PERSON_ID}"
    assert twenty.violations == []


def test_a_record_id_cannot_leave_the_objects_path(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    with pytest.raises(TargetRejected):
        crm.get_record(twenty.connection(), "opportunity", f"../companies/{COMPANY_ID}")
    (sent,) = twenty.requests
    assert sent.path.startswith("/rest/opportunities/")
    assert sent.path.count("/") == 3  # the id was escaped, not followed
    assert any("is not a 'uuid'" in v for v in twenty.violations)  # and Twenty would refuse it


# --- update_record -------------------------------------------------------------------------------
def test_write_back_is_one_patch_twenty_accepts(
    twenty: FakeTwenty, crm: TwentyConnector
) -> None:
    crm.update_record(twenty.connection(), "opportunity", OPPORTUNITY_ID, {"billflowInvoiceId": "in_1QxYz"})

    assert twenty.patched("opportunity", OPPORTUNITY_ID) == {"billflowInvoiceId": "in_1QxYz"}
    stored = twenty.get("opportunity", OPPORTUNITY_ID)
    assert stored is not None
    assert stored["billflowInvoiceId"] == "in_1QxYz"
    assert stored["updatedBy"]["source"] == "API"
    (sent,) = twenty.calls("PATCH", f"/rest/opportunities/{OPPORTUNITY_ID}")
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.body) == {"billflowInvoiceId": "in_1QxYz"}
    assert twenty.violations == []


def test_nothing_to_write_makes_no_call(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    crm.update_record(twenty.connection(), "opportunity", OPPORTUNITY_ID, {})
    assert twenty.requests == []


def test_write_back_to_the_company(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    crm.update_record(twenty.connection(), "company", COMPANY_ID, {"stripeCustomerId": "cus_Q1w2e3"})
    assert twenty.patched("company", COMPANY_ID) == {"stripeCustomerId": "cus_Q1w2e3"}
    assert twenty.calls("PATCH", f"/rest/companies/{COMPANY_ID}")
    assert twenty.violations == []


def test_a_composite_field_update_keeps_the_other_sub_fields(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    crm.update_record(twenty.connection(), "opportunity", OPPORTUNITY_ID, {"amount": {"amountMicros": 14e9}})
    stored = twenty.get("opportunity", OPPORTUNITY_ID)
    assert stored is not None
    assert stored["amount"] == {"amountMicros": 14e9, "currencyCode": "USD"}
    assert twenty.violations == []


def test_a_field_the_workspace_does_not_have_is_rejected_with_twentys_words(crm: TwentyConnector) -> None:
    with FakeTwenty() as bare:  # no custom fields created
        bare.seed(load_sample_workspace())
        with pytest.raises(TargetRejected, match="billflowInvoiceId") as caught:
            crm.update_record(bare.connection(), "opportunity", OPPORTUNITY_ID, {"billflowInvoiceId": "in_1"})
        assert not isinstance(caught.value, TransientError)
        assert caught.value.details["status"] == 400
        assert bare.patches == []
        assert bare.violations  # billflow sent something Twenty refuses: the fake says so


def test_a_wrong_type_is_rejected(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    with pytest.raises(TargetRejected, match="not of type 'string'"):
        crm.update_record(twenty.connection(), "opportunity", OPPORTUNITY_ID, {"name": 14})
    assert twenty.patches == []
    assert len(twenty.violations) == 1


def test_patching_an_unknown_record_is_rejected(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    with pytest.raises(TargetRejected, match="Record not found"):
        crm.update_record(twenty.connection(), "opportunity", UNKNOWN_ID, {"billflowInvoiceId": "in_1"})


# --- failures ------------------------------------------------------------------------------------
def test_a_wrong_api_key_is_final(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    wrong = Connection(name="crm", type="twenty", settings={**twenty.connection_settings(), "api_key": "revoked"})
    with pytest.raises(TargetRejected, match="401") as caught:
        crm.get_record(wrong, "opportunity", OPPORTUNITY_ID)
    assert not isinstance(caught.value, TransientError)
    assert "revoked" not in str(caught.value)  # the key never reaches a message
    assert "Token invalid" in str(caught.value)
    assert twenty.violations == [f"GET /rest/opportunities/{OPPORTUNITY_ID}: 401, missing or wrong API key"]


def test_an_outage_is_transient_and_honours_retry_after(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    twenty.fail_next(503, retry_after="7")
    with pytest.raises(TransientError) as caught:
        crm.get_record(twenty.connection(), "opportunity", OPPORTUNITY_ID)
    assert caught.value.retry_after_seconds == 7.0
    assert caught.value.details["status"] == 503
    # The state machine's retry then succeeds.
    assert crm.get_record(twenty.connection(), "opportunity", OPPORTUNITY_ID) is not None
    assert twenty.violations == []


def test_an_outage_during_write_back_is_transient(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    twenty.fail_next(502)
    with pytest.raises(TransientError):
        crm.update_record(twenty.connection(), "opportunity", OPPORTUNITY_ID, {"billflowInvoiceId": "in_1"})
    assert twenty.patches == []


def test_rate_limiting_is_transient(twenty: FakeTwenty, crm: TwentyConnector, won_record: dict[str, Any]) -> None:
    twenty.fail_next(429, retry_after="2", body={"statusCode": 429, "messages": ["ThrottlerException"]})
    with pytest.raises(TransientError) as caught:
        crm.lookup(twenty.connection(), "opportunity", won_record)
    assert caught.value.retry_after_seconds == 2.0


def test_an_unreachable_twenty_is_transient(crm: TwentyConnector) -> None:
    fake = FakeTwenty().start()
    connection = fake.connection()
    fake.stop()  # the port is closed now: connection refused
    with pytest.raises(TransientError, match="unreachable"):
        crm.get_record(connection, "opportunity", OPPORTUNITY_ID)


@pytest.mark.parametrize("missing", ["base_url", "api_key"])
def test_an_incomplete_connection_is_a_configuration_error(
    twenty: FakeTwenty, crm: TwentyConnector, missing: str
) -> None:
    settings = {k: v for k, v in twenty.connection_settings().items() if k != missing}
    with pytest.raises(ConfigurationError, match=missing):
        crm.get_record(Connection(name="crm", type="twenty", settings=settings), "opportunity", OPPORTUNITY_ID)
    assert twenty.requests == []


# --- object names --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("singular", "plural"),
    [("opportunity", "opportunities"), ("company", "companies"), ("person", "people"), ("note", "notes"),
     ("invoiceRequest", "invoiceRequests"), ("delivery", "deliveries"), ("survey", "surveys"),
     ("address", "addresses"), ("people", "people")],
)
def test_object_plurals(singular: str, plural: str) -> None:
    assert _plural(Connection(name="crm", type="twenty", settings={}), singular) == plural


def test_a_connection_can_name_a_custom_objects_plural() -> None:
    connection = Connection(name="crm", type="twenty", settings={"object_plurals": {"cactus": "cacti"}})
    assert _plural(connection, "cactus") == "cacti"
