"""Connection credentials and signing secrets, from Secrets Manager, cached briefly per container
(Powertools Parameters' cache).

Names: {prefix}/{tenant}/source/{source} holds {"signing_secret": ...};
{prefix}/{tenant}/connection/{name} holds {"type": "stripe", ...settings}.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC
from types import ModuleType
from typing import Any, Literal

from billflow.aws import client
from billflow.errors import ConfigurationError, TransientError
from billflow.settings import get_settings


@dataclass(frozen=True)
class Connection:
    """A named link to an external system. Secret values live in settings and are never printed."""

    name: str
    type: str
    settings: dict[str, Any] = field(repr=False)
    secret_id: str = ""

    def require(self, key: str) -> Any:
        value = self.settings.get(key)
        if value in (None, ""):
            raise ConfigurationError(f"connection {self.name!r} has no {key!r}")
        return value


SecretKind = Literal["source", "connection"]


def secret_name(tenant: str, kind: SecretKind, name: str, prefix: str | None = None) -> str:
    """The one place a secret's name is built: {prefix}/{tenant}/{kind}/{name} (prefix: SECRETS_PREFIX)."""
    base = (get_settings().secrets_prefix if prefix is None else prefix).rstrip("/")
    return f"{base}/{tenant}/{kind}/{name}"


class SecretStore:
    """Secret documents through Powertools Parameters: one cache per container, shared with every other
    Parameters call, each value kept for `cache_seconds` (SECRETS_CACHE_SECONDS)."""

    def __init__(self, prefix: str, cache_seconds: int) -> None:
        self._prefix = prefix.rstrip("/")
        self._cache_seconds = cache_seconds
        self._stale: set[str] = set()  # forgotten: the next read goes to Secrets Manager
        self._lock = threading.Lock()

    def source_secret_id(self, tenant: str, source: str) -> str:
        return secret_name(tenant, "source", source, self._prefix)

    def connection_secret_id(self, tenant: str, name: str) -> str:
        return secret_name(tenant, "connection", name, self._prefix)

    def signing_secret(self, tenant: str, source: str) -> str | None:
        doc = self._get(self.source_secret_id(tenant, source))
        secret = doc.get("signing_secret") if doc else None
        return secret if isinstance(secret, str) and secret else None

    def connection(self, tenant: str, name: str) -> Connection:
        secret_id = self.connection_secret_id(tenant, name)
        doc = self._get(secret_id)
        if not doc:
            raise ConfigurationError(f"tenant {tenant!r} has no connection {name!r}")
        kind = doc.get("type")
        if not isinstance(kind, str):
            raise ConfigurationError(f"connection {name!r} has no type")
        return Connection(name=name, type=kind, settings=doc, secret_id=secret_id)

    def forget(self, secret_id: str) -> None:
        with self._lock:
            self._stale.add(secret_id)

    def _get(self, secret_id: str) -> dict[str, Any] | None:
        parameters = _parameters()
        with self._lock:
            stale = secret_id in self._stale
            self._stale.discard(secret_id)
        try:
            raw = parameters.get_secret(secret_id, max_age=self._cache_seconds, force_fetch=stale)
        except parameters.GetParameterError as exc:
            code = _error_code(exc)
            if code == "ResourceNotFoundException":
                return None
            if code == "InternalServiceError":
                raise TransientError("Secrets Manager is unavailable") from exc
            raise
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ConfigurationError(f"secret {secret_id} is not a JSON object") from None
        if not isinstance(doc, dict):
            raise ConfigurationError(f"secret {secret_id} is not a JSON object")
        return doc


def read_secret(secret_id: str) -> Any:
    """A secret's JSON value read now, past every cache (a rotating OAuth token); None when there is no such
    secret. TransientError when Secrets Manager fails."""
    sm = client("secretsmanager")
    try:
        raw = sm.get_secret_value(SecretId=secret_id)["SecretString"]
    except sm.exceptions.ResourceNotFoundException:
        return None
    except sm.exceptions.InternalServiceError as exc:
        raise TransientError("Secrets Manager is unavailable") from exc
    return json.loads(raw)


def write_secret(secret_id: str, document: dict[str, Any]) -> None:
    """Store a new version of a secret document; the cached copy is dropped, so the next read sees it."""
    client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString=json.dumps(document, sort_keys=True))
    get_secret_store().forget(secret_id)


@dataclass(frozen=True)
class SecretSummary:
    """What may be shown of a connection's secret: its name, type, setting names and when it changed."""

    name: str
    type: str
    keys: list[str]
    updated_at: str | None
    settings_present: frozenset[str] = frozenset()


def list_connection_secrets(tenant: str, prefix: str | None = None) -> list[SecretSummary]:
    """Every connection secret of the tenant ({prefix}/{tenant}/connection/*), values read only to list
    their keys."""
    sm = client("secretsmanager")
    start = secret_name(tenant, "connection", "", prefix)
    found: list[SecretSummary] = []
    paging: dict[str, Any] = {}
    while True:
        page = sm.list_secrets(Filters=[{"Key": "name", "Values": [start]}], MaxResults=100, **paging)
        for entry in page.get("SecretList", []):
            secret_id = str(entry.get("Name", ""))
            if not secret_id.startswith(start) or "/" in secret_id[len(start):] or entry.get("DeletedDate"):
                continue
            summary = describe_connection_secret(secret_id, entry)
            if summary is not None:
                found.append(summary)
        token = page.get("NextToken")
        if not token:
            return sorted(found, key=lambda c: c.name)
        paging = {"NextToken": token}


def describe_connection_secret(secret_id: str, entry: dict[str, Any] | None = None) -> SecretSummary | None:
    """The summary of one connection secret, None when there is none."""
    sm = client("secretsmanager")
    try:
        if entry is None:
            entry = sm.describe_secret(SecretId=secret_id)
        raw = sm.get_secret_value(SecretId=secret_id)["SecretString"]
    except sm.exceptions.ResourceNotFoundException:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    changed = entry.get("LastChangedDate") or entry.get("CreatedDate")
    return SecretSummary(
        name=secret_id.rsplit("/", 1)[-1], type=str(doc.get("type", "")),
        keys=sorted(k for k in doc if k != "type"),
        updated_at=changed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if changed else None,
        settings_present=frozenset(k for k, v in doc.items() if v not in (None, "")),
    )


def put_secret(secret_id: str, document: dict[str, Any]) -> bool:
    """Create the secret or store a new version of it; True when it was created. The cached copy is dropped."""
    sm = client("secretsmanager")
    text = json.dumps(document, sort_keys=True)
    created = False
    try:
        sm.put_secret_value(SecretId=secret_id, SecretString=text)
    except sm.exceptions.ResourceNotFoundException:
        sm.create_secret(Name=secret_id, SecretString=text,
                         Description="billflow connection (settings and credentials)")
        created = True
    get_secret_store().forget(secret_id)
    return created


def delete_secret(secret_id: str) -> bool:
    """Delete the secret now (no recovery window: the name can be used again at once); False when absent."""
    sm = client("secretsmanager")
    try:
        # Forced deletes answer success for a secret that does not exist (AWS documents it): ask first.
        sm.describe_secret(SecretId=secret_id)
        sm.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    except sm.exceptions.ResourceNotFoundException:
        return False
    get_secret_store().forget(secret_id)
    return True


def _parameters() -> ModuleType:
    """Powertools Parameters, its shared Secrets Manager provider on billflow's client (one client per
    container, the one the local runtime and tests point at moto)."""
    # deferred: cold start; Parameters imports boto3 (~120 ms), which a function reading no secret never needs
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS  # deferred: as above

    provider = DEFAULT_PROVIDERS.get("secrets")
    current = client("secretsmanager")
    if provider is None or getattr(provider, "client", None) is not current:
        DEFAULT_PROVIDERS["secrets"] = parameters.SecretsProvider(boto3_client=current)
    return parameters


def _error_code(exc: Exception) -> str:
    """The AWS error code behind a Parameters error (it keeps the SDK's error as its context)."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


_store: SecretStore | None = None


def get_secret_store() -> SecretStore:
    global _store
    if _store is None:
        s = get_settings()
        _store = SecretStore(s.secrets_prefix, s.secrets_cache_seconds)
    return _store


def reset_secret_store() -> None:
    """Tests and the local runtime: forget the store and every cached secret (Parameters' shared cache)."""
    global _store
    _store = None
    constants = sys.modules.get("aws_lambda_powertools.utilities.parameters.constants")  # absent: nothing cached
    if constants is not None:
        constants.DEFAULT_PROVIDERS.pop("secrets", None)
