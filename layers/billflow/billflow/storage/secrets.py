"""Connection credentials and signing secrets, from Secrets Manager, cached briefly per container.

Names: {prefix}/{tenant}/source/{source} holds {"signing_secret": ...};
{prefix}/{tenant}/connection/{name} holds {"type": "stripe", ...settings}.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

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


class SecretStore:
    def __init__(self, prefix: str, cache_seconds: int) -> None:
        self._prefix = prefix.rstrip("/")
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def source_secret_id(self, tenant: str, source: str) -> str:
        return f"{self._prefix}/{tenant}/source/{source}"

    def connection_secret_id(self, tenant: str, name: str) -> str:
        return f"{self._prefix}/{tenant}/connection/{name}"

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
            self._cache.pop(secret_id, None)

    def _get(self, secret_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(secret_id)
        if hit and now - hit[0] < self._cache_seconds:
            return hit[1]
        sm = client("secretsmanager")
        try:
            raw = sm.get_secret_value(SecretId=secret_id)["SecretString"]
        except sm.exceptions.ResourceNotFoundException:
            return None
        except sm.exceptions.InternalServiceError as exc:
            raise TransientError("Secrets Manager is unavailable") from exc
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ConfigurationError(f"secret {secret_id} is not a JSON object") from None
        if not isinstance(doc, dict):
            raise ConfigurationError(f"secret {secret_id} is not a JSON object")
        with self._lock:
            self._cache[secret_id] = (now, doc)
        return doc


_store: SecretStore | None = None


def get_secret_store() -> SecretStore:
    global _store
    if _store is None:
        s = get_settings()
        _store = SecretStore(s.secrets_prefix, s.secrets_cache_seconds)
    return _store


def reset_secret_store() -> None:
    global _store
    _store = None
