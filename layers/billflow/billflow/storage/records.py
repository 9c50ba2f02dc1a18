"""What billflow remembers of each CRM record between events, to see transitions.

CRMs like Twenty send only the record after a change. To know that `stage` *changed to* CLOSED_WON,
billflow keeps the last value it saw of every field a rule reads, a version per field that goes up on
every change, and the event that caused it (so a redelivered event recomputes the same transition).
Writes are conditional on a revision: concurrent deliveries cannot both claim one change.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from billflow.aws import client
from billflow.settings import get_settings
from billflow.storage import shared

RECORD_TTL_SECONDS = 400 * 24 * 3600


@dataclass
class RecordState:
    pk: str
    revision: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    causes: dict[str, str] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)
    last_occurred_at: str = ""


class RecordStateStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def get(self, pk: str) -> RecordState:
        item = client("dynamodb").get_item(
            TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return RecordState(pk=pk)
        doc = json.loads(item["state"]["S"])
        return RecordState(pk=pk, revision=int(item["revision"]["N"]), **doc)

    def save(self, state: RecordState) -> bool:
        """Write state as revision+1 if nobody else wrote since it was read; False if someone did."""
        ddb = client("dynamodb")
        doc = {
            "values": state.values, "previous": state.previous, "versions": state.versions,
            "causes": state.causes, "fired": state.fired, "last_occurred_at": state.last_occurred_at,
        }
        try:
            ddb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": state.pk},
                    "revision": {"N": str(state.revision + 1)},
                    "state": {"S": json.dumps(doc, sort_keys=True, default=str)},
                    "expires_at": {"N": str(int(time.time()) + RECORD_TTL_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(pk) OR revision = :r",
                ExpressionAttributeValues={":r": {"N": str(state.revision)}},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        state.revision += 1
        return True


def get_record_store() -> RecordStateStore:
    return shared(RecordStateStore, get_settings().required("records_table"))
