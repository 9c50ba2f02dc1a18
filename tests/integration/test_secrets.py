"""Secrets through Powertools Parameters: one shared cache per container, max_age from SECRETS_CACHE_SECONDS."""

from __future__ import annotations

import json
from typing import Any

import billflow.aws
import billflow.settings
import billflow.storage.secrets
import pytest
from aws_lambda_powertools.utilities import parameters
from billflow.errors import ConfigurationError
from billflow.storage.secrets import get_secret_store, secret_name, write_secret

from tests.conftest import SECRETS_PREFIX

TENANT = "acme"


def count_reads() -> list[str]:
    """The SecretId of every GetSecretValue call billflow's client makes from now on."""
    calls: list[str] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        calls.append(params["SecretId"])

    billflow.aws.client("secretsmanager").meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue", seen)
    return calls


def put(name: str, document: Any) -> str:
    secret_id = secret_name(TENANT, "connection", name)
    billflow.aws.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps(document))
    return secret_id


def test_the_secret_name_is_built_in_one_place(aws: None) -> None:
    assert secret_name(TENANT, "source", "twenty") == f"{SECRETS_PREFIX}/acme/source/twenty"
    expected = f"{SECRETS_PREFIX}/acme/connection/stripe-main"
    assert get_secret_store().connection_secret_id(TENANT, "stripe-main") == expected
    assert secret_name("t", "connection", "x", prefix="p/") == "p/t/connection/x"


def test_a_read_secret_is_served_from_the_powertools_cache_until_cleared(aws: None) -> None:
    put("stripe-main", {"type": "stripe", "api_key": "sk_test_1"})
    calls = count_reads()
    store = get_secret_store()
    assert store.connection(TENANT, "stripe-main").settings["api_key"] == "sk_test_1"
    assert store.connection(TENANT, "stripe-main").type == "stripe"
    assert len(calls) == 1  # the second read came from the cache
    parameters.clear_caches()  # Powertools' shared cache is the one billflow uses
    store.connection(TENANT, "stripe-main")
    assert len(calls) == 2


def test_a_written_secret_is_read_again_at_once(aws: None) -> None:
    secret_id = put("qbo", {"type": "quickbooks", "refresh_token": "old"})
    store = get_secret_store()
    assert store.connection(TENANT, "qbo").settings["refresh_token"] == "old"
    write_secret(secret_id, {"type": "quickbooks", "refresh_token": "new"})
    assert store.connection(TENANT, "qbo").settings["refresh_token"] == "new"


def test_max_age_comes_from_the_settings(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_CACHE_SECONDS", "0")  # no caching at all
    billflow.settings.get_settings.cache_clear()
    billflow.storage.secrets.reset_secret_store()
    put("hook", {"type": "webhook", "url": "https://hooks.example.com/x"})
    calls = count_reads()
    get_secret_store().connection(TENANT, "hook")
    get_secret_store().connection(TENANT, "hook")
    assert len(calls) == 2


def test_missing_and_malformed_secrets(aws: None) -> None:
    store = get_secret_store()
    with pytest.raises(ConfigurationError, match="has no connection 'nothing'"):
        store.connection(TENANT, "nothing")
    assert store.signing_secret(TENANT, "twenty") is None
    put("broken", ["not", "an", "object"])
    with pytest.raises(ConfigurationError, match="is not a JSON object"):
        store.connection(TENANT, "broken")


def test_a_sources_whole_document_is_its_settings(aws: None) -> None:
    document = {"signing_secret": "client-secret", "signature_versions": ["v3"], "portal_ids": [62515]}
    billflow.aws.client("secretsmanager").create_secret(
        Name=secret_name(TENANT, "source", "hubspot"), SecretString=json.dumps(document))
    store = get_secret_store()
    assert store.source_settings(TENANT, "hubspot") == document
    assert store.signing_secret(TENANT, "hubspot") == "client-secret"
    assert store.source_settings(TENANT, "twenty") is None
