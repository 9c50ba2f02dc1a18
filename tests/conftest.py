"""Fixtures shared across the test folders."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import billflow.aws
import billflow.settings
import billflow.storage.secrets
import pytest
from billflow.connectors import oauth
from billflow.models.documents import InvoiceDraft
from moto import mock_aws

from tests.fakes.oauth_server import OAuthFake

# Every fake a test starts listens on 127.0.0.1: allowed explicitly, as the local runtime does (netguard).
os.environ.setdefault("ALLOW_LOOPBACK_TARGETS", "true")

COUNTERS = "billflow-counters-test"
SECRETS_PREFIX = "billflow/test"


def reset_aws_caches() -> None:
    """Forget cached settings, boto3 clients, the secret store and token stores, which outlive a moto mock."""
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    billflow.storage.secrets.reset_secret_store()
    oauth.reset_token_stores()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto AWS with the DynamoDB counters table (rate limits, refresh leases) and Secrets Manager under
    SECRETS_PREFIX, with every cache that holds a client or a setting reset around it."""
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "COUNTERS_TABLE": COUNTERS, "SECRETS_PREFIX": SECRETS_PREFIX,
    }.items():
        monkeypatch.setenv(name, value)
    reset_aws_caches()
    with mock_aws():
        billflow.aws.client("dynamodb").create_table(
            TableName=COUNTERS, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        yield
    reset_aws_caches()


@pytest.fixture
def idp_style() -> str:
    """Whose token endpoint the fake IdP imitates; a test module overrides this fixture for another one."""
    return "intuit"


@pytest.fixture
def idp(idp_style: str) -> Iterator[OAuthFake]:
    """The fake OAuth token endpoint, which must have seen no request the real one would refuse."""
    oauth.reset_token_stores()  # an access token cached by an earlier test would skip the refresh
    with OAuthFake(style=idp_style) as server:
        yield server
        assert server.violations == []
    oauth.reset_token_stores()


def invoice_draft(**fields: Any) -> InvoiceDraft:
    """A one-line USD invoice for Globex dated 2024-03-01; `fields` replace the top-level fields."""
    doc: dict[str, Any] = {
        "customer": {"name": "Globex Ltd", "email": "ap@globex.test"},
        "currency": "usd",
        "lines": [{"description": "Widget, blue", "quantity": 2, "unit_amount_minor": 1999, "sku": "W-1"}],
        "days_until_due": 14,
        "reference": "Deal 42",
        "options": {"date": "2024-03-01"},
    }
    doc.update(fields)
    return InvoiceDraft.model_validate(doc)
