"""Short leases in DynamoDB: at most one holder at a time across Lambda containers.

For work that must not run twice at once, such as refreshing an OAuth token whose refresh token rotates
(two refreshes racing would each get a new refresh token and one of them would be lost).

A lease is an item {pk: "lock#<name>", owner, expires_at} in the counters table, written with a conditional
put that succeeds only when no live lease exists. expires_at (epoch seconds) is also the table's TTL
attribute, and a lease whose holder died is taken over once it has expired, so a crash never blocks for
longer than the lease's time to live.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from types import TracebackType

from billflow.aws import client
from billflow.errors import ConfigurationError, TransientError
from billflow.settings import get_settings

DEFAULT_TTL_SECONDS = 30.0
KEY_PREFIX = "lock#"


class Lease:
    """One attempt to hold the lease called name. Not reentrant; each instance has its own owner id."""

    def __init__(self, name: str, *, ttl_seconds: float = DEFAULT_TTL_SECONDS, table: str | None = None):
        if not name:
            raise ValueError("a lease needs a name")
        self.key = KEY_PREFIX + name
        self.ttl_seconds = ttl_seconds
        self.owner = uuid.uuid4().hex
        self.held = False
        self._table = table

    @property
    def table(self) -> str:
        table = self._table or get_settings().counters_table
        if not table:
            raise ConfigurationError("COUNTERS_TABLE is not set: leases cannot be taken")
        return table

    def try_acquire(self) -> bool:
        """Take the lease if it is free or expired; False when another owner holds it."""
        ddb = client("dynamodb")
        now = time.time()
        try:
            ddb.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": self.key},
                    "owner": {"S": self.owner},
                    "expires_at": {"N": str(math.ceil(now + self.ttl_seconds))},
                },
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now OR #owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":now": {"N": str(math.floor(now))}, ":owner": {"S": self.owner}},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        except (ddb.exceptions.ProvisionedThroughputExceededException,
                ddb.exceptions.InternalServerError) as exc:
            raise TransientError("DynamoDB is unavailable for leases") from exc
        self.held = True
        return True

    def release(self) -> None:
        """Give the lease back, only if this owner still holds it (an expired one may have moved on)."""
        if not self.held:
            return
        self.held = False
        ddb = client("dynamodb")
        # ConditionalCheckFailed: taken over after it expired, not ours to delete any more
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.delete_item(
                TableName=self.table,
                Key={"pk": {"S": self.key}},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": self.owner}},
            )

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
