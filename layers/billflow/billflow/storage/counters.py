"""Markers in the counters table beside the daily counters: "told once" claims (usage alerts, failure
digests) and the scheduler's checkpoint. Each is a conditional write, so concurrent runs agree on one."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from billflow.aws import client
from billflow.models.run import parse_utc, utc_text
from billflow.settings import get_settings
from billflow.storage import keys, shared

CHECKPOINT_PK = "scheduler#due"
ALERT_TTL_SECONDS = 3 * 86400


class Counters:
    def __init__(self, table: str) -> None:
        self._table = table

    def claim(self, pk: str) -> bool:
        """A marker, put only if absent (it expires after a few days): True for the one caller that put it."""
        ddb = client("dynamodb")
        try:
            ddb.put_item(
                TableName=self._table,
                Item={"pk": {"S": pk},
                      "expires_at": {"N": str(int(datetime.now(UTC).timestamp()) + ALERT_TTL_SECONDS)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim_digest(self, tenant: str, instant: datetime, period: timedelta) -> datetime | None:
        """Claim the tenant's digest due at `instant`: the previous digest's time (where this one starts), or
        None if another scheduler run already sent it."""
        ddb = client("dynamodb")
        at = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            answer = ddb.update_item(
                TableName=self._table, Key={"pk": {"S": f"{tenant}#failure-digest"}},
                UpdateExpression="SET #last = :at",
                ConditionExpression="attribute_not_exists(#last) OR #last < :at",
                ExpressionAttributeNames={"#last": "last"},
                ExpressionAttributeValues={":at": {"S": at}},
                ReturnValues="UPDATED_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return None
        old = (answer.get("Attributes") or {}).get("last", {}).get("S")
        return datetime.fromisoformat(old) if old else instant - period


class Checkpoint:
    """Where the previous scheduler run stopped (an item of the counters table); it only moves forward."""

    def __init__(self, table: str) -> None:
        self._table = table

    def read(self) -> datetime | None:
        item = client("dynamodb").get_item(TableName=self._table, Key={"pk": {"S": CHECKPOINT_PK}},
                                           ConsistentRead=True).get("Item")
        return parse_utc(item["until"]["S"]) if item else None

    def advance(self, until: datetime) -> None:
        ddb = client("dynamodb")
        # ConditionalCheckFailed: a later run already went further
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": CHECKPOINT_PK}},
                UpdateExpression="SET #until = :until",
                ConditionExpression="attribute_not_exists(#until) OR #until < :until",
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={":until": {"S": utc_text(until)}},
            )


class SweepCheckpoints:
    """When each rule was last swept (items of the counters table, one per tenant and rule): a sweep is
    claimed by one conditional write, so two schedulers firing at once sweep a rule once."""

    def __init__(self, table: str) -> None:
        self._table = table

    def claim(self, tenant: str, rule_id: str, now: datetime, every: timedelta) -> bool:
        """True for the one caller that finds the rule due (never swept, or last swept `every` ago or more)."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": keys.sweep_checkpoint_pk(tenant, rule_id)}},
                UpdateExpression="SET #last = :now",
                ConditionExpression="attribute_not_exists(#last) OR #last <= :due",
                ExpressionAttributeNames={"#last": "last"},
                ExpressionAttributeValues={":now": {"S": utc_text(now)}, ":due": {"S": utc_text(now - every)}},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def last(self, tenant: str, rule_id: str) -> datetime | None:
        item = client("dynamodb").get_item(
            TableName=self._table, Key={"pk": {"S": keys.sweep_checkpoint_pk(tenant, rule_id)}}, ConsistentRead=True,
        ).get("Item")
        return parse_utc(item["last"]["S"]) if item and "last" in item else None


def get_sweep_checkpoints() -> SweepCheckpoints:
    return SweepCheckpoints(get_settings().required("counters_table"))


def get_counters() -> Counters:
    return shared(Counters, get_settings().required("counters_table"))


def get_checkpoint() -> Checkpoint:
    return Checkpoint(get_settings().required("counters_table"))
