"""Set a field on the CRM record that triggered the run.

    - type: field_update            (or crm.field_update)
      field: invoiceNote            (a dotted path sets a part of a composite: amount.currencyCode)
      value: "Invoiced as ${INVOICE.ID}"   (placeholders allowed; the value keeps its type when it is one)

"Update with an empty value" (seed 004's 用空值更新): `value: null`, `value: ""`, or a value whose
placeholders render to "" clear the field; the CRM is sent null, which Twenty takes as "no value" for
every nullable field. At most 3 field updates per rule (rules/validation.py).
"""

from __future__ import annotations

import re
from typing import Any

from billflow.actions.base import ActionType
from billflow.connectors import get_crm
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.models.run import RunState
from billflow.rules.templates import render
from billflow.storage.secrets import get_secret_store

MAX_PER_RULE = 3
FIELD_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$")


def fields_for(field: str, value: Any) -> dict[str, Any]:
    """The PATCH body that sets `field` (a dotted path nests: amount.currencyCode) to `value`."""
    head, _, rest = field.partition(".")
    return {head: fields_for(rest, value) if rest else value}


def cleared(value: Any) -> Any:
    """An empty value clears the field: the CRM is sent null."""
    return None if value is None or value == "" else value


class FieldUpdateAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        if not action.field:
            raise ConfigurationError("a field_update action needs a field")
        value = cleared(render(action.value, state.context()))
        return {"fields": fields_for(action.field, value)}

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        connection = get_secret_store().connection(state.tenant, state.event.source)
        get_crm(connection.type).update_record(
            connection, state.event.object, state.event.record_id, request["fields"]
        )
        return DispatchResult(status="updated", details={"fields": sorted(request["fields"])})

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        return [{"action": action.type, "crm": state.event.source, "object": state.event.object,
                 "record_id": state.event.record_id, "update": request["fields"]}]

    def check(self, action: Action) -> list[tuple[str, str]]:
        """Problems a saved rule would have (rules/validation.py): (where in the action, what)."""
        if action.field and not FIELD_PATH.match(action.field):
            return [("field", f"{action.field!r} is not a field name or dotted path (amount.currencyCode)")]
        return []
