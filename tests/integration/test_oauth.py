"""OAuthSession against the fake token endpoint, with Secrets Manager and the DynamoDB lease on moto."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import billflow.aws
import pytest
from billflow.connectors import oauth
from billflow.connectors.oauth import MemoryTokenStore, OAuthSession, SecretsManagerTokenStore
from billflow.errors import AuthorizationRevoked, TargetRejected, TransientError
from billflow.storage.locks import Lease
from billflow.storage.secrets import Connection, get_secret_store

from tests.conftest import COUNTERS
from tests.fakes.base import FakeServer, Request, Response
from tests.fakes.oauth_server import OAuthFake

TENANT = "acme"


# --- fixtures --------------------------------------------------------------------------------------
class ProtectedApi(FakeServer):
    """An API that takes the fake IdP's bearer tokens, answering 401 like Intuit for anything else."""

    name = "fake-api"

    def __init__(self, idp: OAuthFake, scheme: str = "Bearer") -> None:
        super().__init__()
        self.idp = idp
        self.scheme = scheme
        self.always_401 = False
        self.route("GET", "/thing", self._thing)

    def _thing(self, req: Request) -> Response:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if self.always_401 or scheme != self.scheme or not self.idp.access_token_valid(token):
            return Response(401, {"fault": {"error": [{"message": "message=AuthenticationFailed",
                                                       "detail": "Token expired", "code": "3200"}],
                                            "type": "AUTHENTICATION"}})
        return Response(200, {"ok": True})


@pytest.fixture
def api(idp: OAuthFake) -> Iterator[ProtectedApi]:
    with ProtectedApi(idp) as server:
        yield server


def _settings(idp: OAuthFake, **extra: Any) -> dict[str, Any]:
    return {"type": "quickbooks", "client_id": "client-1", "client_secret": "client-secret-1",
            "refresh_token": idp.grant(), "realm_id": "9130", **extra}


def _store_connection(settings: dict[str, Any], name: str = "qbo") -> Connection:
    """Put the secret where SecretStore looks and load the connection the way dispatch does."""
    store = get_secret_store()
    billflow.aws.client("secretsmanager").create_secret(
        Name=store.connection_secret_id(TENANT, name), SecretString=json.dumps(settings))
    return store.connection(TENANT, name)


def _secret(connection: Connection) -> dict[str, Any]:
    raw = billflow.aws.client("secretsmanager").get_secret_value(SecretId=connection.secret_id)
    doc = json.loads(raw["SecretString"])
    assert isinstance(doc, dict)
    return doc


# --- refreshing ------------------------------------------------------------------------------------
def test_a_fresh_access_token_is_used_without_refreshing(aws: None, idp: OAuthFake, api: ProtectedApi) -> None:
    settings = _settings(idp)
    settings["access_token"] = idp.issue_access_token(settings["refresh_token"])
    settings["access_token_expires_at"] = int(time.time()) + 3000
    session = OAuthSession(_store_connection(settings), token_url=idp.token_url)

    assert session.request("GET", api.url + "/thing", target="api").json() == {"ok": True}
    assert idp.refreshes == 0
    assert session.refreshes == 0


def test_a_missing_token_is_refreshed_and_the_rotated_refresh_token_stored(
    aws: None, idp: OAuthFake, api: ProtectedApi
) -> None:
    connection = _store_connection(_settings(idp))
    first_refresh_token = connection.settings["refresh_token"]
    session = OAuthSession(connection, token_url=idp.token_url)

    assert session.request("GET", api.url + "/thing", target="api").status == 200

    assert idp.refreshes == 1
    stored = _secret(connection)
    assert stored["refresh_token"] == idp.current_refresh_token() != first_refresh_token
    assert idp.access_token_valid(stored["access_token"])
    assert stored["access_token_expires_at"] > time.time() + 3000
    assert stored["refresh_token_expires_at"] > time.time() + 100 * 86400  # Intuit's x_refresh_token_expires_in
    assert stored["realm_id"] == "9130"
    assert stored["type"] == "quickbooks"
    # SecretStore's cached copy was dropped: the next load sees the new tokens
    assert get_secret_store().connection(TENANT, "qbo").settings["refresh_token"] == stored["refresh_token"]


def test_a_token_expiring_within_the_margin_is_refreshed(aws: None, idp: OAuthFake) -> None:
    settings = _settings(idp)
    settings["access_token"] = idp.issue_access_token(settings["refresh_token"])
    settings["access_token_expires_at"] = int(time.time()) + oauth.REFRESH_MARGIN_SECONDS - 5
    session = OAuthSession(_store_connection(settings), token_url=idp.token_url)

    assert session.access_token() != settings["access_token"]
    assert idp.refreshes == 1


def test_a_401_mid_run_refreshes_once_and_retries(aws: None, idp: OAuthFake, api: ProtectedApi) -> None:
    session = OAuthSession(_store_connection(_settings(idp)), token_url=idp.token_url)
    assert session.request("GET", api.url + "/thing", target="api").status == 200
    idp.expire_access_tokens()  # revoked early, although its expires_at says it is still good

    assert session.request("GET", api.url + "/thing", target="api").status == 200
    assert idp.refreshes == 2
    assert [r.path for r in api.requests] == ["/thing"] * 3  # ok, 401, retried ok


def test_a_401_after_refreshing_means_reconnect(aws: None, idp: OAuthFake, api: ProtectedApi) -> None:
    api.always_401 = True
    session = OAuthSession(_store_connection(_settings(idp)), token_url=idp.token_url)

    with pytest.raises(AuthorizationRevoked, match="reconnect"):
        session.request("GET", api.url + "/thing", target="api")
    assert idp.refreshes == 2  # the first token, then one refresh after the 401; no loop
    assert len(api.requests) == 2


def _another_process_refreshed(connection: Connection, idp: OAuthFake) -> str:
    """Store a newer access token, as another container's refresh would: the secret says it is good."""
    stored = _secret(connection)
    stored["access_token"] = idp.issue_access_token(stored["refresh_token"])
    stored["access_token_expires_at"] = int(time.time()) + 3000
    billflow.aws.client("secretsmanager").put_secret_value(
        SecretId=connection.secret_id, SecretString=json.dumps(stored))
    return str(stored["access_token"])


def test_a_stored_token_refused_too_is_refreshed_once_more(aws: None, idp: OAuthFake, api: ProtectedApi) -> None:
    connection = _store_connection(_settings(idp))
    session = OAuthSession(connection, token_url=idp.token_url)
    first = session.access_token()
    stored = _another_process_refreshed(connection, idp)
    idp.expire_access_tokens()  # both the session's token and the stored one are refused from now on

    assert session.request("GET", api.url + "/thing", target="api").status == 200

    sent = [r.headers["authorization"].removeprefix("Bearer ") for r in api.requests]
    assert sent[:2] == [first, stored]  # 401 with its own token, 401 with the stored one, then refreshed
    assert len(sent) == 3 and sent[2] not in (first, stored)
    assert idp.refreshes == 2  # the session's first token, then one refresh after the stored one failed
    assert session.refreshes == 2
    assert _secret(connection)["access_token"] == sent[2]
    assert idp.stale_refreshes == []


def test_a_stored_token_refused_then_a_refreshed_one_refused_means_reconnect(
    aws: None, idp: OAuthFake, api: ProtectedApi
) -> None:
    connection = _store_connection(_settings(idp))
    session = OAuthSession(connection, token_url=idp.token_url)
    session.access_token()
    _another_process_refreshed(connection, idp)
    api.always_401 = True

    with pytest.raises(AuthorizationRevoked, match="reconnect"):
        session.request("GET", api.url + "/thing", target="api")
    assert len(api.requests) == 3  # its own token, the stored one, one it refreshed itself; no loop
    assert idp.refreshes == 2


def test_a_stored_token_refused_with_a_revoked_grant_is_authorization_revoked(
    aws: None, idp: OAuthFake, api: ProtectedApi
) -> None:
    connection = _store_connection(_settings(idp))
    session = OAuthSession(connection, token_url=idp.token_url)
    session.access_token()
    _another_process_refreshed(connection, idp)
    idp.revoke()

    with pytest.raises(AuthorizationRevoked, match="revoked"):
        session.request("GET", api.url + "/thing", target="api")
    assert len(api.requests) == 2


def test_revoked_grant_raises_authorization_revoked_not_transient(aws: None, idp: OAuthFake) -> None:
    session = OAuthSession(_store_connection(_settings(idp)), token_url=idp.token_url)
    idp.revoke()

    with pytest.raises(AuthorizationRevoked, match="reconnect") as caught:
        session.access_token()
    assert not isinstance(caught.value, TransientError)
    assert isinstance(caught.value, TargetRejected)  # final: the state machine does not retry it


def test_no_refresh_token_means_reconnect(aws: None, idp: OAuthFake) -> None:
    settings = _settings(idp)
    del settings["refresh_token"]
    with pytest.raises(AuthorizationRevoked, match="reconnect"):
        OAuthSession(_store_connection(settings), token_url=idp.token_url).access_token()


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_token_endpoint_is_transient(aws: None, idp: OAuthFake, status: int) -> None:
    idp.fail_next(status, {"error": "temporarily_unavailable"}, {"Retry-After": "12"})
    session = OAuthSession(_store_connection(_settings(idp)), token_url=idp.token_url)

    with pytest.raises(TransientError) as caught:
        session.access_token()
    assert caught.value.retry_after_seconds == 12
    assert session.access_token()  # the grant still works once the endpoint is back


def test_wrong_client_secret_is_rejected_with_the_reason(aws: None, idp: OAuthFake) -> None:
    session = OAuthSession(_store_connection(_settings(idp, client_secret="wrong")), token_url=idp.token_url)
    with pytest.raises(TargetRejected, match="client authentication failed") as caught:
        session.access_token()
    assert not isinstance(caught.value, AuthorizationRevoked)


def test_token_url_setting_overrides_the_default(aws: None, idp: OAuthFake) -> None:
    connection = _store_connection(_settings(idp, token_url=idp.token_url))
    assert OAuthSession(connection, token_url="https://example.invalid/token").access_token()
    assert idp.refreshes == 1


# --- concurrency -----------------------------------------------------------------------------------
def test_concurrent_refreshes_rotate_once_and_keep_the_newest_refresh_token(aws: None, idp: OAuthFake) -> None:
    idp.delay_seconds = 0.05  # a refresh takes a while, so the threads really overlap
    connection = _store_connection(_settings(idp))
    tokens: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def run() -> None:
        try:
            session = OAuthSession(connection, token_url=idp.token_url)  # each "invocation" its own session
            start.wait()
            tokens.append(session.access_token())
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert errors == []
    assert idp.refreshes == 1  # one holder refreshed; everyone else took what it stored
    assert len(set(tokens)) == 1
    assert len(tokens) == 8
    assert idp.stale_refreshes == []  # nobody presented a rotated-away refresh token
    stored = _secret(connection)
    assert stored["refresh_token"] == idp.current_refresh_token()
    assert stored["access_token"] == tokens[0]

    # every later refresh (after the tokens expire) starts from the stored, newest refresh token
    idp.expire_access_tokens()
    stored["access_token_expires_at"] = 0
    billflow.aws.client("secretsmanager").put_secret_value(
        SecretId=connection.secret_id, SecretString=json.dumps(stored))
    assert OAuthSession(connection, token_url=idp.token_url).access_token() not in tokens
    assert idp.refreshes == 2
    assert idp.stale_refreshes == []


def test_a_waiter_takes_the_token_another_process_stored(aws: None, idp: OAuthFake) -> None:
    """Another container holds the lease: this one waits, re-reads, and never refreshes itself."""
    connection = _store_connection(_settings(idp))
    store = SecretsManagerTokenStore(poll_seconds=0.02, max_poll_seconds=0.05)
    result: list[str] = []
    other_process = Lease(connection.secret_id)
    assert other_process.try_acquire()

    waiter = threading.Thread(
        target=lambda: result.append(OAuthSession(connection, token_url=idp.token_url, store=store)
                                     .access_token()))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive()
    assert idp.refreshes == 0

    # the other process refreshes (here: a token issued directly) and stores the secret, then releases
    stored = _secret(connection)
    stored["access_token"] = idp.issue_access_token(stored["refresh_token"])
    stored["access_token_expires_at"] = int(time.time()) + 3600
    billflow.aws.client("secretsmanager").put_secret_value(
        SecretId=connection.secret_id, SecretString=json.dumps(stored))
    waiter.join(5)
    other_process.release()

    assert result == [stored["access_token"]]
    assert idp.refreshes == 0


def test_a_lease_left_by_a_dead_holder_expires(aws: None, idp: OAuthFake) -> None:
    connection = _store_connection(_settings(idp))
    billflow.aws.client("dynamodb").put_item(TableName=COUNTERS, Item={
        "pk": {"S": f"lock#{connection.secret_id}"}, "owner": {"S": "crashed"},
        "expires_at": {"N": str(int(time.time()) - 5)}})

    assert OAuthSession(connection, token_url=idp.token_url).access_token()
    assert idp.refreshes == 1
    lock = billflow.aws.client("dynamodb").get_item(TableName=COUNTERS,
                                                   Key={"pk": {"S": f"lock#{connection.secret_id}"}})
    assert "Item" not in lock  # released after the refresh


def test_a_lease_held_too_long_is_transient(aws: None, idp: OAuthFake) -> None:
    connection = _store_connection(_settings(idp))
    holder = Lease(connection.secret_id)
    assert holder.try_acquire()
    store = SecretsManagerTokenStore(wait_seconds=0.2, poll_seconds=0.02, max_poll_seconds=0.05)

    with pytest.raises(TransientError, match="another refresh"):
        OAuthSession(connection, token_url=idp.token_url, store=store).access_token()
    assert idp.refreshes == 0
    holder.release()


def test_refreshed_tokens_survive_a_failed_secret_write(
    aws: None, idp: OAuthFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = _store_connection(_settings(idp))
    store = SecretsManagerTokenStore()
    sm = billflow.aws.client("secretsmanager")
    real_put = sm.put_secret_value

    def failing_put(**kwargs: Any) -> Any:
        raise sm.exceptions.InternalServiceError(
            {"Error": {"Code": "InternalServiceError", "Message": "down"}}, "PutSecretValue")

    monkeypatch.setattr(sm, "put_secret_value", failing_put)
    with pytest.raises(TransientError, match="could not be stored"):
        OAuthSession(connection, token_url=idp.token_url, store=store).access_token()
    assert idp.refreshes == 1

    monkeypatch.setattr(sm, "put_secret_value", real_put)
    token = OAuthSession(connection, token_url=idp.token_url, store=store).access_token()
    assert idp.refreshes == 1  # the unsaved tokens were stored and used, not refreshed again
    assert _secret(connection)["refresh_token"] == idp.current_refresh_token()
    assert idp.access_token_valid(token)


# --- the lease itself ------------------------------------------------------------------------------
def test_a_lease_has_one_holder_at_a_time(aws: None) -> None:
    first, second = Lease("secret-a", ttl_seconds=30), Lease("secret-a", ttl_seconds=30)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert Lease("secret-b").try_acquire()  # another name is another lease
    first.release()
    assert second.try_acquire()
    first.release()  # no longer held: releasing again does not remove the new holder's lease
    assert not Lease("secret-a").try_acquire()
    second.release()


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_release_it(aws: None) -> None:
    old = Lease("secret-a", ttl_seconds=-10)  # already expired when written
    assert old.try_acquire()
    new = Lease("secret-a", ttl_seconds=30)
    assert new.try_acquire()
    old.release()
    assert not Lease("secret-a").try_acquire()
    new.release()


# --- other providers' conventions ------------------------------------------------------------------
def test_zoho_style_body_credentials_no_rotation_and_invalid_code() -> None:
    with OAuthFake(style="zoho") as idp:
        refresh_token = idp.grant()
        connection = Connection("zoho", "zoho_books", {"client_id": "client-1", "client_secret": "client-secret-1",
                                                       "refresh_token": refresh_token})
        store = MemoryTokenStore()
        session = OAuthSession(connection, token_url=idp.token_url, store=store, client_auth="body")
        assert idp.access_token_valid(session.access_token())
        kept = store.read(connection)
        assert kept["refresh_token"] == refresh_token  # Zoho does not rotate
        assert kept["api_domain"] == "https://www.zohoapis.com"

        idp.revoke()
        kept["access_token_expires_at"] = 0
        store.write(connection, kept)
        with pytest.raises(AuthorizationRevoked, match="invalid_code"):
            OAuthSession(connection, token_url=idp.token_url, store=store, client_auth="body").access_token()
        assert idp.violations == []


def test_auth_scheme_names_the_token_as_the_provider_wants_and_refreshed_settings_are_exposed() -> None:
    with OAuthFake(style="zoho", api_domain="https://www.zohoapis.eu") as idp:
        with ProtectedApi(idp, scheme="Zoho-oauthtoken") as api:
            assert isinstance(api, ProtectedApi)
            connection = Connection("zoho", "zoho_books", {
                "client_id": "client-1", "client_secret": "client-secret-1", "refresh_token": idp.grant()})
            session = OAuthSession(connection, token_url=idp.token_url, store=MemoryTokenStore(),
                                   client_auth="body", auth_scheme="Zoho-oauthtoken")
            assert "api_domain" not in session.settings

            assert session.request("GET", api.url + "/thing", target="zoho").status == 200

            [request] = api.requests
            assert request.headers["authorization"] == f"Zoho-oauthtoken {session.access_token()}"
            assert session.settings["api_domain"] == "https://www.zohoapis.eu"  # what the refresh answered
            assert session.settings["access_token"] == session.access_token()
            session.settings["access_token"] = "changed"  # a copy: the session's own is untouched
            assert session.settings["access_token"] != "changed"
        assert idp.violations == []


@pytest.mark.parametrize("scheme", ["", "Zoho oauthtoken"])
def test_auth_scheme_is_one_word(scheme: str) -> None:
    with pytest.raises(ValueError, match="auth_scheme"):
        OAuthSession(Connection("c", "zoho_books", {}), token_url="https://example.invalid/token",
                     store=MemoryTokenStore(), auth_scheme=scheme)


def test_without_a_secret_rotated_tokens_are_kept_in_memory_for_the_next_session() -> None:
    oauth.reset_token_stores()
    with OAuthFake(style="xero") as idp:
        connection = Connection("xero", "xero", {"client_id": "client-1", "client_secret": "client-secret-1",
                                                 "refresh_token": idp.grant()})
        OAuthSession(connection, token_url=idp.token_url).access_token()
        store = oauth.default_store(connection)
        kept = store.read(connection)
        assert kept["refresh_token"] == idp.current_refresh_token() != connection.settings["refresh_token"]
        kept["access_token_expires_at"] = 0  # an hour later
        store.write(connection, kept)
        assert OAuthSession(connection, token_url=idp.token_url).access_token()
        assert idp.refreshes == 2
        assert idp.stale_refreshes == []
        assert idp.violations == []
    oauth.reset_token_stores()
