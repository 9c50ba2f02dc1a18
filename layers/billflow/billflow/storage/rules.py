"""The rules table: rule documents per (tenant, source, object), read in their order."""

from __future__ import annotations

import json
import uuid
from typing import Any

from billflow.aws import client
from billflow.models.rules import Rule, TenantSettings
from billflow.settings import get_settings
from billflow.storage import keys, shared

TENANT_INDEX = "tenant-index"
SETTINGS_INDEX = "sk-index"


class RuleStore:
    def __init__(self, table: str) -> None:
        self._table = table

    @property
    def table(self) -> str:
        return self._table

    def rules_for(self, tenant: str, source: str, object_name: str) -> list[Rule]:
        """One partition per (tenant, source, object): cost follows that object's rules, not all rules."""
        items = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :rule)",
            ExpressionAttributeValues={":pk": {"S": keys.rules_pk(tenant, source, object_name)},
                                       ":rule": {"S": keys.rule_sk("")}},
            ConsistentRead=True,
        )
        rules = [Rule.model_validate_json(item["document"]["S"]) for item in items]
        return sorted(rules, key=lambda r: (r.order, r.id))

    def all_rules(self, tenant: str) -> list[Rule]:
        items = self._query(
            IndexName=TENANT_INDEX,
            KeyConditionExpression="tenant = :t AND begins_with(sk, :rule)",
            ExpressionAttributeValues={":t": {"S": tenant}, ":rule": {"S": "rule#"}},
        )
        rules = [Rule.model_validate_json(item["document"]["S"]) for item in items]
        return sorted(rules, key=lambda r: (r.source, r.object, r.order, r.id))

    def get(self, tenant: str, rule_id: str) -> Rule | None:
        """One rule by id: the tenant index is keyed (tenant, sk), so this reads one item, not all."""
        items = self._query(
            IndexName=TENANT_INDEX,
            KeyConditionExpression="tenant = :t AND sk = :sk",
            ExpressionAttributeValues={":t": {"S": tenant}, ":sk": {"S": keys.rule_sk(rule_id)}},
        )
        return Rule.model_validate_json(items[0]["document"]["S"]) if items else None

    def version(self, tenant: str, source: str, object_name: str) -> str | None:
        """The partition's version token: it changes with every rule written or deleted through this store
        (None before the first such write). One small item, read strongly consistent."""
        item = client("dynamodb").get_item(
            TableName=self._table, ConsistentRead=True,
            Key={"pk": {"S": keys.rules_pk(tenant, source, object_name)}, "sk": {"S": keys.RULES_VERSION_SK}},
        ).get("Item")
        return item["token"]["S"] if item else None

    def put(self, rule: Rule) -> None:
        if not rule.tenant:
            raise ValueError("a stored rule belongs to a tenant")
        self._write_with_new_version(rule, {"Put": {"TableName": self._table, "Item": {
            "pk": {"S": keys.rules_pk(rule.tenant, rule.source, rule.object)},
            "sk": {"S": keys.rule_sk(rule.id)},
            "tenant": {"S": rule.tenant},
            "rule_id": {"S": rule.id},
            "active": {"BOOL": rule.active},
            "order": {"N": str(rule.order)},
            "document": {"S": rule.model_dump_json(exclude_defaults=False)},
        }}})

    def delete(self, rule: Rule) -> None:
        self._write_with_new_version(rule, {"Delete": {"TableName": self._table, "Key": {
            "pk": {"S": keys.rules_pk(rule.tenant, rule.source, rule.object)},
            "sk": {"S": keys.rule_sk(rule.id)},
        }}})

    def _write_with_new_version(self, rule: Rule, write: dict[str, Any]) -> None:
        """The rule write, then a new version token (filters cache the object's rules until it changes).
        Not one transaction: DynamoDB would bill it double, and moto copies the table for each. A reader
        between the two writes uses the rules it had for that one event; a crash between them is bounded by
        the filters' cache age (rules/index.py)."""
        ddb = client("dynamodb")
        if "Put" in write:
            ddb.put_item(**write["Put"])
        else:
            ddb.delete_item(**write["Delete"])
        ddb.update_item(
            TableName=self._table,
            Key={"pk": {"S": keys.rules_pk(rule.tenant, rule.source, rule.object)},
                 "sk": {"S": keys.RULES_VERSION_SK}},
            UpdateExpression="SET #token = :token",
            ExpressionAttributeNames={"#token": "token"},
            ExpressionAttributeValues={":token": {"S": uuid.uuid4().hex}},
        )

    def tenant_settings(self, tenant: str) -> TenantSettings:
        from billflow.storage.tenant_settings import TenantSettingsStore  # one reader of the settings item

        return TenantSettingsStore(self._table).read(tenant).settings

    def put_tenant_settings(self, tenant: str, settings: TenantSettings) -> None:
        from billflow.storage.tenant_settings import TenantSettingsStore  # one writer of the settings item

        TenantSettingsStore(self._table).write(tenant, settings)

    def tenants_with_settings(self) -> list[str]:
        """Every tenant that has stored settings (the settings items, through sk-index)."""
        suffix = keys.settings_pk("")
        items = self._query(IndexName=SETTINGS_INDEX, KeyConditionExpression="sk = :s",
                            ExpressionAttributeValues={":s": {"S": keys.SETTINGS_SK}})
        return sorted(i["pk"]["S"].removesuffix(suffix) for i in items)

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        ddb = client("dynamodb")
        items: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        while True:
            paging = {"ExclusiveStartKey": start} if start else {}
            page = ddb.query(TableName=self._table, **kwargs, **paging)
            items.extend(page["Items"])
            start = page.get("LastEvaluatedKey")
            if not start:
                return items


def get_rule_store() -> RuleStore:
    return shared(RuleStore, get_settings().required("rules_table"))


def rule_document(rule: Rule) -> dict[str, Any]:
    """The rule as its YAML/JSON document: what export writes and what apply compares."""
    data: dict[str, Any] = json.loads(rule.model_dump_json(exclude={"tenant"}))
    return data
