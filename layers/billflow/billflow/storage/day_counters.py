"""The daily counters and the holds inside them: one item per tenant, action type and UTC day.

The hot path, three conditional updates:

- Reserve: `SET <hold> = <lease end> ADD count 1`, only if `count < limit` and the hold is absent (the state
  machine's CountDaily, a dynamodb:updateItem integration in statemachine/billflow.asl.json);
- Commit (the action was sent): `REMOVE <hold> ADD sent 1`, only if the hold is still there (the Dispatch
  task, right after the send: logic/action_step.py, `commit` below);
- Release (it failed or sent nothing): `REMOVE <hold> ADD count -1`, only if the hold is still there (the
  Dispatch task for a skipped action, `release` below; the state machine's ReleaseFailed for a failed run).

`count` is what was sent plus what is in flight (the places taken), so the condition never lets limit + 1
runs through; it is the attribute the limit always checked, so a day's item written before holds existed
keeps counting. `sent` is what was sent. A hold is an attribute named `hold#<execution>#<action index>` whose value is
the epoch second its lease ends. This module reads an item back and reclaims a lapsed hold, for the rare
path where Reserve is refused (logic/reservations.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from billflow.aws import client
from billflow.settings import get_settings

HOLD_PREFIX = "hold#"


def hold_name(execution: str, index: int | str) -> str:
    """The attribute that holds one action's reservation (the state machine builds the same string)."""
    return f"{HOLD_PREFIX}{execution}#{index}"


@dataclass(frozen=True)
class DayCounter:
    """One counter item as read: places taken (sent or in flight), sends made, and the holds in flight."""

    pk: str
    count: int = 0
    sent: int = 0
    holds: dict[str, int] = field(default_factory=dict)  # hold name -> epoch second its lease ends


class CounterStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def read(self, pk: str) -> DayCounter:
        """The item as it is now (a strongly consistent read: a hold just written is seen)."""
        item = client("dynamodb").get_item(TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True)
        found = item.get("Item") or {}
        return DayCounter(
            pk=pk,
            count=int(found.get("count", {}).get("N", 0)),
            sent=int(found.get("sent", {}).get("N", 0)),
            holds={name: int(value["N"]) for name, value in found.items()
                   if name.startswith(HOLD_PREFIX) and "N" in value},
        )

    def reclaim(self, pk: str, hold: str, lease_end: int) -> bool:
        """Give back a lapsed hold's place: True if this call removed it (it had not been renewed, committed,
        released or reclaimed meanwhile)."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": pk}},
                UpdateExpression="REMOVE #hold ADD #count :minus_one",
                ConditionExpression="#hold = :lease_end",
                ExpressionAttributeNames={"#hold": hold, "#count": "count"},
                ExpressionAttributeValues={":lease_end": {"N": str(lease_end)}, ":minus_one": {"N": "-1"}},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True


    def commit(self, pk: str, hold: str) -> str:
        """The action was sent: the hold becomes a send. A hold reclaimed meanwhile (it outlived its lease) is
        counted anyway, place and send: "committed" or "late" (the state machine's Commit and CommitLate)."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": pk}},
                UpdateExpression="REMOVE #hold ADD sent :one", ConditionExpression="attribute_exists(#hold)",
                ExpressionAttributeNames={"#hold": hold}, ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": pk}}, UpdateExpression="ADD sent :one, #count :one",
                ExpressionAttributeNames={"#count": "count"}, ExpressionAttributeValues={":one": {"N": "1"}},
            )
            return "late"
        return "committed"

    def release(self, pk: str, hold: str) -> bool:
        """Nothing was sent: give the place back, if the hold is still there (True when this call did)."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": pk}},
                UpdateExpression="REMOVE #hold ADD #count :minus_one", ConditionExpression="attribute_exists(#hold)",
                ExpressionAttributeNames={"#hold": hold, "#count": "count"},
                ExpressionAttributeValues={":minus_one": {"N": "-1"}},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True


    def settle(self, pk: str, hold: str, sent: bool) -> str:
        """After the send: commit it, or release the place when nothing was sent. "committed", "late",
        "released", "not-held" (released before), or "failed: ..." when DynamoDB kept refusing (botocore's
        retries spent): the send happened all the same, so the caller goes on."""
        # deferred: format and lookup import this module (through logic/run.py) and never load botocore
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if sent:
                return self.commit(pk, hold)
            return "released" if self.release(pk, hold) else "not-held"
        except (ClientError, BotoCoreError) as exc:
            return f"failed: {exc}"


def get_counter_store() -> CounterStore:
    # Not cached: the table name comes from settings, which tests and the local runtime reset.
    return CounterStore(get_settings().counters_table)
