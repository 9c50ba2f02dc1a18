"""Action types: one module per type, behind one interface (base.ActionType), registered here.

format calls render() to build the request (what a dry run shows); dispatch calls send() once per
idempotency key. Modules are imported on first use.
"""

from __future__ import annotations

import importlib

from billflow.actions.base import ActionType
from billflow.errors import ConfigurationError
from billflow.models.rules import DOCUMENT_ACTIONS

_ACTION_TYPES = {
    **dict.fromkeys(DOCUMENT_ACTIONS, "billflow.actions.documents:DocumentAction"),
    "field_update": "billflow.actions.field_update:FieldUpdateAction",
    "webhook": "billflow.actions.webhook:WebhookAction",
    "email_alert": "billflow.actions.email_alert:EmailAlertAction",
    "notification": "billflow.actions.notification:NotificationAction",
    "expression": "billflow.actions.expression:ExpressionAction",
}


def get_action_type(kind: str) -> ActionType:
    target = _ACTION_TYPES.get(kind)
    if target is None:
        raise ConfigurationError(f"action type {kind!r} is not available; known: {', '.join(sorted(_ACTION_TYPES))}")
    module, _, cls = target.partition(":")
    handler: ActionType = getattr(importlib.import_module(module), cls)()
    return handler
