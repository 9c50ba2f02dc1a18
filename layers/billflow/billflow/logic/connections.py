"""Connections tested before the first deal: one harmless documented read per connection, with a report of
what a rule author needs (the account reached, its currency, tax regime, what the grant allows).

The read is the connector's own (Connector.test_connection): Stripe GET /v1/account, QuickBooks companyinfo
and preferences, Xero GET /Organisation, Zoho Books GET /organizations, Twenty GET /rest/opportunities?limit=1.
OAuth tokens are refreshed on the way, as for a send. A connection that does not answer as it should gives a
report with ok false and the target's reason, never an exception: the CLI and the admin API show it as is.
"""

from __future__ import annotations

from collections.abc import Callable

from billflow.connectors import get_testable
from billflow.connectors.base import ConnectionReport, Testable
from billflow.errors import BillflowError
from billflow.storage.secrets import SecretStore, get_secret_store


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
