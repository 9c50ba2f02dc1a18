"""Per-organisation call budgets (storage/rate_limits.py) on a moto DynamoDB counters table."""

from __future__ import annotations

from typing import Any

import billflow.aws
import pytest
from billflow.errors import ConfigurationError, TransientError
from billflow.settings import get_settings
from billflow.storage import rate_limits
from billflow.storage.rate_limits import XERO, ZOHO_BOOKS, RateLimit, RateLimiter, slot_name, window_key

from tests.conftest import COUNTERS

MINUTE = 1_699_999_980.0  # a multiple of 60: the start of a minute window
SCOPE = "acme#4a1d3c2e-0000-4000-8000-000000000001"


@pytest.fixture
def counters(aws: None) -> Any:
    """The DynamoDB client on moto, to look into the counters table."""
    return billflow.aws.client("dynamodb")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_61st_call_in_a_minute_waits_for_the_next_window(counters: Any) -> None:
    clock = Clock(MINUTE + 15)
    limiter = RateLimiter(clock=clock)
    counts = [limiter.take("xero", SCOPE, XERO) for _ in range(60)]
    assert counts == list(range(1, 61))

    with pytest.raises(TransientError) as caught:
        limiter.take("xero", SCOPE, XERO)
    assert caught.value.retry_after_seconds == 45  # 15 s into the minute
    assert caught.value.details["limit"] == "minute"

    clock.now = MINUTE + 59.2
    with pytest.raises(TransientError) as caught:
        limiter.take("xero", SCOPE, XERO)
    assert caught.value.retry_after_seconds == 1  # never less than a second

    clock.now = MINUTE + 60  # the next window starts from zero
    assert limiter.take("xero", SCOPE, XERO) == 1


def test_a_refused_call_does_not_count_and_the_window_expires(counters: Any) -> None:
    limiter = RateLimiter(clock=Clock(MINUTE + 1))
    small = RateLimit(per_minute=2)
    limiter.take("xero", SCOPE, small)
    limiter.take("xero", SCOPE, small)
    for _ in range(3):
        with pytest.raises(TransientError):
            limiter.take("xero", SCOPE, small)
    item = counters.get_item(TableName=COUNTERS, Key={"pk": {"S": window_key("xero", SCOPE, MINUTE + 1)}})["Item"]
    assert item["count"] == {"N": "2"}
    assert int(item["expires_at"]["N"]) == MINUTE + 60 + rate_limits.WINDOW_TTL_SECONDS  # the table's TTL attribute
    assert window_key("xero", SCOPE, MINUTE + 1) == f"rate#xero#{SCOPE}#20231114T2213"


def test_budgets_are_per_system_and_per_scope(counters: Any) -> None:
    limiter = RateLimiter(clock=Clock(MINUTE))
    one = RateLimit(per_minute=1)
    limiter.take("xero", "acme#org-1", one)
    limiter.take("xero", "acme#org-2", one)  # another Xero organisation of the same tenant
    limiter.take("xero", "globex#org-1", one)  # the same organisation, another billflow tenant
    limiter.take("zoho_books", "acme#org-1", one)
    with pytest.raises(TransientError):
        limiter.take("xero", "acme#org-1", one)


def test_the_6th_concurrent_call_is_refused_until_a_slot_frees(counters: Any) -> None:
    limiter = RateLimiter()
    held = [limiter.acquire_slot("xero", SCOPE, 5) for _ in range(5)]
    assert sorted(lease.key for lease in held) == sorted(f"lock#{slot_name('xero', SCOPE, n)}" for n in range(5))

    with pytest.raises(TransientError) as caught:
        limiter.acquire_slot("xero", SCOPE, 5)
    assert caught.value.retry_after_seconds == rate_limits.SLOT_RETRY_AFTER_SECONDS
    assert caught.value.details["limit"] == "concurrent"

    held[2].release()
    again = limiter.acquire_slot("xero", SCOPE, 5)
    assert again.key == held[2].key
    assert limiter.acquire_slot("xero", "another#scope", 5).held  # other organisations are not affected


def test_a_slot_held_by_a_crashed_caller_is_taken_over_once_its_lease_expires(counters: Any) -> None:
    limiter = RateLimiter()
    for n in range(5):  # five holders that died without releasing, leases ran out a while ago
        counters.put_item(TableName=COUNTERS, Item={
            "pk": {"S": f"lock#{slot_name('xero', SCOPE, n)}"}, "owner": {"S": f"dead-{n}"},
            "expires_at": {"N": "1000"},
        })
    lease = limiter.acquire_slot("xero", SCOPE, 5)
    assert lease.held


def test_call_takes_a_unit_and_a_slot_and_frees_the_slot_even_on_failure(counters: Any) -> None:
    limiter = RateLimiter(clock=Clock(MINUTE))
    with pytest.raises(RuntimeError), limiter.call("xero", SCOPE, XERO):
        raise RuntimeError("the API call failed")
    slots = [counters.get_item(TableName=COUNTERS, Key={"pk": {"S": f"lock#{slot_name('xero', SCOPE, n)}"}})
             for n in range(5)]
    assert all("Item" not in slot for slot in slots)  # released
    for _ in range(5):  # five calls in a row each get a slot back
        with limiter.call("xero", SCOPE, XERO):
            pass
    assert limiter.take("xero", SCOPE, XERO) == 7  # every call counted: 1 + 5 + this one


def test_zoho_books_counts_calls_but_has_no_concurrency_slots(counters: Any) -> None:
    limiter = RateLimiter(clock=Clock(MINUTE))
    assert ZOHO_BOOKS.concurrent is None
    for _ in range(ZOHO_BOOKS.per_minute):
        with limiter.call("zoho_books", "acme#10234695", ZOHO_BOOKS):
            pass
    with pytest.raises(TransientError), limiter.call("zoho_books", "acme#10234695", ZOHO_BOOKS):
        pass
    scan = counters.scan(TableName=COUNTERS)["Items"]
    assert [i["pk"]["S"] for i in scan if "slot" in i["pk"]["S"]] == []


def test_without_a_counters_table_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COUNTERS_TABLE", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError):
            RateLimiter().take("xero", SCOPE, XERO)
    finally:
        get_settings.cache_clear()


def test_dynamodb_throttling_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import ClientError

    class Throttled:
        def update_item(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")

    monkeypatch.setattr(rate_limits, "client", lambda service: Throttled())
    with pytest.raises(TransientError) as caught:
        RateLimiter(table=COUNTERS).take("xero", SCOPE, XERO)
    assert "DynamoDB" in caught.value.message


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimit(per_minute=0)
    with pytest.raises(ValueError, match="positive"):
        RateLimit(per_minute=1, concurrent=0)
