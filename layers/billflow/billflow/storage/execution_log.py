"""The execution log: one item per run and action, queryable by rule, record and status."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from billflow.aws import client
from billflow.settings import get_settings
from billflow.storage import keys, shared

BY_RULE = "by-rule"
BY_RECORD = "by-record"
BY_STATUS = "by-status"
DIGEST_MAX_ITEMS = 1000


def log_item(
    *, tenant: str, execution: str, rule_id: str, record_key: str, step: str, status: str,
    reason: str = "", external_id: str = "", action_type: str = "", transition: str = "",
    at: datetime | None = None, trigger: str = "",
) -> dict[str, Any]:
    """The item in DynamoDB's typed JSON: the state machine writes it as-is with dynamodb:putItem."""
    when = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    ttl = int(time.time()) + get_settings().log_retention_days * 86400
    item = {
        "pk": {"S": tenant},
        "sk": {"S": f"{when}#{execution}#{step}"},
        "rule_key": {"S": keys.log_rule_key(tenant, rule_id)},
        "record_key": {"S": record_key},
        "status_key": {"S": keys.log_status_key(tenant, status)},
        "execution": {"S": execution},
        "rule_id": {"S": rule_id},
        "step": {"S": step},
        "status": {"S": status},
        "reason": {"S": reason[:2000]},
        "external_id": {"S": external_id},
        "action_type": {"S": action_type},
        "transition": {"S": transition},
        "at": {"S": when},
        "expires_at": {"N": str(ttl)},
    }
    if trigger:  # a run the sweep started (issue 11); webhook runs carry no trigger attribute
        item["trigger"] = {"S": trigger}
    return item


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: next(iter(v.values())) for k, v in item.items() if k not in ("pk", "sk")}


class ExecutionLog:
    def __init__(self, table: str) -> None:
        self._table = table

    def write(self, item: dict[str, Any]) -> None:
        client("dynamodb").put_item(TableName=self._table, Item=item)

    def recent(self, tenant: str, limit: int = 20) -> list[dict[str, Any]]:
        return self._query("pk", tenant, None, limit)

    def by_rule(self, tenant: str, rule_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._query("rule_key", keys.log_rule_key(tenant, rule_id), BY_RULE, limit)

    def by_record(self, record_key: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._query("record_key", record_key, BY_RECORD, limit)

    def by_status(self, tenant: str, status: str, limit: int = 50) -> list[dict[str, Any]]:
        return self._query("status_key", keys.log_status_key(tenant, status), BY_STATUS, limit)

    def _query(self, attr: str, value: str, index: str | None, limit: int) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": attr},
            "ExpressionAttributeValues": {":v": {"S": value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if index:
            kwargs["IndexName"] = index
        return [_plain(i) for i in client("dynamodb").query(**kwargs)["Items"]]


    def between(self, tenant: str, statuses: tuple[str, ...], since: datetime, until: datetime,
                most: int = DIGEST_MAX_ITEMS) -> list[dict[str, Any]]:
        """Items of these statuses logged in (since, until], oldest first (the by-status index)."""
        ddb = client("dynamodb")
        found: list[dict[str, Any]] = []
        low, high = log_time(since), log_time(until)
        for status in statuses:
            paging: dict[str, Any] = {}
            while len(found) < most:
                page = ddb.query(
                    TableName=self._table, IndexName=BY_STATUS,
                    KeyConditionExpression="status_key = :k AND sk BETWEEN :low AND :high",
                    ExpressionAttributeValues={":k": {"S": keys.log_status_key(tenant, status)},
                                               ":low": {"S": low}, ":high": {"S": high}},
                    **paging,
                )
                found.extend({k: next(iter(v.values())) for k, v in item.items()} for item in page["Items"])
                if "LastEvaluatedKey" not in page:
                    break
                paging = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        return sorted((i for i in found if str(i.get("sk", "")) > low), key=lambda i: str(i.get("sk", "")))


def log_time(instant: datetime) -> str:
    """The log's sort keys start with the time, as the state machine writes it (ms, Z)."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def get_execution_log() -> ExecutionLog:
    return shared(ExecutionLog, get_settings().required("execution_log_table"))
