"""Per-organisation call budgets for targets that throttle each connected organisation (Xero, Zoho Books).

Every API call first takes one unit of the organisation's budget for the current minute, and, where the
target also limits calls in flight (Xero: 5), one of its concurrency slots. Over budget raises
TransientError with retry_after_seconds, so the state machine waits (WaitRetryAfter) and sends again
instead of hammering the target into answering 429s. Budgets are shared by every Lambda container through
the counters table:

  - a minute window is one item, pk "rate#<system>#<scope>#<YYYYMMDDTHHMM>" (UTC), incremented with a
    conditional ADD that fails once the count reaches the limit (a refused call does not count); its
    expires_at (the table's TTL attribute) removes it a few minutes after the window;
  - a concurrency slot is a short lease (storage/locks.Lease) named "rate#<system>#<scope>#slot#<n>",
    n < the limit. A container that dies while holding one blocks that slot only until the lease expires,
    where a shared in-flight counter would stay too high forever after a crash between its increment and
    its decrement.

`scope` names the throttled organisation within a billflow tenant, e.g. "<tenant>#<xero tenant id>", so
two billflow tenants connected to one Xero organisation still each count on their own (they are separate
apps to Xero only if they use separate client ids; sharing one app is the tenant's choice).

Windows are fixed minutes: Xero's window rolls, so a burst straddling a minute boundary can still meet a
429; the connector turns that into the same TransientError (honouring Xero's Retry-After).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from billflow.aws import client
from billflow.errors import ConfigurationError, TransientError
from billflow.settings import get_settings
from billflow.storage.locks import Lease

KEY_PREFIX = "rate#"
WINDOW_SECONDS = 60
WINDOW_TTL_SECONDS = 300  # a window's item outlives its minute a little, then TTL removes it
SLOT_LEASE_SECONDS = 60.0  # longer than one call can take: a 10 s request, a token refresh and a retry
SLOT_RETRY_AFTER_SECONDS = 1.0  # calls are short: a slot frees up within about a second
_RETRYABLE_DYNAMODB = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError",
})


@dataclass(frozen=True)
class RateLimit:
    """A target's published limits per connected organisation."""

    per_minute: int
    concurrent: int | None = None

    def __post_init__(self) -> None:
        if self.per_minute < 1 or (self.concurrent is not None and self.concurrent < 1):
            raise ValueError("rate limits must be positive")


# Xero: 60 calls a minute and 5 in flight per organisation (developer.xero.com, OAuth 2.0 API limits).
XERO = RateLimit(per_minute=60, concurrent=5)
# Zoho Books: 100 requests a minute per organisation (zoho.com/books/api/v3, API call limit).
ZOHO_BOOKS = RateLimit(per_minute=100)


def window_start(now: float) -> int:
    return int(now // WINDOW_SECONDS * WINDOW_SECONDS)


def window_key(system: str, scope: str, now: float) -> str:
    minute = datetime.fromtimestamp(window_start(now), UTC).strftime("%Y%m%dT%H%M")
    return f"{KEY_PREFIX}{system}#{scope}#{minute}"


def slot_name(system: str, scope: str, index: int) -> str:
    return f"{KEY_PREFIX}{system}#{scope}#slot#{index}"


class RateLimiter:
    """Takes units of per-minute budgets and concurrency slots from the counters table."""

    def __init__(
        self, *, table: str | None = None, clock: Callable[[], float] = time.time,
        slot_lease_seconds: float = SLOT_LEASE_SECONDS,
    ) -> None:
        self._table = table
        self._clock = clock
        self.slot_lease_seconds = slot_lease_seconds

    @property
    def table(self) -> str:
        table = self._table or get_settings().counters_table
        if not table:
            raise ConfigurationError("COUNTERS_TABLE is not set: rate limits cannot be counted")
        return table

    @contextmanager
    def call(self, system: str, scope: str, limit: RateLimit) -> Iterator[None]:
        """Around one API call: a unit of this minute's budget, and a concurrency slot while it runs."""
        self.take(system, scope, limit)
        if limit.concurrent is None:
            yield
            return
        lease = self.acquire_slot(system, scope, limit.concurrent)
        try:
            yield
        finally:
            lease.release()

    def take(self, system: str, scope: str, limit: RateLimit) -> int:
        """One unit of the current minute's budget; the count so far. TransientError when spent."""
        table = self.table
        now = self._clock()
        start = window_start(now)
        ddb = client("dynamodb")
        try:
            answer = ddb.update_item(
                TableName=table,
                Key={"pk": {"S": window_key(system, scope, now)}},
                UpdateExpression="ADD #count :one SET expires_at = if_not_exists(expires_at, :ttl)",
                ConditionExpression="attribute_not_exists(#count) OR #count < :limit",
                ExpressionAttributeNames={"#count": "count"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":limit": {"N": str(limit.per_minute)},
                    ":ttl": {"N": str(start + WINDOW_SECONDS + WINDOW_TTL_SECONDS)},
                },
                ReturnValues="UPDATED_NEW",
            )
        except Exception as exc:
            code = _error_code(exc)
            if code in _RETRYABLE_DYNAMODB:
                raise TransientError("DynamoDB is unavailable for rate limits") from exc
            if code != "ConditionalCheckFailedException":
                raise
            wait = max(1.0, math.ceil(start + WINDOW_SECONDS - now))
            raise TransientError(
                f"{system}: the {limit.per_minute} calls a minute allowed for {scope} are used up; "
                f"next window in {wait:.0f} s",
                retry_after_seconds=wait, system=system, limit="minute",
            ) from None
        return int(answer["Attributes"]["count"]["N"])

    def acquire_slot(self, system: str, scope: str, concurrent: int) -> Lease:
        """A held Lease on one of the `concurrent` slots; TransientError when all are taken."""
        first = random.randrange(concurrent)  # spread contenders over the slots
        for offset in range(concurrent):
            lease = Lease(slot_name(system, scope, (first + offset) % concurrent),
                          ttl_seconds=self.slot_lease_seconds, table=self.table)
            if lease.try_acquire():
                return lease
        raise TransientError(
            f"{system}: {concurrent} calls for {scope} are already in flight",
            retry_after_seconds=SLOT_RETRY_AFTER_SECONDS, system=system, limit="concurrent",
        )


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return code if isinstance(code, str) else None
    return None


_limiter: RateLimiter | None = None


def get_rate_limiter() -> RateLimiter:
    global _limiter
    if _limiter is None:
        _limiter = RateLimiter()
    return _limiter
