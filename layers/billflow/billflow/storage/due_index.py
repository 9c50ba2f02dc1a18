"""The due-time index of date-triggered rules: items of the records table saying when a (date rule,
record) pair is next due, found through the `by-due` index by UTC hour (logic/schedule.py decides when)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from billflow.aws import client
from billflow.models.events import CrmEvent
from billflow.models.rules import DateTrigger, Rule
from billflow.models.run import parse_utc, utc_text
from billflow.rules.paths import get_path
from billflow.settings import get_settings
from billflow.storage import keys, shared

DUE_INDEX = "by-due"
DUE_SHARDS = 4  # items due in one hour are spread over this many index partitions
DUE_ITEM_TTL = timedelta(days=7)  # a fired once-only item lingers this long after its instant
MAX_SNAPSHOT_BYTES = 64 * 1024  # the record kept for runs of sources without a CRM to fetch it from


def due_pk(record_key: str, rule_id: str) -> str:
    return f"{record_key}#due#{rule_id}"


def due_hour(instant: datetime, pk: str) -> str:
    """The index partition: the UTC hour, and a shard of the item's key."""
    shard = sum(pk.encode()) % DUE_SHARDS
    return f"{instant.astimezone(UTC).strftime('%Y-%m-%dT%H')}#{shard}"


@dataclass(frozen=True)
class DueItem:
    pk: str
    tenant: str
    rule_id: str
    source: str
    object: str
    record_id: str
    field: str
    value: Any
    due: datetime
    record: dict[str, Any]


class DueIndex:
    """Items of the records table saying when a (date rule, record) pair is next due."""

    def __init__(self, table: str) -> None:
        self._table = table

    def put(self, event: CrmEvent, rule: Rule, due: datetime) -> None:
        assert isinstance(rule.trigger, DateTrigger)
        record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
        pk = due_pk(record_key, rule.id)
        snapshot = json.dumps(event.record, default=str)
        item = {
            "pk": {"S": pk},
            "due_hour": {"S": due_hour(due, pk)},
            "due_at": {"S": utc_text(due)},
            "tenant": {"S": event.tenant},
            "rule_id": {"S": rule.id},
            "source": {"S": event.source},
            "object": {"S": event.object},
            "record_id": {"S": event.record_id},
            "field": {"S": rule.trigger.field},
            "value": {"S": json.dumps(get_path(event.record, rule.trigger.field), default=str)},
            "expires_at": {"N": str(int((due + DUE_ITEM_TTL).timestamp()))},
        }
        if len(snapshot) <= MAX_SNAPSHOT_BYTES:
            item["record"] = {"S": snapshot}
        client("dynamodb").put_item(TableName=self._table, Item=item)

    def remove(self, record_key: str, rule_id: str, only_if_due: datetime | None = None) -> None:
        self._delete(due_pk(record_key, rule_id), only_if_due)

    def move(self, item: DueItem, to: datetime) -> None:
        """A repeating rule's item on to its next instant, unless an event re-indexed it meanwhile."""
        ddb = client("dynamodb")
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.update_item(
                TableName=self._table, Key={"pk": {"S": item.pk}},
                UpdateExpression="SET due_at = :to, due_hour = :hour, expires_at = :ttl",
                ConditionExpression="due_at = :from",
                ExpressionAttributeValues={
                    ":to": {"S": utc_text(to)}, ":hour": {"S": due_hour(to, item.pk)},
                    ":from": {"S": utc_text(item.due)}, ":ttl": {"N": str(int((to + DUE_ITEM_TTL).timestamp()))},
                },
            )

    def advance(self, item: DueItem, to: datetime | None) -> None:
        """A fired or stale item on to its next instant, or removed when there is none; either only if no
        event re-indexed it meanwhile."""
        if to is None:
            self._delete(item.pk, only_if_due=item.due)
        else:
            self.move(item, to)

    def _delete(self, pk: str, only_if_due: datetime | None) -> None:
        ddb = client("dynamodb")
        kwargs: dict[str, Any] = {"TableName": self._table, "Key": {"pk": {"S": pk}}}
        if only_if_due is not None:
            kwargs["ConditionExpression"] = "due_at = :due"
            kwargs["ExpressionAttributeValues"] = {":due": {"S": utc_text(only_if_due)}}
        # ConditionalCheckFailed: re-indexed meanwhile, the new instant stands
        with contextlib.suppress(ddb.exceptions.ConditionalCheckFailedException):
            ddb.delete_item(**kwargs)

    def due_between(self, since: datetime, until: datetime) -> list[DueItem]:
        """Items due in (since, until], from the hour partitions that window touches."""
        ddb = client("dynamodb")
        start, end = utc_text(since + timedelta(seconds=1)), utc_text(until)
        hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        found: list[DueItem] = []
        while hour <= until:
            for shard in range(DUE_SHARDS):
                paging: dict[str, Any] = {}
                while True:
                    page = ddb.query(
                        TableName=self._table, IndexName=DUE_INDEX,
                        KeyConditionExpression="due_hour = :h AND due_at BETWEEN :from AND :to",
                        ExpressionAttributeValues={":h": {"S": f"{hour.strftime('%Y-%m-%dT%H')}#{shard}"},
                                                   ":from": {"S": start}, ":to": {"S": end}},
                        **paging,
                    )
                    found.extend(_due_item(i) for i in page["Items"])
                    if "LastEvaluatedKey" not in page:
                        break
                    paging = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
            hour += timedelta(hours=1)
        return found


def _due_item(item: dict[str, Any]) -> DueItem:
    text = {k: v.get("S", "") for k, v in item.items()}
    return DueItem(
        pk=text["pk"], tenant=text["tenant"], rule_id=text["rule_id"], source=text["source"],
        object=text["object"], record_id=text["record_id"], field=text["field"],
        value=json.loads(text.get("value") or "null"), due=parse_utc(text["due_at"]),
        record=json.loads(text["record"]) if text.get("record") else {},
    )


def get_due_index() -> DueIndex:
    return shared(DueIndex, get_settings().required("records_table"))
