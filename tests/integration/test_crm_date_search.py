"""What date rules ask each CRM, against the stand-ins: HubSpot's date and datetime properties (dates at midnight
UTC, epoch milliseconds in search and webhooks, the properties a search must ask for, its filter limits), the
generic source's configured search (ranges it can express, no empty parameters), and the due index kept by
HubSpot's one-property deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from billflow.connectors.base import RecordFilter, RecordQuery, iter_records
from billflow.connectors.generic_crm import GenericCrmConnector, api_problems
from billflow.connectors.hubspot import HubSpotConnector, SearchThrottle
from billflow.errors import ConfigurationError
from billflow.logic.schedule import index_record, occurrence_after, search_window
from billflow.models.events import CrmEvent
from billflow.models.rules import DateTrigger, Rule
from billflow.storage.secrets import Connection

from billflow_local.standins.hubspot_server import FakeHubSpot
from billflow_local.standins.pipedrive_server import FakePipedrive, pipedrive_time
from billflow_local.standins.twenty_server import FakeTwenty

NEW_YORK = ZoneInfo("America/New_York")


def ms(day: date) -> str:
    return str(int(datetime.combine(day, time(0), UTC).timestamp() * 1000))


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with FakeHubSpot() as server:
        server.add_property("deal", "renewal_date", type="date")
        yield server


@pytest.fixture
def crm() -> HubSpotConnector:
    return HubSpotConnector(SearchThrottle(sleep=lambda _: None, clock=iter(range(0, 10**9, 10)).__next__))


def renewal_rule(**trigger: Any) -> Rule:
    return Rule.model_validate({
        "id": "renewal", "tenant": "acme", "source": "hubspot", "object": "deal",
        "trigger": {"type": "date", "field": "renewal_date", "offset_days": -3, "at": "09:00",
                    "timezone": "America/New_York", **trigger},
        "criteria": [{"field": "dealstage", "comparator": "is", "value": "closedwon"}],
        "actions": [{"type": "notification", "options": {"message": "renew"}}],
    })


def test_hubspot_keeps_date_properties_as_calendar_dates_and_refuses_other_times(hubspot: FakeHubSpot) -> None:
    day = date(2026, 3, 5)
    by_text = hubspot.add("deal", {"dealname": "a", "renewal_date": "2026-03-05"})
    by_ms = hubspot.add("deal", {"dealname": "b", "renewal_date": ms(day),
                                 "closedate": str(int(datetime(2026, 3, 5, 23, 30, tzinfo=UTC).timestamp() * 1000))})
    assert hubspot.get("deal", by_text)["properties"]["renewal_date"] == "2026-03-05"
    stored = hubspot.get("deal", by_ms)["properties"]
    assert (stored["renewal_date"], stored["closedate"]) == ("2026-03-05", "2026-03-05T23:30:00.000Z")
    with pytest.raises(ValueError, match="not midnight"):
        hubspot.add("deal", {"dealname": "c", "renewal_date": str(int(ms(day)) + 3_600_000)})


def test_a_date_rules_search_asks_hubspot_for_the_date_in_epoch_ms_and_reads_it_back(
    hubspot: FakeHubSpot, crm: HubSpotConnector,
) -> None:
    rule = renewal_rule()
    inside = hubspot.add("deal", {"dealname": "in", "dealstage": "closedwon", "renewal_date": "2026-03-08"})
    hubspot.add("deal", {"dealname": "later", "dealstage": "closedwon", "renewal_date": "2026-03-20"})
    hubspot.add("deal", {"dealname": "none", "dealstage": "closedwon"})
    since, until = datetime(2026, 3, 5, 12, tzinfo=UTC), datetime(2026, 3, 5, 18, tzinfo=UTC)
    start, end = search_window(rule, since, until)
    # The connection does not list renewal_date among its properties: the search asks for it all the same.
    query = RecordQuery("deal", (RecordFilter("renewal_date", "gte", start), RecordFilter("renewal_date", "lt", end),
                                 RecordFilter("dealstage", "eq", "closedwon")))

    found = list(iter_records(crm, hubspot.connection(), query))

    assert [r["id"] for r in found] == [inside]
    assert found[0]["renewal_date"] == "2026-03-08"
    [search] = [r.json() for r in hubspot.requests if r.path.endswith("/search")]
    filters = search["filterGroups"][0]["filters"]
    assert {f["operator"]: f["value"] for f in filters if f["propertyName"] == "renewal_date"} == {
        "GTE": ms(date(2026, 3, 6)), "LT": ms(date(2026, 3, 10))}  # the 8th (5th + 3 days), two days either side
    assert "renewal_date" in search["properties"]
    # The calendar date, 09:00 in New York three days before: the 5th, not the 4th (midnight UTC on the 8th
    # is the evening of the 7th in New York).
    due = occurrence_after(rule.trigger, found[0]["renewal_date"], NEW_YORK, since)
    assert due == datetime(2026, 3, 5, 9, tzinfo=NEW_YORK)
    assert hubspot.violations == []


def test_hubspot_searches_keep_to_ten_filters_a_group(hubspot: FakeHubSpot, crm: HubSpotConnector) -> None:
    hubspot.add("deal", {"dealname": "x", "dealstage": "closedwon", "renewal_date": "2026-03-08"})
    bounds = (RecordFilter("renewal_date", "gte", datetime(2026, 3, 1, tzinfo=UTC)),
              RecordFilter("renewal_date", "lt", datetime(2026, 3, 9, tzinfo=UTC)))
    equalities = tuple(RecordFilter("dealstage", "eq", "closedwon") for _ in range(12))
    query = RecordQuery("deal", bounds + equalities, updated_after=datetime(2026, 1, 1, tzinfo=UTC))

    assert len(crm.search_records(hubspot.connection(), query).records) == 1
    [search] = [r.json() for r in hubspot.requests if r.path.endswith("/search")]
    assert len(search["filterGroups"][0]["filters"]) == 10  # window + bounds kept; equalities past 10 dropped
    too_many = RecordQuery("deal", tuple(RecordFilter("amount", "gt", n) for n in range(11)))
    with pytest.raises(ConfigurationError, match="at most 10 filters"):
        crm.search_records(hubspot.connection(), too_many)
    assert hubspot.violations == []


def test_the_stand_in_refuses_what_hubspot_refuses_in_a_search(hubspot: FakeHubSpot, crm: HubSpotConnector) -> None:
    groups = [{"filters": [{"propertyName": "dealname", "operator": "EQ", "value": str(n)} for n in range(11)]}]
    answer = crm._send(hubspot.connection(), "POST", "/crm/v3/objects/deals/search",
                       body={"filterGroups": groups, "limit": 10, "after": "0"})
    assert answer.status == 400 and hubspot.violations


class RecordingIndex:
    def __init__(self) -> None:
        self.put_items: list[tuple[str, datetime]] = []
        self.removed: list[str] = []

    def put(self, event: CrmEvent, rule: Rule, due: datetime) -> None:
        self.put_items.append((event.record_id, due))

    def remove(self, record_key: str, rule_id: str, only_if_due: datetime | None = None) -> None:
        self.removed.append(record_key)


def hubspot_event(record: dict[str, Any], action: str = "updated") -> CrmEvent:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return CrmEvent(event_id="e", tenant="acme", source="hubspot", object="deal", action=action,
                    record_id="42", record={"id": "42", **record}, changed_fields=list(record),
                    occurred_at=now, received_at=now)


def test_hubspot_deliveries_index_epoch_ms_dates_and_leave_the_item_when_they_carry_another_property() -> None:
    rule = renewal_rule(repeat="yearly")
    index = RecordingIndex()
    now = datetime(2026, 3, 1, tzinfo=UTC)

    assert index_record(hubspot_event({"renewal_date": ms(date(2026, 3, 8))}), [rule], index, now) == 1
    assert index.put_items == [("42", datetime(2026, 3, 5, 9, tzinfo=NEW_YORK).astimezone(UTC))]
    assert index_record(hubspot_event({"dealname": "renamed"}), [rule], index, now) == 0
    assert index.removed == []  # a delivery of another property says nothing about the date
    index_record(hubspot_event({}, action="deleted"), [rule], index, now)
    assert index.removed == ["acme#hubspot#deal#42"]
    assert isinstance(rule.trigger, DateTrigger)


# --- the generic source's configured search ------------------------------------------------------------------
def test_a_generic_search_sends_the_ranges_it_is_given_parameters_for_and_no_empty_parameters() -> None:
    now = datetime.now(UTC)
    with FakePipedrive() as pipedrive:
        pipedrive.add_deal(1, "recent", update_time=pipedrive_time(now - timedelta(hours=2)))
        pipedrive.add_deal(2, "old", update_time=pipedrive_time(now - timedelta(days=3)))
        settings = pipedrive.connection_settings()
        # Pipedrive's deal list can bound update_time (updated_since/until), and nothing else of a deal's dates.
        settings["api"]["search"]["ranges"] = {"update_time": {"gte": "updated_since", "lt": "updated_until"}}
        connection = Connection(name="pipedrive", type="generic", settings=settings)
        crm = GenericCrmConnector()
        dated = RecordQuery("deal", (RecordFilter("update_time", "gte", now - timedelta(days=1)),
                                     RecordFilter("update_time", "lt", now),
                                     RecordFilter("expected_close_date", "gte", now)))

        assert [r["id"] for r in iter_records(crm, connection, dated)] == ["1"]
        unbounded = RecordQuery("deal", (RecordFilter("expected_close_date", "gte", now),))
        assert sorted(r["id"] for r in iter_records(crm, connection, unbounded)) == ["1", "2"]

        first, second = pipedrive.calls("GET", "/api/v2/deals")
        assert first.query["updated_since"] == [pipedrive_time(now - timedelta(days=1))]
        assert "updated_since" not in second.query and "updated_until" not in second.query
        assert pipedrive.violations == []
    assert api_problems({"api": {"search": {"url": "x", "ranges": {"update_time": {"after": "x"}}}}}) == [
        "api.search.ranges.update_time: bounds (gte, gt, lt, lte) naming query parameters, and optionally "
        "format (date or datetime)"]


def test_an_equality_twenty_cannot_express_is_left_to_the_run_not_the_whole_search(aws: None) -> None:
    from billflow.connectors.twenty import TwentyConnector
    from billflow.logic.schedule import _search

    with FakeTwenty() as twenty:
        deal = twenty.add_opportunity("Quoted", stage="CUSTOMER", close_date="2026-03-08T00:00:00.000Z")
        bounds = (RecordFilter("closeDate", "gte", datetime(2026, 3, 6, tzinfo=UTC)),
                  RecordFilter("closeDate", "lt", datetime(2026, 3, 10, tzinfo=UTC)))
        # Twenty's filter syntax has no escape for a quote: refused before any call.
        query = RecordQuery("opportunity", (*bounds, RecordFilter("name", "eq", 'say "hi"')))

        found = list(_search(TwentyConnector(), twenty.connection(), query, len(bounds)))

        assert [r["id"] for r in found] == [deal["id"]]
        [call] = [r for r in twenty.requests if r.method == "GET"]
        assert "name" not in call.query["filter"][0] and "closeDate[gte]" in call.query["filter"][0]
        with pytest.raises(ConfigurationError):
            list(_search(TwentyConnector(), twenty.connection(), RecordQuery("opportunity", (
                RecordFilter("closeDate", "gt", None),)), 1))
