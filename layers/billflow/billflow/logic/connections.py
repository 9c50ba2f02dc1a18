"""Connections tested before the first deal: one harmless documented read per connection, with a report of
what a rule author needs (the account reached, its currency, tax regime, what the grant allows).

The read is the connector's own (Connector.test_connection): Stripe GET /v1/account, QuickBooks companyinfo
and preferences, Xero GET /Organisation, Zoho Books GET /organizations, Twenty GET /rest/opportunities?limit=1.
OAuth tokens are refreshed on the way, as for a send. A connection that does not answer as it should gives a
report with ok false and the target's reason, never an exception: the CLI and the admin API show it as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from billflow.connectors import get_testable, known_connectors
from billflow.connectors.base import ConnectionReport, Testable
from billflow.errors import BillflowError, InvalidRequest, NotFound
from billflow.models.admin import ConnectionAnswer, ConnectionRequest, ConnectionSummary
from billflow.storage.secrets import (
    SecretStore,
    SecretSummary,
    delete_secret,
    describe_connection_secret,
    get_secret_store,
    list_connection_secrets,
    put_secret,
    read_secret,
    secret_name,
)


def check_connection(
    tenant: str, name: str, *, secrets: SecretStore | None = None,
    connectors: Callable[[str], Testable] = get_testable,
) -> ConnectionReport:
    """Test the tenant's connection `name`. A connection that does not exist raises as the secret store does
    (NotFound or ConfigurationError); everything the read itself meets is in the report."""
    connection = (secrets or get_secret_store()).connection(tenant, name)
    try:
        return connectors(connection.type).test_connection(connection, tenant)
    except BillflowError as error:
        return ConnectionReport(connection=name, kind=connection.type, ok=False, checked="",
                                error=f"{type(error).__name__}: {error.message}")


# ------------------------------------------------------------------------------------------- managing connections
# What a connection of each type must carry when it is saved: any one of the key sets. OAuth types need only
# their app's client id and secret: the connect flow (logic/oauth_connect.py) stores the grant (refresh token,
# and QuickBooks' realm_id) afterwards. Types not listed need nothing beyond their type.
REQUIRED_SETTINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "stripe": (("api_key",),),
    "webhook": (("url",),),
    "twenty": (("api_key", "base_url"),),
    "quickbooks": (("client_id", "client_secret"),),
    "xero": (("client_id", "client_secret"),),
    "zoho_books": (("client_id", "client_secret", "organization_id"),),
    "hubspot": (("access_token",), ("client_id", "client_secret")),  # a private app's token, or an OAuth app
}
OAUTH_TYPES = frozenset({"quickbooks", "xero", "zoho_books", "hubspot"})
CONNECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SETTING_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_SECRET_BYTES = 60_000  # Secrets Manager stores at most 65,536 bytes per value


def connection_types() -> list[str]:
    return sorted(set(known_connectors()) | set(REQUIRED_SETTINGS))


def check_connection_name(name: str) -> str:
    if not CONNECTION_NAME.match(name):
        raise InvalidRequest(f"connection name {name!r}: lowercase letters, digits, '-' and '_' (at most 63), "
                             "e.g. stripe-main")
    return name


def summary(found: SecretSummary) -> ConnectionSummary:
    connected = "refresh_token" in found.settings_present if found.type in OAUTH_TYPES else None
    return ConnectionSummary(name=found.name, type=found.type, keys=found.keys, updated_at=found.updated_at,
                             connected=connected)


def list_connections(tenant: str) -> list[ConnectionSummary]:
    return [summary(found) for found in list_connection_secrets(tenant)]


def save_connection(tenant: str, name: str, request: ConnectionRequest) -> ConnectionAnswer:
    """Create or update the connection's secret: settings merged into the stored ones (same type, unless
    `replace`), a null value removing a key; checked against the type's required settings before writing."""
    check_connection_name(name)
    kind = request.type
    if kind not in connection_types():
        raise InvalidRequest(f"type: unknown connection type {kind!r}; known: {', '.join(connection_types())}",
                             fields=["type"])
    bad = sorted(k for k in request.settings if k == "type" or not SETTING_NAME.match(k))
    if bad:
        raise InvalidRequest(f"settings: {', '.join(bad)}: setting names are letters, digits and '_' (and not "
                             "'type', given beside settings)", fields=[f"settings.{k}" for k in bad])
    secret_id = secret_name(tenant, "connection", name)
    current = read_secret(secret_id)
    stored = current if isinstance(current, dict) else {}
    base = {} if request.replace or stored.get("type") != kind else {k: v for k, v in stored.items() if k != "type"}
    for key, value in request.settings.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    missing = _missing(kind, base)
    if missing:
        raise InvalidRequest(f"settings: a {kind} connection needs {missing}", fields=["settings"])
    document = {"type": kind, **base}
    if len(json.dumps(document).encode()) > MAX_SECRET_BYTES:
        raise InvalidRequest(f"settings: larger than {MAX_SECRET_BYTES} bytes", fields=["settings"])
    created = put_secret(secret_id, document)
    found = describe_connection_secret(secret_id)
    if found is None:  # deleted between the write and this read: say what was written
        found = SecretSummary(name=name, type=kind, keys=sorted(base), updated_at=None,
                              settings_present=frozenset(base))
    return ConnectionAnswer(connection=summary(found), created=created)


def _missing(kind: str, settings: dict[str, Any]) -> str:
    """'' when one of the type's key sets is complete, else what to give ('api_key' or 'a or b and c')."""
    options = REQUIRED_SETTINGS.get(kind)
    if not options:
        return ""
    present = {k for k, v in settings.items() if v not in (None, "")}
    if any(set(option) <= present for option in options):
        return ""
    return " or ".join(" and ".join(option) for option in options)


def delete_connection(tenant: str, name: str) -> None:
    check_connection_name(name)
    if not delete_secret(secret_name(tenant, "connection", name)):
        raise NotFound(f"tenant {tenant} has no connection {name!r}")
