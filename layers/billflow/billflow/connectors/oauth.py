"""OAuth2 bearer tokens for the accounting targets (QuickBooks Online, Xero, Zoho Books).

OAuthSession hands out an access token, refreshing it with the refresh_token grant when it is missing or
about to expire (REFRESH_MARGIN_SECONDS before settings["access_token_expires_at"]), and retries a call
after a 401 with a new token: the one another holder stored meanwhile, or, when that one is refused too
(or there was none), one this session refreshes itself. Only a token this session just refreshed being
refused means the grant is gone. The Authorization scheme is "Bearer" unless the provider spells it
otherwise (Zoho: auth_scheme="Zoho-oauthtoken"). `settings` is the connection's current settings, with
what the last refresh answered (Zoho's api_domain, the data centre the token belongs to).

Intuit and Xero rotate refresh tokens: every refresh may answer a new refresh token, and the one used
before stops working soon after. Losing the newest one means the tenant has to reconnect, so refreshes of
one connection are serialized (a lock per process, a DynamoDB lease across processes, see
storage/locks.py) and the holder:
  1. re-reads the secret (another process may have refreshed while this one waited),
  2. refreshes only if still needed,
  3. writes the whole secret JSON back to Secrets Manager (put_secret_value) and drops the cached copy.
Waiters poll briefly, re-reading the secret, and take the token another holder stored.

A revoked or expired grant (invalid_grant; Zoho answers invalid_code) raises AuthorizationRevoked, final:
only reconnecting helps, retrying never does.

Connection settings: client_id, client_secret, refresh_token, access_token, access_token_expires_at
(epoch seconds), token_url (optional, overrides the connector's default).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from billflow.connectors import http
from billflow.errors import AuthorizationRevoked, ConfigurationError, TargetRejected, TransientError
from billflow.storage.locks import Lease
from billflow.storage.secrets import Connection, read_secret, write_secret

logger = logging.getLogger(__name__)

REFRESH_MARGIN_SECONDS = 60
DEFAULT_EXPIRES_IN = 3600  # what Intuit and Zoho grant; used when an answer leaves expires_in out
REVOKED_ERRORS = frozenset({"invalid_grant", "invalid_code"})  # invalid_code: Zoho's spelling
CLIENT_AUTH_MODES = ("basic", "body")
# 401 rounds in one call: the stored token another holder refreshed, then one refreshed here; a third 401
# (another holder refreshed yet again, and that token is refused too) is a revoked grant, not a race.
MAX_UNAUTHORIZED_ROUNDS = 2

Settings = dict[str, Any]


def token_is_fresh(settings: Settings, now: float | None = None) -> bool:
    """True when settings hold an access token valid for at least REFRESH_MARGIN_SECONDS more."""
    token = settings.get("access_token")
    try:
        expires_at = float(settings.get("access_token_expires_at") or 0)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    return bool(token) and expires_at - REFRESH_MARGIN_SECONDS > current


# --- where tokens live -----------------------------------------------------------------------------
_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(key: str) -> threading.Lock:
    """Threads of one process queue here before competing for the DynamoDB lease."""
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.Lock())


class TokenStore(ABC):
    """The shared, current copy of a connection's settings, and the serialization of refreshes."""

    @abstractmethod
    def read(self, connection: Connection) -> Settings:
        """The connection's current settings, not a cached copy."""

    @abstractmethod
    def write(self, connection: Connection, settings: Settings) -> None:
        """Store settings as the connection's current ones (the whole document)."""

    def refresh(
        self, connection: Connection, needs_refresh: Callable[[Settings], bool],
        do_refresh: Callable[[Settings], Settings],
    ) -> Settings:
        """Run do_refresh on the newest settings unless another holder already made it unnecessary.

        Returns the settings to use from now on (stored before returning).
        """
        with _process_lock(self._key(connection)):
            current = self.read(connection)
            if not needs_refresh(current):
                return current
            return self._refresh_exclusively(connection, needs_refresh, do_refresh)

    def _refresh_exclusively(
        self, connection: Connection, needs_refresh: Callable[[Settings], bool],
        do_refresh: Callable[[Settings], Settings],
    ) -> Settings:
        updated = do_refresh(self.read(connection))
        self.write(connection, updated)
        return updated

    @staticmethod
    def _key(connection: Connection) -> str:
        return connection.secret_id or f"{connection.type}:{connection.name}"


class MemoryTokenStore(TokenStore):
    """Tokens kept in this process only: for connections that have no secret (local runs, previews).

    A rotated refresh token does not survive the process, which is why real connections use the secret.
    """

    def __init__(self) -> None:
        self._settings: dict[str, Settings] = {}
        self._guard = threading.Lock()

    def read(self, connection: Connection) -> Settings:
        with self._guard:
            return dict(self._settings.get(self._key(connection)) or connection.settings)

    def write(self, connection: Connection, settings: Settings) -> None:
        with self._guard:
            self._settings[self._key(connection)] = dict(settings)

    def clear(self) -> None:
        with self._guard:
            self._settings.clear()


class SecretsManagerTokenStore(TokenStore):
    """The connection's secret in Secrets Manager, refreshed under a DynamoDB lease named after it."""

    def __init__(
        self, *, lease_ttl_seconds: float = 30.0, wait_seconds: float = 35.0, poll_seconds: float = 0.1,
        max_poll_seconds: float = 1.0,
    ) -> None:
        self.lease_ttl_seconds = lease_ttl_seconds
        self.wait_seconds = wait_seconds  # a little longer than a lease lives: a dead holder's expires
        self.poll_seconds = poll_seconds
        self.max_poll_seconds = max_poll_seconds
        self._unsaved: dict[str, Settings] = {}  # refreshed but not yet stored (Secrets Manager failed)
        self._guard = threading.Lock()

    def read(self, connection: Connection) -> Settings:
        secret_id = self._secret_id(connection)
        with self._guard:
            pending = self._unsaved.get(secret_id)
        if pending is not None:
            self.write(connection, pending)  # a rotated token this process still holds is the newest
            return dict(pending)
        doc = read_secret(secret_id)
        if doc is None:
            raise ConfigurationError(f"connection {connection.name!r}: its secret is gone")
        if not isinstance(doc, dict):
            raise ConfigurationError(f"connection {connection.name!r}: its secret is not a JSON object")
        return doc

    def write(self, connection: Connection, settings: Settings) -> None:
        secret_id = self._secret_id(connection)
        try:
            write_secret(secret_id, settings)  # the next SecretStore read sees the new tokens
        except Exception as exc:
            # Keep the refreshed tokens: a rotated refresh token exists nowhere else. The next read in
            # this process stores them again before anything else is tried.
            with self._guard:
                self._unsaved[secret_id] = dict(settings)
            logger.error("could not store refreshed tokens of connection %s: %s", connection.name,
                         type(exc).__name__)
            raise TransientError(f"connection {connection.name!r}: refreshed tokens could not be stored") \
                from exc
        with self._guard:
            self._unsaved.pop(secret_id, None)

    def _refresh_exclusively(
        self, connection: Connection, needs_refresh: Callable[[Settings], bool],
        do_refresh: Callable[[Settings], Settings],
    ) -> Settings:
        lease = Lease(self._secret_id(connection), ttl_seconds=self.lease_ttl_seconds)
        deadline = time.monotonic() + self.wait_seconds
        pause = self.poll_seconds
        while not lease.try_acquire():
            time.sleep(pause)
            pause = min(pause * 2, self.max_poll_seconds)
            current = self.read(connection)
            if not needs_refresh(current):
                return current  # the holder refreshed and stored what this process needs
            if time.monotonic() > deadline:
                raise TransientError(f"connection {connection.name!r}: another refresh is still running")
        with lease:
            current = self.read(connection)  # the holder before may have refreshed just before releasing
            if not needs_refresh(current):
                return current
            updated = do_refresh(current)
            self.write(connection, updated)
            return updated

    @staticmethod
    def _secret_id(connection: Connection) -> str:
        if not connection.secret_id:
            raise ConfigurationError(f"connection {connection.name!r} has no secret to store tokens in")
        return connection.secret_id


_memory_store = MemoryTokenStore()
_secrets_store: SecretsManagerTokenStore | None = None


def default_store(connection: Connection) -> TokenStore:
    """The connection's secret when it has one, else this process's memory."""
    global _secrets_store
    if not connection.secret_id:
        return _memory_store
    if _secrets_store is None:
        _secrets_store = SecretsManagerTokenStore()
    return _secrets_store


def reset_token_stores() -> None:
    """Tests: forget tokens held in memory and any unsaved ones."""
    global _secrets_store
    _memory_store.clear()
    _secrets_store = None


# --- the session -----------------------------------------------------------------------------------
class OAuthSession:
    """Bearer-authenticated calls for one connection; thread-safe."""

    def __init__(
        self, connection: Connection, *, token_url: str, store: TokenStore | None = None,
        client_auth: str = "basic", auth_scheme: str = "Bearer",
    ) -> None:
        if client_auth not in CLIENT_AUTH_MODES:
            raise ValueError(f"client_auth must be one of {', '.join(CLIENT_AUTH_MODES)}")
        if not auth_scheme or any(c.isspace() for c in auth_scheme):
            raise ValueError("auth_scheme is one word, e.g. Bearer or Zoho-oauthtoken")
        self.connection = connection
        self.token_url = str(connection.settings.get("token_url") or token_url)
        self.client_auth = client_auth  # Intuit and Xero: HTTP Basic; Zoho: client id and secret in the body
        self.auth_scheme = auth_scheme  # Authorization: <scheme> <access token>
        self.refreshes = 0  # refresh grants this session sent (observability and tests)
        self._store = store if store is not None else default_store(connection)
        self._settings: Settings = dict(connection.settings)
        self._lock = threading.Lock()

    @property
    def settings(self) -> Settings:
        """The settings this session works with (a copy): the connection's, updated by the last refresh
        with what the token endpoint answered (new tokens, Zoho's api_domain)."""
        with self._lock:
            return dict(self._settings)

    def access_token(self) -> str:
        """A token valid for at least REFRESH_MARGIN_SECONDS; refreshed (once, for all threads) if not."""
        with self._lock:
            if not token_is_fresh(self._settings):
                self._settings = self._store.refresh(
                    self.connection, lambda s: not token_is_fresh(s), self._refresh_grant
                )
            return str(self._settings["access_token"])

    def request(
        self, method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None,
        target: str, raise_for_status: bool = True, timeout: float = http.DEFAULT_TIMEOUT,
    ) -> http.HttpResponse:
        """One call with the access token; after a 401, retried with a replaced token (see the module)."""
        token = self.access_token()
        answer = self._send(method, url, headers, body, token, target, timeout)
        rounds = 0
        refreshed_here = False
        while answer.status == 401:
            if refreshed_here or rounds >= MAX_UNAUTHORIZED_ROUNDS:
                raise AuthorizationRevoked(
                    f"{target} refuses a freshly refreshed access token ({http.error_message(answer)}); "
                    f"reconnect the {self.connection.name!r} connection",
                    connection=self.connection.name, status=401,
                )
            rounds += 1
            # False when the store handed back a token another holder refreshed: that one may be refused
            # too (revoked with the one before), which is no proof yet that the grant is gone.
            refreshed_here = self._refresh_rejected(token)
            token = self.access_token()
            answer = self._send(method, url, headers, body, token, target, timeout)
        if raise_for_status:
            http.raise_for(answer, target)
        return answer

    # --- internals -------------------------------------------------------------------------------
    def _send(
        self, method: str, url: str, headers: dict[str, str] | None, body: bytes | None, token: str,
        target: str, timeout: float,
    ) -> http.HttpResponse:
        sent = {**(headers or {}), "Authorization": f"{self.auth_scheme} {token}"}
        return http.request(method, url, headers=sent, body=body, target=target, timeout=timeout,
                            raise_for_status=False)

    def _refresh_rejected(self, rejected: str) -> bool:
        """The target refused `rejected` before it expired (revoked, or expired early): replace it.

        True when this session ran the refresh grant itself; False when it took a token someone else
        stored (another process, or another thread of this session).
        """

        def needs_refresh(settings: Settings) -> bool:
            return settings.get("access_token") == rejected or not token_is_fresh(settings)

        with self._lock:
            if self._settings.get("access_token") != rejected:
                return False
            before = self.refreshes
            self._settings = self._store.refresh(self.connection, needs_refresh, self._refresh_grant)
            return self.refreshes > before

    def _refresh_grant(self, current: Settings) -> Settings:
        """POST the refresh_token grant; the settings with the new tokens (nothing stored yet)."""
        name = self.connection.name
        target = f"{self.connection.type} token endpoint"
        refresh_token = current.get("refresh_token")
        if not refresh_token:
            raise AuthorizationRevoked(f"connection {name!r} has no refresh token; reconnect it",
                                       connection=name)
        client_id = current.get("client_id") or self.connection.settings.get("client_id")
        client_secret = current.get("client_secret") or self.connection.settings.get("client_secret")
        if not client_id or not client_secret:
            raise ConfigurationError(f"connection {name!r} needs client_id and client_secret")
        form = {"grant_type": "refresh_token", "refresh_token": str(refresh_token)}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.client_auth == "basic":
            pair = f"{client_id}:{client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form.update(client_id=str(client_id), client_secret=str(client_secret))
        self.refreshes += 1
        answer = http.request("POST", self.token_url, headers=headers, body=urlencode(form).encode(),
                              target=target, raise_for_status=False)
        doc = _json_object(answer)
        error = doc.get("error")
        if error in REVOKED_ERRORS:
            raise AuthorizationRevoked(
                f"{self.connection.type}: the authorization of connection {name!r} was revoked or has "
                f"expired ({error}); reconnect it", connection=name,
            )
        if answer.status == 429 or answer.status >= 500:
            http.raise_for(answer, target)  # TransientError with Retry-After
        if answer.status >= 400 or error or not doc.get("access_token"):
            described = doc.get("error_description") or error or http.error_message(answer)
            raise TargetRejected(f"{target} refused to refresh connection {name!r}: {described}",
                                 status=answer.status)
        try:
            expires_in = float(doc.get("expires_in") or DEFAULT_EXPIRES_IN)
        except (TypeError, ValueError):
            expires_in = DEFAULT_EXPIRES_IN
        now = time.time()
        updated = {
            **current,
            "access_token": doc["access_token"],
            "access_token_expires_at": int(now + expires_in),
            # a rotating provider answers the new refresh token; the others keep the one they had
            "refresh_token": doc.get("refresh_token") or refresh_token,
        }
        refresh_expires_in = doc.get("x_refresh_token_expires_in") or doc.get("refresh_token_expires_in")
        if isinstance(refresh_expires_in, int | float):
            updated["refresh_token_expires_at"] = int(now + refresh_expires_in)
        if isinstance(doc.get("api_domain"), str):
            updated["api_domain"] = doc["api_domain"]  # Zoho: the data centre the token belongs to
        return updated


def _json_object(answer: http.HttpResponse) -> dict[str, Any]:
    try:
        doc = answer.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        return doc
    if answer.status == 429 or answer.status >= 500:
        http.raise_for(answer, "token endpoint")
    raise TargetRejected(f"the token endpoint answered {answer.status} without a JSON object",
                         status=answer.status)
