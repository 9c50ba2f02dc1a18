"""The one normalised event every source turns its webhooks into."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RecordAction = Literal["created", "updated", "deleted"]

# EventBridge attributes of a normalised event: the bus rule in template.yaml matches on these.
EVENT_SOURCE = "billflow.ingest"
EVENT_DETAIL_TYPE = "CrmEvent"
# A tenant id names the tenant in webhook URLs, table keys and secret names: short, lower case, no slashes.
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Sources with no CRM behind them: nothing to look up or fetch again, criteria read the record itself.
GENERIC_SOURCES = frozenset({"generic"})
# Sources whose events carry part of the record (HubSpot: the one property that changed): a criterion on a field
# the event does not carry is decided after Lookup, on the record as the CRM holds it, never failed for want
# of the field.
PARTIAL_RECORD_SOURCES = frozenset({"hubspot"})


class CrmEvent(BaseModel):
    """A change of one CRM record, as the CRM reported it (the record after the change)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    event_id: str = Field(description="Fingerprint of the change: delivered twice, it keeps one id")
    tenant: str
    source: str = Field(description="The CRM: twenty, hubspot, generic")
    object: str = Field(description="CRM object, singular: opportunity, deal, company")
    action: RecordAction
    record_id: str
    record: dict[str, Any] = Field(description="The record after the change")
    changed_fields: list[str] | None = Field(
        default=None, description="Fields the CRM says changed; None when the CRM does not say"
    )
    occurred_at: datetime
    received_at: datetime
