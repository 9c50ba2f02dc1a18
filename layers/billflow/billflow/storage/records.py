"""What billflow remembers of each CRM record between events, to see transitions.

CRMs like Twenty send only the record after a change. To know that `stage` *changed to* CLOSED_WON,
billflow keeps, per field a rule reads, the last observations of it: when (the event's time), the value,
the event that reported it and, when that event was a change billflow acted on, its version. Keeping the
recent history rather than one value lets a late, older delivery still be decided for its own field
without rolling the newer value back. Writes are conditional on a revision: concurrent deliveries cannot
both claim one change.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from billflow.aws import client
from billflow.settings import get_settings
from billflow.storage import shared

RECORD_TTL_SECONDS = 400 * 24 * 3600
HISTORY_PER_FIELD = 12  # observations kept per field: enough to place late deliveries, bounded item size
# A value longer than this is remembered by its digest: equal values stay equal, and twelve observations
# of a few watched fields stay far below DynamoDB's 400 KB item limit whatever the CRM sends.
MAX_KEPT_VALUE_BYTES = 512


def storable(value: Any) -> Any:
    """The value as remembered: itself, or {"sha256": ...} of its JSON when it is long."""
    text = json.dumps(value, sort_keys=True, default=str)
    if len(text.encode()) <= MAX_KEPT_VALUE_BYTES:
        return value
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


@dataclass
class Observation:
    """One event's report of one field."""

    at_ms: int  # when the change the event reports happened (the CRM's event time)
    value: Any
    event_id: str
    version: int | None = None  # set when billflow decided this event changed the field

    def order(self) -> tuple[int, str]:
        return self.at_ms, self.event_id

    def dump(self) -> list[Any]:
        return [self.at_ms, self.value, self.event_id, self.version]


@dataclass
class RecordState:
    pk: str
    revision: int = 0
    fields: dict[str, list[Observation]] = field(default_factory=dict)  # oldest first
    fired: list[str] = field(default_factory=list)
    fired_by: dict[str, str] = field(default_factory=dict)  # rule id -> event that fired a first-edit rule

    @property
    def first_seen(self) -> bool:
        return self.revision == 0 and not self.fields


def _load(pk: str, revision: int, doc: dict[str, Any]) -> RecordState:
    if "fields" in doc:
        fields = {path: [Observation(*entry) for entry in entries] for path, entries in doc["fields"].items()}
        return RecordState(pk, revision, fields, list(doc.get("fired", [])), dict(doc.get("fired_by", {})))
    # Items written before per-field history: one observation per field, its version and cause kept so a
    # redelivery of the event that caused it still derives the same transition.
    at_text = doc.get("last_occurred_at") or ""
    at_ms = int(_iso_ms(at_text)) if at_text else 0
    causes: dict[str, str] = doc.get("causes", {})
    versions: dict[str, int] = doc.get("versions", {})
    fields = {
        path: [Observation(at_ms, value, causes.get(path, ""), versions.get(path) if causes.get(path) else None)]
        for path, value in doc.get("values", {}).items()
    }
    fired_by = {k.removeprefix("fired:"): v for k, v in causes.items() if k.startswith("fired:")}
    return RecordState(pk, revision, fields, list(doc.get("fired", [])), fired_by)


def _iso_ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000


class RecordStateStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def get(self, pk: str) -> RecordState:
        item = client("dynamodb").get_item(
            TableName=self._table, Key={"pk": {"S": pk}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return RecordState(pk=pk)
        return _load(pk, int(item["revision"]["N"]), json.loads(item["state"]["S"]))

    def save(self, state: RecordState) -> bool:
        """Write state as revision+1 if nobody else wrote since it was read; False if someone did."""
        ddb = client("dynamodb")
        doc = {
            "fields": {path: [o.dump() for o in obs] for path, obs in state.fields.items()},
            "fired": state.fired, "fired_by": state.fired_by,
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
