"""Tenant settings (daily limits, usage alert, failure digest, defaults): one item per tenant in the rules
table, beside the tenant's rules, read by every run (filter, scheduler, replay) and written by the admin API,
the CLI and the local runtime's connections file."""

from __future__ import annotations

from dataclasses import dataclass

from billflow.aws import client
from billflow.models.rules import TenantSettings
from billflow.settings import get_settings
from billflow.storage import keys, shared


@dataclass(frozen=True)
class StoredSettings:
    settings: TenantSettings
    updated_at: str | None = None  # ISO 8601 UTC of the last write through the admin API or CLI


class TenantSettingsStore:
    def __init__(self, table: str) -> None:
        self._table = table

    def read(self, tenant: str, consistent: bool = False) -> StoredSettings:
        """Runs read eventually consistent (half the price); the admin API reads what it just wrote."""
        item = client("dynamodb").get_item(
            TableName=self._table, ConsistentRead=consistent,
            Key={"pk": {"S": keys.settings_pk(tenant)}, "sk": {"S": keys.SETTINGS_SK}},
        ).get("Item")
        if not item:
            return StoredSettings(TenantSettings())
        updated = item.get("updated_at", {}).get("S")
        return StoredSettings(TenantSettings.model_validate_json(item["document"]["S"]), updated)

    def write(self, tenant: str, settings: TenantSettings, updated_at: str | None = None) -> None:
        item = {
            "pk": {"S": keys.settings_pk(tenant)},
            "sk": {"S": keys.SETTINGS_SK},
            "tenant": {"S": tenant},
            "document": {"S": settings.model_dump_json()},
        }
        if updated_at:
            item["updated_at"] = {"S": updated_at}
        client("dynamodb").put_item(TableName=self._table, Item=item)


def get_tenant_settings_store() -> TenantSettingsStore:
    return shared(TenantSettingsStore, get_settings().required("rules_table"))
