"""Billing documents (invoice, estimate, sales receipt, ...) in the connection's target system."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billflow.actions.base import ActionType
from billflow.actions.drafts import draft_for
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult, InvoiceDraft
from billflow.models.rules import Action
from billflow.models.run import RunState

# Connectors and secrets are imported by send and preview only: rendering a draft (the Format task) calls no
# target, so its cold start does not load them.
if TYPE_CHECKING:
    from billflow.storage.secrets import Connection


class DocumentAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        # state.record(): what Lookup read from the CRM when it read the record (HubSpot events carry one
        # property), else the event's record.
        draft = draft_for(action, state.record(), state.context(), state.event.source)
        return {"draft": draft.model_dump(mode="json")}

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        from billflow.connectors import get_connector
        from billflow.connectors.base import SendContext

        connection = _connection(action, state)
        draft = InvoiceDraft.model_validate(request["draft"])
        context = SendContext(tenant=state.tenant, idempotency_key=key, crm_record=state.event.record)
        return get_connector(connection.type).create_document(draft, connection, context)

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        from billflow.connectors import get_connector
        from billflow.connectors.base import SendContext

        connection = _connection(action, state)
        draft = InvoiceDraft.model_validate(request["draft"])
        context = SendContext(tenant=state.tenant, idempotency_key=key, crm_record=state.event.record)
        return get_connector(connection.type).preview_document(draft, connection, context)


def _connection(action: Action, state: RunState) -> Connection:
    from billflow.storage.secrets import get_secret_store

    connection = get_secret_store().connection(state.tenant, action.connection or action.system or "")
    if action.system and action.system != connection.type:
        raise ConfigurationError(
            f"action wants {action.system} but connection {connection.name!r} is {connection.type}"
        )
    return connection
