"""A refused reservation (logic/reservations.py) on a moto counters table: lapsed holds are reclaimed once,
live ones are kept, and a run whose own hold is there goes on."""

from __future__ import annotations

from typing import Any

import billflow.aws
import pytest
from billflow.logic.reservations import HOLD_LEASE_SECONDS, lease_end, settle
from billflow.storage.day_counters import CounterStore, hold_name

from tests.conftest import COUNTERS

NOW = 1_800_000_000
PK = "acme#invoice#2027-01-15"


@pytest.fixture
def counters(aws: None) -> Any:
    return billflow.aws.client("dynamodb")


def _item(counters: Any, count: int, **holds: int) -> None:
    item = {"pk": {"S": PK}, "count": {"N": str(count)}, "sent": {"N": str(count - len(holds))},
            **{hold_name(name, 0): {"N": str(end)} for name, end in holds.items()}}
    counters.put_item(TableName=COUNTERS, Item=item)


def test_a_full_day_with_live_holds_is_limited(counters: Any) -> None:
    _item(counters, 3, a=NOW + 60, b=NOW + 600)
    assert settle({"pk": PK, "limit": "3"}, hold_name("c", 0), now=NOW) == {"outcome": "limited", "reclaimed": 0}
    assert CounterStore(COUNTERS).read(PK).count == 3


def test_lapsed_holds_are_given_back_once_and_the_reservation_is_tried_again(counters: Any) -> None:
    _item(counters, 3, a=NOW - 1, b=NOW + 600)
    assert settle({"pk": PK, "limit": "3"}, hold_name("c", 0), now=NOW) == {"outcome": "retry", "reclaimed": 1}
    after = CounterStore(COUNTERS).read(PK)
    assert (after.count, after.sent, set(after.holds)) == (2, 1, {hold_name("b", 0)})
    # A second run that read the lapsed hold too cannot give the same place back twice.
    assert CounterStore(COUNTERS).reclaim(PK, hold_name("a", 0), NOW - 1) is False
    assert CounterStore(COUNTERS).read(PK).count == 2


def test_a_renewed_hold_is_not_reclaimed_by_a_reader_that_saw_its_old_lease(counters: Any) -> None:
    _item(counters, 1, a=NOW + 5000)  # renewed after a Retry-After: a reader saw NOW - 1
    assert CounterStore(COUNTERS).reclaim(PK, hold_name("a", 0), NOW - 1) is False
    assert CounterStore(COUNTERS).read(PK).count == 1


def test_a_run_whose_hold_is_already_there_goes_on(counters: Any) -> None:
    """Reserve succeeded, its answer was lost, the retry was refused by `attribute_not_exists(hold)`."""
    _item(counters, 2, mine=NOW + 60)
    assert settle({"pk": PK, "limit": "2"}, hold_name("mine", 0), now=NOW)["outcome"] == "reserved"


def test_places_freed_since_the_refusal_are_tried_again(counters: Any) -> None:
    _item(counters, 1)
    assert settle({"pk": PK, "limit": "2"}, hold_name("c", 0), now=NOW)["outcome"] == "retry"


def test_a_lease_outlasts_the_longest_dispatch() -> None:
    # 8 attempts of Dispatch's 120 s timeout and 4 backoffs of at most 60 s; a Retry-After wait renews it.
    assert HOLD_LEASE_SECONDS > 8 * 120 + 4 * 60
    assert lease_end(NOW, extra_seconds=90) == str(NOW + 90 + HOLD_LEASE_SECONDS)
