"""Set a field on the CRM record that triggered the run."""

from __future__ import annotations

from typing import Any

from billflow.actions.base import ActionType
from billflow.connectors import get_crm
from billflow.errors import ConfigurationError
from billflow.logic.templates import render
from billflow.logic.workflow import RunState
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.storage.secrets import get_secret_store


class FieldUpdateAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        if not action.field:
            raise ConfigurationError("a field_update action needs a field")
        return {"fields": {action.field: render(action.value, state.context())}}

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        connection = get_secret_store().connection(state.tenant, state.event.source)
        get_crm(connection.type).update_record(
            connection, state.event.object, state.event.record_id, request["fields"]
        )
        return DispatchResult(status="updated", details={"fields": sorted(request["fields"])})
