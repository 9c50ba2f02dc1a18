"""Call a webhook with the run's data (signed when the connection has a secret)."""

from __future__ import annotations

from typing import Any

from billflow.actions.base import ActionType
from billflow.connectors import get_connector
from billflow.connectors.base import SendContext
from billflow.logic.templates import render
from billflow.logic.workflow import RunState
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.storage.secrets import get_secret_store


class WebhookAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        if "payload" in action.options:
            return {"payload": render(action.options["payload"], state.context())}
        return {"payload": {
            "rule": state.rule.id, "transition": state.transition, "event": state.event.model_dump(mode="json"),
            "results": state.results, **state.lookup,
        }}

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        connection = get_secret_store().connection(state.tenant, action.connection or "webhook")
        context = SendContext(tenant=state.tenant, idempotency_key=key, crm_record=state.event.record)
        return get_connector(connection.type).send_payload(request["payload"], connection, context)
