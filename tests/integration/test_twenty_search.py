"""TwentyConnector.search_records against FakeTwenty's list endpoints: Twenty's filter syntax, ordering,
cursor paging, the 200-record page limit and the per-API-key budget of 100 calls a minute."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from billflow.connectors.base import RecordFilter, RecordQuery, iter_records
from billflow.connectors.twenty import MAX_PAGE_SIZE, TwentyConnector, search_filter
from billflow.errors import ConfigurationError, TransientError
from billflow.storage.rate_limits import RateLimiter

from tests.fakes.twenty_server import FakeTwenty

MINUTE = 1_699_999_980.0  # the start of a minute window


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def twenty() -> Iterator[FakeTwenty]:
    with FakeTwenty(stages=("NEW", "PROPOSAL", "WON", "LOST")) as fake:
        yield fake


@pytest.fixture
def crm(aws: None) -> TwentyConnector:
    return TwentyConnector(rate_limiter=RateLimiter(clock=Clock(MINUTE + 1)))


def _at(day: int) -> str:
    return f"2026-03-{day:02d}T10:00:00.000Z"


def _seed(twenty: FakeTwenty) -> dict[str, dict[str, Any]]:
    acme = twenty.add_company("Acme")
    made = {
        "won-early": twenty.add_opportunity("Won early", stage="WON", amount_micros=5_000_000_000,
                                            company_id=acme["id"], updatedAt=_at(2)),
        "won-late": twenty.add_opportunity("Won late", stage="WON", amount_micros=1_000_000_000,
                                           updatedAt=_at(20)),
        "won-no-amount": twenty.add_opportunity("Won, no amount", stage="WON", updatedAt=_at(10)),
        "lost": twenty.add_opportunity("Lost", stage="LOST", amount_micros=7_000_000_000, updatedAt=_at(10)),
        "new": twenty.add_opportunity("New", stage="NEW", updatedAt=_at(11)),
    }
    return made


def _names(records: list[dict[str, Any]]) -> set[str]:
    return {r["name"] for r in records}


def test_filters_translate_to_twentys_syntax() -> None:
    query = RecordQuery(
        "opportunity",
        filters=(RecordFilter("stage", "eq", "WON"), RecordFilter("amount.amountMicros", "gt", 0),
                 RecordFilter("stage", "in", ["WON", "LOST"]), RecordFilter("invoiceId", "is_null")),
        updated_after=datetime(2026, 3, 1, tzinfo=UTC), updated_before=datetime(2026, 3, 2, 12, tzinfo=UTC))
    assert search_filter(query) == (
        'stage[eq]:"WON",amount.amountMicros[gt]:0,stage[in]:["WON","LOST"],invoiceId[is]:NULL,'
        'updatedAt[gte]:"2026-03-01T00:00:00.000Z",updatedAt[lt]:"2026-03-02T12:00:00.000Z"')


@pytest.mark.parametrize("bad", [
    RecordFilter("stage", "eq", 'say "hi"'),  # Twenty's parser has no escape for a quote
    RecordFilter("stage", "in", ["a,b"]),  # nor for a comma inside an in-list item
    RecordFilter("stage", "in", []),
    RecordFilter("stage[eq]:x,name", "eq", "x"),
    RecordFilter("stage", "gt", None),
])
def test_what_twenty_cannot_express_is_refused_before_any_call(bad: RecordFilter) -> None:
    with pytest.raises(ConfigurationError):
        search_filter(RecordQuery("opportunity", filters=(bad,)))


def test_each_comparator_selects_what_twenty_would(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    _seed(twenty)
    connection = twenty.connection()

    def names(*filters: RecordFilter, **window: datetime) -> set[str]:
        page = crm.search_records(connection, RecordQuery("opportunity", filters=filters, **window))
        return _names(page.records)

    assert names(RecordFilter("stage", "eq", "WON")) == {"Won early", "Won late", "Won, no amount"}
    assert names(RecordFilter("stage", "neq", "WON")) == {"Lost", "New"}
    assert names(RecordFilter("stage", "in", ["LOST", "NEW"])) == {"Lost", "New"}
    assert names(RecordFilter("amount.amountMicros", "gte", 5_000_000_000)) == {"Won early", "Lost"}
    assert names(RecordFilter("amount.amountMicros", "lt", 5_000_000_000)) == {"Won late"}
    assert names(RecordFilter("amount.amountMicros", "is_null")) == {"Won, no amount", "New"}
    assert names(RecordFilter("companyId", "is_not_null")) == {"Won early"}
    assert names(RecordFilter("stage", "eq", "WON"),
                 updated_after=datetime(2026, 3, 10, 10, tzinfo=UTC),
                 updated_before=datetime(2026, 3, 20, 10, tzinfo=UTC)) == {"Won, no amount"}  # [after, before)
    assert names(RecordFilter("updatedAt", "lte", datetime(2026, 3, 2, 10, tzinfo=UTC))) == {"Won early"}
    assert twenty.violations == []


def test_pages_follow_the_cursor_in_a_stable_order_without_gaps_or_repeats(
    twenty: FakeTwenty, crm: TwentyConnector
) -> None:
    for index in range(23):
        twenty.add_opportunity(f"Deal {index}", stage="WON" if index % 3 else "NEW", updatedAt=_at(1 + index))
    query = RecordQuery("opportunity", filters=(RecordFilter("stage", "eq", "WON"),), page_size=5)

    found = list(iter_records(crm, twenty.connection(), query))

    assert len(found) == 15 and len({r["id"] for r in found}) == 15
    assert [r["id"] for r in found] == sorted(r["id"] for r in found)  # order_by id: stable under updates
    assert len(twenty.list_requests) == 3
    first, second = twenty.list_requests[0], twenty.list_requests[1]
    assert first["limit"] == "5" and "starting_after" not in first
    assert second["starting_after"] == found[4]["id"]
    assert first["filter"] == 'stage[eq]:"WON"' and first["order_by"] == "id[AscNullsFirst]"
    assert twenty.violations == []


def test_a_page_asks_for_at_most_200_records(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    twenty.add_opportunity("Only")
    crm.search_records(twenty.connection(), RecordQuery("company", page_size=5000))
    assert twenty.list_requests[-1]["limit"] == str(MAX_PAGE_SIZE)
    assert twenty.violations == []  # the spec's limit maximum is 200


def test_companies_and_people_are_searched_too(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    acme = twenty.add_company("Acme", address={"addressCity": "Lyon"})
    twenty.add_company("Globex", address={"addressCity": "Paris"})
    twenty.add_person("Ada", "Lovelace", company_id=acme["id"], email="ada@acme.test")
    twenty.add_person("Bob", "Stone", email="bob@else.test")
    connection = twenty.connection()

    in_lyon = RecordFilter("address.addressCity", "eq", "Lyon")
    companies = crm.search_records(connection, RecordQuery("company", (in_lyon,)))
    people = crm.search_records(connection, RecordQuery("person", (RecordFilter("companyId", "eq", acme["id"]),)))
    by_email = crm.search_records(
        connection, RecordQuery("person", (RecordFilter("emails.primaryEmail", "eq", "bob@else.test"),)))

    assert _names(companies.records) == {"Acme"}
    assert [p["name"]["firstName"] for p in people.records] == ["Ada"]
    assert [p["name"]["firstName"] for p in by_email.records] == ["Bob"]
    assert twenty.violations == []


def test_twenty_refuses_an_unknown_field_or_stage_with_a_400(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    from billflow.errors import TargetRejected

    with pytest.raises(TargetRejected, match="does not exist"):
        crm.search_records(twenty.connection(), RecordQuery("opportunity", (RecordFilter("nope", "eq", "x"),)))
    with pytest.raises(TargetRejected, match="invalid value"):
        crm.search_records(twenty.connection(), RecordQuery("opportunity", (RecordFilter("stage", "eq", "WONN"),)))


def test_the_101st_call_in_a_minute_waits_for_the_next_window(twenty: FakeTwenty, aws: None) -> None:
    clock = Clock(MINUTE + 20)
    crm = TwentyConnector(rate_limiter=RateLimiter(clock=clock))
    connection = twenty.connection()
    query = RecordQuery("opportunity", page_size=1)
    for _ in range(100):
        crm.search_records(connection, query)
    with pytest.raises(TransientError) as caught:
        crm.search_records(connection, query)
    assert caught.value.retry_after_seconds == 40
    assert len(twenty.list_requests) == 100  # the refused call never reached Twenty
    clock.now = MINUTE + 60
    crm.search_records(connection, query)
    assert len(twenty.list_requests) == 101


def test_a_self_hosted_limit_is_a_connection_setting(twenty: FakeTwenty, aws: None) -> None:
    crm = TwentyConnector(rate_limiter=RateLimiter(clock=Clock(MINUTE)))
    connection = twenty.connection()
    connection.settings["rate_limit_per_minute"] = 2
    crm.search_records(connection, RecordQuery("person"))
    crm.search_records(connection, RecordQuery("person"))
    with pytest.raises(TransientError):
        crm.search_records(connection, RecordQuery("person"))


def test_starting_after_a_record_that_left_the_filter_still_continues(
    twenty: FakeTwenty, crm: TwentyConnector
) -> None:
    """A record that stops matching between two pages (moved out of WON) does not break the paging."""
    for index in range(6):
        twenty.add_opportunity(f"Deal {index}", stage="WON", updatedAt=_at(1 + index))
    connection = twenty.connection()
    query = RecordQuery("opportunity", filters=(RecordFilter("stage", "eq", "WON"),), page_size=3)
    first = crm.search_records(connection, query)
    assert first.next_cursor is not None
    twenty.opportunities[first.next_cursor]["stage"] = "LOST"
    second = crm.search_records(connection, query, first.next_cursor)
    assert len(second.records) == 3 and second.next_cursor is None
    assert not {r["id"] for r in first.records} & {r["id"] for r in second.records}
    assert twenty.violations == []


def test_the_window_is_half_open(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    _seed(twenty)
    start = datetime(2026, 3, 10, 10, tzinfo=UTC)
    page = crm.search_records(twenty.connection(), RecordQuery(
        "opportunity", updated_after=start, updated_before=start + timedelta(days=1)))
    assert _names(page.records) == {"Won, no amount", "Lost"}


# --- the stand-in reads the list parameters as Twenty does ---------------------------------------------
def _list(twenty: FakeTwenty, plural: str, **params: str) -> tuple[int, Any]:
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{twenty.url}/rest/{plural}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {twenty.api_key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_stand_in_reads_conjunctions_quotes_and_order_as_twenty(twenty: FakeTwenty) -> None:
    _seed(twenty)
    lost_or_won_with_amount = "or(stage[eq]:LOST,and(stage[eq]:'WON',not(amount.amountMicros[is]:NULL)))"
    status, doc = _list(twenty, "opportunities", filter=lost_or_won_with_amount,
                        order_by="amount.amountMicros[DescNullsLast]")
    assert status == 200
    assert [r["name"] for r in doc["data"]["opportunities"]] == ["Lost", "Won early", "Won late"]
    assert doc["totalCount"] == 3 and doc["pageInfo"]["hasNextPage"] is False

    status, doc = _list(twenty, "opportunities", filter='name[ilike]:"%won%"', order_by="updatedAt[DescNullsFirst]")
    assert [r["name"] for r in doc["data"]["opportunities"]] == ["Won late", "Won, no amount", "Won early"]

    status, doc = _list(twenty, "opportunities", filter="updatedAt[gte]:2026-03-10,updatedAt[lt]:2026-03-11T00:00:00Z")
    assert {r["name"] for r in doc["data"]["opportunities"]} == {"Won, no amount", "Lost"}
    assert twenty.violations == []


@pytest.mark.parametrize(("params", "message"), [
    ({"filter": "stage[like-ish]:WON"}, "comparator like-ish not in"),
    ({"filter": "stage:WON"}, "eg: price[gte]:10"),
    ({"filter": "stage[in]:WON"}, "array value expected"),
    ({"filter": "not(stage[eq]:WON,stage[eq]:LOST)"}, "only 1 condition"),
    ({"filter": "amount[is]:NULL"}, "does not exist"),  # a composite is filtered by its sub-fields
    ({"filter": "stage[is]:EMPTY"}, "NULL or NOT_NULL"),
    ({"order_by": "name[Sideways]"}, "direction 'Sideways' invalid"),
    ({"starting_after": "5d0c3c9e-0a8e-4bd4-9d46-3f4c0e1f2a77"}, "Invalid cursor"),
    ({"limit": "201"}, "201 is greater than the maximum of 200"),
])
def test_the_stand_in_answers_400_where_twenty_does(twenty: FakeTwenty, params: dict[str, str], message: str) -> None:
    status, doc = _list(twenty, "opportunities", **params)
    assert status == 400
    assert message in " ".join(doc["messages"])
    assert twenty.violations  # and the test that sent it hears about it


def test_twentys_own_429_is_retried_after_its_wait(twenty: FakeTwenty, crm: TwentyConnector) -> None:
    """Another client spent the key's budget: Twenty answers 429 and the run waits for Retry-After."""
    twenty.fail_next(429, retry_after="17", body={"statusCode": 429, "error": "TooManyRequests",
                                                   "messages": ["Too many requests"]})
    with pytest.raises(TransientError) as caught:
        crm.search_records(twenty.connection(), RecordQuery("opportunity"))
    assert caught.value.retry_after_seconds == 17
