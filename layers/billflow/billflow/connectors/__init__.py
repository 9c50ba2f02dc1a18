"""Outbound connectors: one module per external system, behind one interface (base.Connector).

Adding a system is one new module and one line in _CONNECTORS. Modules are imported on first use, so a
function loads only the connector a run needs.
"""

from __future__ import annotations

import importlib

from billflow.connectors.base import Connector, CrmConnector, Testable
from billflow.errors import ConfigurationError

# connection type -> "module:Class"
_CONNECTORS = {
    "stripe": "billflow.connectors.stripe:StripeConnector",
    "webhook": "billflow.connectors.webhook:WebhookConnector",
    "twenty": "billflow.connectors.twenty:TwentyConnector",
    "hubspot": "billflow.connectors.hubspot:HubSpotConnector",
    "quickbooks": "billflow.connectors.quickbooks:QuickBooksConnector",
    "xero": "billflow.connectors.xero:XeroConnector",
    "zoho_books": "billflow.connectors.zoho_books:ZohoBooksConnector",
    "generic": "billflow.connectors.generic_crm:GenericCrmConnector",  # issue 11: any CRM, configured calls
}


def _load(kind: str) -> object:
    target = _CONNECTORS.get(kind)
    if target is None:
        raise ConfigurationError(f"no connector for {kind!r}; known: {', '.join(sorted(_CONNECTORS))}")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)()


def get_connector(kind: str) -> Connector:
    connector = _load(kind)
    if not isinstance(connector, Connector):
        raise ConfigurationError(f"{kind!r} is a CRM, not a target for documents or payloads")
    return connector


def get_crm(kind: str) -> CrmConnector:
    connector = _load(kind)
    if not isinstance(connector, CrmConnector):
        raise ConfigurationError(f"{kind!r} is not a CRM connection")
    return connector


def get_testable(kind: str) -> Testable:
    """Any connector, target or CRM, for checking a connection (billflow.logic.connections)."""
    connector = _load(kind)
    if not isinstance(connector, Testable):
        raise ConfigurationError(f"{kind!r} connections cannot be tested")
    return connector


def known_connectors() -> list[str]:
    return sorted(_CONNECTORS)
