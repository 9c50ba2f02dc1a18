"""Pending OAuth connect flows: one item per `state` in the counters table (beside the refresh leases), kept
until the provider sends the user back or the item expires (TTL expires_at; the read checks the time too,
since DynamoDB's TTL deletes late). Taking a state deletes it: a state works once."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from billflow.aws import client
from billflow.settings import get_settings

KEY_PREFIX = "oauth-state#"


def _key(state: str) -> str:
    # The state itself is a bearer secret until used: the table keeps only its hash.
    return KEY_PREFIX + hashlib.sha256(state.encode()).hexdigest()


class OAuthStates:
    def __init__(self, table: str) -> None:
        self._table = table

    def put(self, state: str, document: dict[str, Any], ttl_seconds: int) -> int:
        """Store the flow's document under its state; the epoch second it expires."""
        expires_at = int(time.time()) + ttl_seconds
        client("dynamodb").put_item(
            TableName=self._table,
            Item={"pk": {"S": _key(state)}, "document": {"S": json.dumps(document)},
                  "expires_at": {"N": str(expires_at)}},
            ConditionExpression="attribute_not_exists(pk)",
        )
        return expires_at

    def take(self, state: str) -> dict[str, Any] | None:
        """The flow's document, deleted in the same call (single use); None when unknown, used or expired."""
        ddb = client("dynamodb")
        try:
            answer = ddb.delete_item(
                TableName=self._table, Key={"pk": {"S": _key(state)}}, ReturnValues="ALL_OLD",
                ConditionExpression="attribute_exists(pk)",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return None
        item = answer.get("Attributes") or {}
        if int(item.get("expires_at", {}).get("N", "0")) < time.time():
            return None
        document: dict[str, Any] = json.loads(item["document"]["S"])
        return document


def get_oauth_states() -> OAuthStates:
    # Not cached: the table name comes from settings, which tests and the local runtime reset.
    return OAuthStates(get_settings().required("counters_table"))
