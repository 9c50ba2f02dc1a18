"""Connections tested before the first deal (issue 9): each connector's harmless documented read against its
fake, and billflow.logic.connections.check_connection through the registry and Secrets Manager (moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import billflow.aws
import pytest
from billflow.connectors.base import ConnectionReport
from billflow.connectors.quickbooks import QuickBooksConnector
from billflow.connectors.stripe import StripeConnector
from billflow.connectors.twenty import TwentyConnector
from billflow.connectors.xero import XeroConnector
from billflow.errors import ConfigurationError
from billflow.logic.connections import check_connection
from billflow.storage.secrets import Connection, get_secret_store

from tests.fakes.oauth_server import OAuthFake
from tests.fakes.quickbooks_server import QuickBooksFake
from tests.fakes.stripe_server import FakeStripe
from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace
from tests.fakes.xero_server import FakeXero

TENANT = "acme"


def store_connection(name: str, doc: dict[str, Any]) -> None:
    billflow.aws.client("secretsmanager").create_secret(
        Name=get_secret_store().connection_secret_id(TENANT, name), SecretString=json.dumps(doc))


def oauth_settings(idp: OAuthFake, **settings: Any) -> dict[str, Any]:
    """A grant whose access token has expired: the test must refresh it first, as a send would."""
    return {"token_url": idp.token_url, "client_id": "client-1", "client_secret": "client-secret-1",
            "refresh_token": idp.grant(), **settings}


# --- Stripe: GET /v1/account --------------------------------------------------------------------------
@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe(seed=3) as fake:
        yield fake


def test_stripe_reports_the_account_its_currency_and_what_the_key_may_do(stripe: FakeStripe) -> None:
    connection = Connection("stripe-main", "stripe", {"api_key": stripe.api_key, "base_url": stripe.url})
    report = StripeConnector().test_connection(connection, TENANT)

    assert report == ConnectionReport(
        connection="stripe-main", kind="stripe", checked="GET /v1/account", account_name="Billflow Test Ltd",
        account_id="acct_1BillflowFake", currency="EUR",
        tax_regime="tax rates chosen per rule (options tax_rates, tax_rates_on)",
        can_create={"invoice": True}, notes=["country DE"])
    assert [(r.method, r.path) for r in stripe.requests] == [("GET", "/v1/account")]
    assert stripe.violations == []


def test_a_restricted_stripe_key_cannot_be_told_to_write_invoices(stripe: FakeStripe) -> None:
    restricted = "rk_test_" + stripe.api_key.removeprefix("sk_test_")
    stripe.api_key = restricted
    report = StripeConnector().test_connection(
        Connection("s", "stripe", {"api_key": restricted, "base_url": stripe.url}), TENANT)
    assert report.can_create == {"invoice": None}
    assert any("restricted key" in note for note in report.notes)


# --- QuickBooks: companyinfo and preferences ----------------------------------------------------------
def test_quickbooks_reports_company_home_currency_multicurrency_and_tax_regime(idp: OAuthFake) -> None:
    with QuickBooksFake(idp) as qbo:
        qbo.add_realm("9130", country="GB", multicurrency=True).company_name = "Acme UK Ltd"
        connection = Connection("qbo", "quickbooks", oauth_settings(idp, realm_id="9130", base_url=qbo.url))
        report = QuickBooksConnector().test_connection(connection, TENANT)

        assert (report.account_name, report.account_id, report.currency, report.multicurrency) == (
            "Acme UK Ltd", "9130", "GBP", True)
        assert report.tax_regime == "VAT/GST (GB): a TaxCode on every line"
        assert report.can_create["invoice"] is True
        assert any("default_tax_code" in note for note in report.notes)
        assert [r.path.rsplit("/", 2)[-2:] for r in qbo.requests] == [["companyinfo", "9130"], ["9130", "preferences"]]
        assert idp.refreshes == 1  # the expired token was refreshed first
        assert qbo.violations == []


# --- Xero: GET /Organisation --------------------------------------------------------------------------
@pytest.fixture
def xero(idp: OAuthFake, aws: None) -> Iterator[FakeXero]:
    fake = FakeXero(token=None, base_currency="GBP")
    fake.use_oauth(idp)
    fake.organisation.country_code, fake.organisation.tax_number = "GB", "GB123456789"
    with fake:
        yield fake


def test_xero_reports_the_organisation_base_currency_and_tax_settings(xero: FakeXero, idp: OAuthFake) -> None:
    connection = Connection("xero", "xero", oauth_settings(idp, tenant_id=xero.tenant_id, base_url=xero.url,
                                                           scope="offline_access accounting.transactions"))
    report = XeroConnector().test_connection(connection, TENANT)

    assert (report.account_name, report.currency, report.checked) == ("Billflow Test Org", "GBP", "GET /Organisation")
    assert report.tax_regime == "GB, sales tax basis ACCRUALS, tax number on file"
    assert report.can_create == {"invoice": True, "estimate": True}
    assert xero.violations == []


def test_xero_without_stored_scopes_says_it_cannot_tell(xero: FakeXero, idp: OAuthFake) -> None:
    connection = Connection("xero", "xero", oauth_settings(idp, tenant_id=xero.tenant_id, base_url=xero.url))
    report = XeroConnector().test_connection(connection, TENANT)
    assert report.can_create == {"invoice": None, "estimate": None}
    assert "accounting.transactions" in report.notes[0]


# --- Zoho Books: GET /organizations, in tests/integration/test_zoho_books_connector.py (Zoho's token style)


# --- Twenty: GET /rest/opportunities?limit=1 ------------------------------------------------------------
def test_twenty_reads_one_opportunity() -> None:
    with FakeTwenty() as twenty:
        twenty.seed(load_sample_workspace())
        connection = Connection("twenty", "twenty", {"api_key": twenty.api_key, "base_url": twenty.url})
        report = TwentyConnector().test_connection(connection, TENANT)
        [request] = twenty.requests
        assert (request.path, request.query) == ("/rest/opportunities", {"limit": ["1"]})
        assert report.ok and report.checked == "GET /rest/opportunities?limit=1"
        assert twenty.violations == []


# --- the orchestration ----------------------------------------------------------------------------------
def test_check_connection_loads_the_connection_and_reports(aws: None, stripe: FakeStripe) -> None:
    store_connection("stripe-main", {"type": "stripe", "api_key": stripe.api_key, "base_url": stripe.url})
    report = check_connection(TENANT, "stripe-main")
    assert (report.ok, report.account_name, report.currency) == (True, "Billflow Test Ltd", "EUR")


def test_a_refused_key_is_a_failed_report_with_the_reason(aws: None, stripe: FakeStripe) -> None:
    store_connection("stripe-old", {"type": "stripe", "api_key": "sk_test_revoked", "base_url": stripe.url})
    report = check_connection(TENANT, "stripe-old")
    assert report.ok is False
    assert report.error is not None and report.error.startswith("TargetRejected: ")
    assert "sk_test_revoked" not in report.error
    stripe.violations.clear()  # the refused key is the point of this test


def test_a_connection_that_cannot_be_tested_says_so(aws: None) -> None:
    store_connection("hook", {"type": "webhook", "url": "https://example.test/hook"})
    report = check_connection(TENANT, "hook")
    assert (report.ok, report.error) == (False, "ConfigurationError: webhook connections cannot be tested")


def test_an_unknown_connection_raises(aws: None) -> None:
    with pytest.raises(ConfigurationError, match="no connection 'nope'"):
        check_connection(TENANT, "nope")
