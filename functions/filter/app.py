"""Target of the bus rule: match the event against its object's rules; start one execution per match."""

from __future__ import annotations

from typing import Any

from billflow.logic.filter import route_event
from billflow.models.events import CrmEvent
from billflow.observability import logger
from billflow.settings import requires_settings
from billflow.storage.records import get_record_store
from billflow.storage.rules import get_rule_store


@logger.inject_lambda_context(clear_state=True)
@requires_settings("rules_table", "records_table", "state_machine_arn")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    crm_event = CrmEvent.model_validate(event["detail"])
    logger.append_keys(tenant=crm_event.tenant, record=crm_event.record_id, event_id=crm_event.event_id)
    outcome = route_event(crm_event, get_rule_store(), get_record_store())
    summary = outcome.summary()
    logger.info("event routed", extra=summary)
    return summary
