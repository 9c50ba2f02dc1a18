"""GenericCrmConnector (the worked example's Pipedrive configuration) against the Pipedrive API v2 stand-in:
records, lookups, write-back, search with paging and filters, and failures classified as every connector's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from billflow.connectors import get_crm
from billflow.connectors.base import RecordFilter, RecordQuery, iter_records
from billflow.connectors.generic_crm import GenericCrmConnector, api_problems
from billflow.errors import ConfigurationError, TargetRejected, TransientError
from billflow.netguard import ForbiddenTarget
from billflow.storage.secrets import Connection

from billflow_local.standins.pipedrive_server import FakePipedrive, pipedrive_time

FIELD = "c1a2b3d4e5f60718293a4b5c6d7e8f9012345678"


@pytest.fixture
def pipedrive() -> Iterator[FakePipedrive]:
    with FakePipedrive(custom_fields=[FIELD]) as fake:
        fake.add_organization(312, "Acme GmbH", street="Hauptstrasse 1", city="Berlin", postal_code="10115",
                              country="Germany")
        fake.add_person(771, "Ada Lovelace", email="ada@acme.example", org_id=312)
        fake.add_deal(4521, "Acme rollout", value=12500.5, currency="EUR", status="won", org_id=312, person_id=771)
        yield fake


def connection(pipedrive: FakePipedrive, **overrides: object) -> Connection:
    settings = pipedrive.connection_settings(**overrides)
    return Connection(name="pipedrive", type="generic", settings=settings)


def test_the_registry_gives_the_generic_connector_and_the_example_configuration_is_valid(
    pipedrive: FakePipedrive,
) -> None:
    assert isinstance(get_crm("generic"), GenericCrmConnector)
    assert api_problems(pipedrive.connection_settings()) == []
    problems = api_problems({"api": {"record": {"url": 3}, "lookups": {"company": {"url": "x", "result": "data.{"}}},
                             "record_mapping": "$merge(["})
    assert [p.split(":")[0] for p in problems] == ["record_mapping", "api.record", "api.lookups.company.result"]
    assert "invalid JSONata at position" in problems[2]


def test_a_record_in_the_shape_webhooks_deliver_it_and_its_lookups(pipedrive: FakePipedrive) -> None:
    crm, conn = GenericCrmConnector(), connection(pipedrive)

    deal = crm.get_record(conn, "deal", "4521")
    assert deal is not None
    lookup = crm.lookup(conn, "deal", deal)

    assert deal["id"] == "4521" and deal["name"] == "Acme rollout"
    assert deal["amount"] == {"amountMicros": 12_500_500_000, "currencyCode": "EUR"}
    assert lookup["company"] == {"id": "312", "name": "Acme GmbH", "address": {
        "addressStreet1": "Hauptstrasse 1", "addressCity": "Berlin", "addressPostcode": "10115",
        "addressCountry": "Germany"}}
    assert lookup["contact"] == {"id": "771", "name": {"firstName": "Ada", "lastName": "Lovelace"},
                                 "emails": {"primaryEmail": "ada@acme.example"}}
    assert crm.get_record(conn, "deal", "999") is None  # Pipedrive's 404
    assert crm.lookup(conn, "deal", {**deal, "org_id": None, "person_id": 999}) == {"company": None, "contact": None}
    assert crm.modified_at(conn, deal) == datetime.fromisoformat(deal["update_time"].replace("Z", "+00:00"))
    assert all(r.headers["x-api-token"] == pipedrive.api_token for r in pipedrive.requests)
    assert pipedrive.violations == []


def test_write_back_sends_dotted_fields_nested_as_pipedrive_takes_custom_fields(pipedrive: FakePipedrive) -> None:
    crm, conn = GenericCrmConnector(), connection(pipedrive)

    crm.update_record(conn, "deal", "4521", {f"custom_fields.{FIELD}": "in_123"})
    crm.update_record(conn, "deal", "4521", {})  # nothing to write: no call

    assert pipedrive.patches == [(4521, {"custom_fields": {FIELD: "in_123"}})]
    with pytest.raises(TargetRejected, match="400"):
        crm.update_record(conn, "deal", "4521", {"no_such_field": 1})


def test_search_pages_with_the_window_and_translated_filters(pipedrive: FakePipedrive) -> None:
    now = datetime.now(UTC)
    for i in range(7):
        pipedrive.add_deal(5000 + i, f"Deal {i}", status="won" if i % 2 == 0 else "open",
                           update_time=pipedrive_time(now - timedelta(minutes=10 + i)))
    pipedrive.add_deal(6000, "Too old", status="won", update_time=pipedrive_time(now - timedelta(days=3)))
    crm, conn = GenericCrmConnector(), connection(pipedrive)
    query = RecordQuery("deal", (RecordFilter("status", "eq", "won"), RecordFilter("value", "gt", 0)),
                        updated_after=now - timedelta(hours=1), updated_before=now + timedelta(minutes=1), page_size=2)

    found = list(iter_records(crm, conn, query))

    assert sorted(r["id"] for r in found) == ["4521", "5000", "5002", "5004", "5006"]
    listing = pipedrive.calls("GET", "/api/v2/deals")
    assert len(listing) == 3  # 5 records, 2 a page
    assert all(r.query["status"] == ["won"] and r.query["limit"] == ["2"] for r in listing)
    assert "cursor" not in listing[0].query and all("cursor" in r.query for r in listing[1:])


def test_failures_are_classified_like_every_connector_and_unconfigured_calls_say_so(
    pipedrive: FakePipedrive,
) -> None:
    crm = GenericCrmConnector()
    with pytest.raises(TargetRejected, match="401"):
        crm.get_record(connection(pipedrive, api_token="wrong"), "deal", "4521")
    with pytest.raises(TransientError):
        crm.get_record(connection(pipedrive, base_url="http://127.0.0.1:9"), "deal", "4521")
    bare = Connection(name="close", type="generic", settings={"base_url": pipedrive.url})
    with pytest.raises(ConfigurationError, match=r"no api\.record call"):
        crm.get_record(bare, "deal", "1")
    assert crm.lookup(bare, "deal", {"id": "1"}) == {}  # no lookups configured: nothing to fetch


def test_the_ssrf_guard_still_applies_to_configured_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    import billflow.settings

    monkeypatch.setenv("ALLOW_LOOPBACK_TARGETS", "false")
    billflow.settings.get_settings.cache_clear()
    try:
        call = {"url": "{base_url}/latest/meta-data/{record_id}"}
        conn = Connection(name="evil", type="generic",
                          settings={"base_url": "http://169.254.169.254", "api": {"record": call}})
        with pytest.raises(ForbiddenTarget, match="cloud metadata endpoint"):
            GenericCrmConnector().get_record(conn, "deal", "iam")
    finally:
        billflow.settings.get_settings.cache_clear()
