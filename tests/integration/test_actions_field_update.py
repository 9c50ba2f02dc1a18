"""Field updates and expression fields written to the contract-checked fake Twenty, through the source's
connection in Secrets Manager (moto), as dispatch sends them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import billflow.aws
import billflow.settings
import billflow.storage.secrets
import pytest
from billflow.actions import get_action_type
from billflow.errors import TransientError
from moto import mock_aws

from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace
from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state

# Custom fields as a workspace creates them; custom text and number fields are nullable in Twenty (the
# generated OpenAPI says nothing about nullability, so the fake is told here).
CUSTOM_FIELDS = {"opportunity": {
    "invoiceNote": {"type": ["string", "null"]},
    "discountedAmountMicros": {"type": ["number", "null"]},
}}


def _reset() -> None:
    billflow.settings.get_settings.cache_clear()
    billflow.aws.reset_clients()
    billflow.storage.secrets.reset_secret_store()


@pytest.fixture
def twenty(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTwenty]:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "SECRETS_PREFIX": "billflow/test",
                        "EXPRESSION_TIMEOUT_MS": "500"}.items():
        monkeypatch.setenv(name, value)
    _reset()
    with mock_aws(), FakeTwenty(custom_fields=CUSTOM_FIELDS) as fake:
        fake.seed(load_sample_workspace())
        billflow.aws.client("secretsmanager").create_secret(
            Name="billflow/test/acme/connection/twenty", SecretString=json.dumps(fake.connection_settings()))
        yield fake
        assert fake.violations == []
    _reset()


def send(action: dict[str, Any]) -> Any:
    run = run_state(action, results=[INVOICE_RESULT])
    handler = get_action_type(run.actions[0].type)
    return handler.send(run.actions[0], handler.render(run.actions[0], run), run, "acme:run:1")


def test_a_field_update_patches_the_record(twenty: FakeTwenty) -> None:
    result = send({"type": "field_update", "field": "invoiceNote", "value": "Invoiced as ${INVOICE.ID}"})
    assert twenty.patched("opportunity", RECORD["id"]) == {"invoiceNote": "Invoiced as in_1Q2w3E"}
    assert twenty.get("opportunity", RECORD["id"])["invoiceNote"] == "Invoiced as in_1Q2w3E"  # type: ignore[index]
    assert result.status == "updated"
    assert result.details == {"fields": ["invoiceNote"]}


def test_update_with_an_empty_value_sends_null(twenty: FakeTwenty) -> None:
    send({"type": "field_update", "field": "invoiceNote", "value": "first"})
    send({"type": "field_update", "field": "invoiceNote", "value": ""})
    [_, clearing] = [p for p in twenty.patches if p.id == RECORD["id"]]
    assert clearing.fields == {"invoiceNote": None}
    assert twenty.get("opportunity", RECORD["id"])["invoiceNote"] is None  # type: ignore[index]


def test_a_composite_part(twenty: FakeTwenty) -> None:
    send({"type": "field_update", "field": "amount.currencyCode", "value": "EUR"})
    assert twenty.patched("opportunity", RECORD["id"]) == {"amount": {"currencyCode": "EUR"}}


def test_expression_fields_are_one_update(twenty: FakeTwenty) -> None:
    result = send({"type": "expression", "options": {
        "expression": "record.amount.amountMicros * 0.9 / 1000000",
        "fields": {"discountedAmountMicros": "$round(record.amount.amountMicros * 0.9)",
                   "invoiceNote": "'Discounted for ' & company.name", "stage": "record.noSuchField"},
    }})
    assert twenty.patched("opportunity", RECORD["id"]) == {
        "discountedAmountMicros": 11_250_000_000, "invoiceNote": "Discounted for Acme Robotics"}
    assert result.status == "updated"
    assert result.details == {"value": 11250, "fields": ["discountedAmountMicros", "invoiceNote"]}


def test_an_expression_without_fields_touches_nothing(twenty: FakeTwenty) -> None:
    result = send({"type": "expression", "options": {"expression": "$count(results)"}})
    assert twenty.patches == []
    assert result.details["value"] == 1


def test_a_crm_outage_is_transient(twenty: FakeTwenty) -> None:
    twenty.fail_next(503)
    with pytest.raises(TransientError):
        send({"type": "field_update", "field": "invoiceNote", "value": "x"})
