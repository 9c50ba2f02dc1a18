"""OAuth connect (issue 13): .../authorize answers the provider's consent URL with a stored single-use state
(and PKCE for Xero); the provider sends the browser to /oauth/callback, which exchanges the code at the
token endpoint and stores the grant in the connection's secret. Providers are the local OAuth stand-in
(tests/fakes/oauth_server.py) in each provider's style; billflow's side is the real handler on moto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.oauth_server import OAuthFake
from tests.integration.conftest import AdminStack

TENANT = "acme"
CLIENT_SECRET = "client-secret-1"


@pytest.fixture
def stack() -> Iterator[AdminStack]:
    with AdminStack() as admin:
        yield admin


@pytest.fixture(params=["xero", "quickbooks", "zoho_books", "hubspot"])
def provider(request: pytest.FixtureRequest) -> Iterator[tuple[str, OAuthFake]]:
    style = {"xero": "xero", "quickbooks": "intuit", "zoho_books": "zoho", "hubspot": "zoho"}[request.param]
    fake = OAuthFake(style=style)
    if request.param == "hubspot":
        fake.rotate = False  # HubSpot: client id and secret in the form, refresh tokens kept
    with fake:
        yield request.param, fake


def connection_path(name: str = "books", tenant: str = TENANT) -> str:
    return f"/admin/tenants/{tenant}/connections/{name}"


def save_oauth_connection(stack: AdminStack, kind: str, fake: OAuthFake, name: str = "books") -> None:
    settings: dict[str, Any] = {"client_id": "client-1", "client_secret": CLIENT_SECRET,
                                "authorize_url": fake.authorize_url, "token_url": fake.token_url}
    if kind == "zoho_books":
        settings["organization_id"] = "60000000001"
    if kind == "xero":  # the stand-in answers Xero's identity API (GET /connections) too
        settings["base_url"] = fake.url
    stack.ok("PUT", connection_path(name), {"type": kind, "settings": settings})


def callback_query(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert parts.path == "/oauth/callback"
    return {k: v[-1] for k, v in parse_qs(parts.query).items()}


def stored(name: str = "books") -> dict[str, Any]:
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    return dict(json.loads(sm.get_secret_value(SecretId=f"billflow/test/{TENANT}/connection/{name}")["SecretString"]))


def test_connect_stores_the_grant_and_answers_no_token(stack: AdminStack, provider: tuple[str, OAuthFake]) -> None:
    kind, fake = provider
    save_oauth_connection(stack, kind, fake)
    assert stack.ok("GET", connection_path().rsplit("/", 1)[0])["connections"][0]["connected"] is False

    started = stack.ok("GET", connection_path() + "/authorize")
    consent = urlsplit(started["url"])
    params = {k: v[-1] for k, v in parse_qs(consent.query).items()}
    assert started["url"].startswith(fake.authorize_url)
    assert params["client_id"] == "client-1"
    assert params["response_type"] == "code"
    assert params["redirect_uri"] == started["redirect_uri"] == "https://admin.local/oauth/callback"
    assert len(params["state"]) >= 40
    assert CLIENT_SECRET not in started["url"]
    if kind == "xero":  # PKCE where the provider supports it
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43
    else:
        assert "code_challenge" not in params
    if kind == "zoho_books":
        assert (params["access_type"], params["prompt"]) == ("offline", "consent")

    query = callback_query(fake.consent(started["url"]))
    answer = stack.ok("GET", "/oauth/callback", query=query)
    assert answer["connected"] is True
    assert (answer["tenant"], answer["connection"]) == (TENANT, "books")
    assert fake.code_exchanges == 1
    assert fake.violations == []

    secret = stored()
    refresh_token = fake.current_refresh_token(0)
    assert secret["refresh_token"] == refresh_token
    assert fake.access_token_valid(secret["access_token"])
    assert secret["access_token_expires_at"] > time.time() + 600
    assert secret["client_secret"] == CLIENT_SECRET  # merged into what was there
    if kind == "quickbooks":
        assert secret["realm_id"] == "9130350000000001"  # the company picked on the consent page
    if kind == "zoho_books":
        assert secret["accounts_server"] == "https://accounts.zoho.eu"
        assert secret["api_domain"] == fake.api_domain
    if kind == "xero":  # the organisation the consent connected, asked of Xero's identity API
        organisation = fake.organisations[0]
        assert secret["tenant_id"] == organisation["tenantId"]
        assert answer["notes"] == [f"tenant_id: {organisation['tenantName']} ({organisation['tenantId']})"]
        assert "tenant_id" in answer["keys"]
    every_answer = json.dumps([answer, stack.ok("GET", connection_path().rsplit("/", 1)[0])])
    assert refresh_token not in every_answer
    assert secret["access_token"] not in every_answer
    assert stack.ok("GET", connection_path().rsplit("/", 1)[0])["connections"][0]["connected"] is True


def test_the_stored_grant_refreshes_like_any_connection(stack: AdminStack) -> None:
    """The grant is a real one: the connectors' OAuth session refreshes it and stores the rotated token."""
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        started = stack.ok("GET", connection_path() + "/authorize")
        stack.ok("GET", "/oauth/callback", query=callback_query(fake.consent(started["url"])))
        from billflow.connectors.oauth import OAuthSession
        from billflow.storage.secrets import get_secret_store, write_secret

        first_refresh_token = stored()["refresh_token"]
        write_secret(f"billflow/test/{TENANT}/connection/books", {**stored(), "access_token_expires_at": 0})
        session = OAuthSession(get_secret_store().connection(TENANT, "books"), token_url=fake.token_url)
        assert fake.access_token_valid(session.access_token())
        assert fake.refreshes == 1
        assert stored()["refresh_token"] not in ("", first_refresh_token)  # Xero rotated it; the new one is kept
        assert fake.stale_refreshes == []


def test_a_state_works_once(stack: AdminStack) -> None:
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        started = stack.ok("GET", connection_path() + "/authorize")
        query = callback_query(fake.consent(started["url"]))
        stack.ok("GET", "/oauth/callback", query=query)
        grant = stored()
        status, answer = stack.call("GET", "/oauth/callback", query=query)
        assert status == 400
        assert "already used or expired" in answer["message"]
        assert stored() == grant


@pytest.mark.parametrize("query", [
    {"code": "c"},  # no state
    {"state": "made-up-state-value", "code": "c"},
])
def test_unknown_states_are_refused_and_nothing_is_stored(stack: AdminStack, query: dict[str, str]) -> None:
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        before = stored()
        status, answer = stack.call("GET", "/oauth/callback", query=query)
        assert status == 400
        assert answer["message"].startswith("state:")
        assert stored() == before
        assert fake.code_exchanges == 0


def test_an_expired_state_is_refused(stack: AdminStack) -> None:
    from billflow.storage.oauth_states import get_oauth_states

    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        get_oauth_states().put("old-state", {"tenant": TENANT, "connection": "books", "type": "xero",
                                             "redirect_uri": "https://admin.local/oauth/callback"}, ttl_seconds=-1)
        status, answer = stack.call("GET", "/oauth/callback", query={"state": "old-state", "code": "c"})
        assert status == 400
        assert "expired" in answer["message"]
        assert fake.code_exchanges == 0


def test_a_refused_consent_or_a_bad_code_uses_the_state_up(stack: AdminStack) -> None:
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        state = parse_qs(urlsplit(stack.ok("GET", connection_path() + "/authorize")["url"]).query)["state"][0]
        status, answer = stack.call("GET", "/oauth/callback", query={"state": state, "error": "access_denied"})
        assert (status, "access_denied" in answer["message"]) == (400, True)
        assert stack.call("GET", "/oauth/callback", query={"state": state, "code": "c"})[0] == 400

        state = parse_qs(urlsplit(stack.ok("GET", connection_path() + "/authorize")["url"]).query)["state"][0]
        status, answer = stack.call("GET", "/oauth/callback", query={"state": state, "code": "forged-code"})
        assert status == 400
        assert "refused the code" in answer["message"]
        assert "refresh_token" not in stored()


def test_pkce_verifier_is_checked_by_the_provider(stack: AdminStack) -> None:
    """A code taken to the token endpoint with another flow's verifier is refused: the challenge binds it."""
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        first = stack.ok("GET", connection_path() + "/authorize")
        second = stack.ok("GET", connection_path() + "/authorize")
        code = callback_query(fake.consent(first["url"]))["code"]
        other_state = parse_qs(urlsplit(second["url"]).query)["state"][0]
        status, answer = stack.call("GET", "/oauth/callback", query={"state": other_state, "code": code})
        assert status == 400
        assert "code_verifier does not match" in answer["message"]


def test_authorize_needs_an_oauth_connection_with_its_app(stack: AdminStack) -> None:
    status, answer = stack.call("GET", connection_path("nothing") + "/authorize")
    assert status == 404
    stack.ok("PUT", connection_path("stripe"), {"type": "stripe", "settings": {"api_key": "sk"}})
    status, answer = stack.call("GET", connection_path("stripe") + "/authorize")
    assert status == 400
    assert "OAuth connect serves" in answer["message"]


def xero_connect(stack: AdminStack, fake: OAuthFake) -> dict[str, Any]:
    started = stack.ok("GET", connection_path() + "/authorize")
    return stack.ok("GET", "/oauth/callback", query=callback_query(fake.consent(started["url"])))


def test_xero_asks_for_the_organisations_of_this_consent_only(stack: AdminStack) -> None:
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        first = fake.organisations[0]["tenantId"]
        xero_connect(stack, fake)
        # A second consent connects another organisation only: the first one's connection is an older event.
        fake.organisations = [{"tenantId": "0f5a1b2c-0000-4000-8000-000000000002", "tenantName": "Second Org",
                               "tenantType": "ORGANISATION"}]
        stack.ok("PUT", connection_path(), {"type": "xero", "settings": {"tenant_id": None}})
        answer = xero_connect(stack, fake)
        assert stored()["tenant_id"] == "0f5a1b2c-0000-4000-8000-000000000002" != first
        assert answer["notes"] == ["tenant_id: Second Org (0f5a1b2c-0000-4000-8000-000000000002)"]
        asked = [r for r in fake.requests if r.path == "/connections"]
        assert len(asked) == 2 and all(r.query.get("authEventId") for r in asked)
        assert fake.violations == []


def test_xero_with_several_organisations_lets_the_admin_pick_and_keeps_a_pick_it_reaches(stack: AdminStack) -> None:
    us, uk, practice = (f"0f5a1b2c-0000-4000-8000-00000000000{c}" for c in "abc")
    with OAuthFake(style="xero") as fake:
        fake.organisations = [
            {"tenantId": us, "tenantName": "Acme US", "tenantType": "ORGANISATION"},
            {"tenantId": uk, "tenantName": "Acme UK", "tenantType": "ORGANISATION"},
            {"tenantId": practice, "tenantName": "Acme's advisers", "tenantType": "PRACTICE"},  # not a ledger
        ]
        save_oauth_connection(stack, "xero", fake)
        answer = xero_connect(stack, fake)
        assert "tenant_id" not in stored()  # never a guess: the admin picks
        assert answer["notes"] == [f"tenant_id: the consent connected 2 organisations (Acme UK ({uk}), "
                                   f"Acme US ({us})); set tenant_id to one"]
        stack.ok("PUT", connection_path(), {"type": "xero", "settings": {"tenant_id": uk}})
        answer = xero_connect(stack, fake)  # connected again (a new refresh token): the pick is kept
        assert stored()["tenant_id"] == uk
        assert answer["notes"] == ["tenant_id: kept (Acme UK)"]


def test_xero_connections_that_cannot_be_read_still_store_the_grant(stack: AdminStack) -> None:
    with OAuthFake(style="xero") as fake:
        save_oauth_connection(stack, "xero", fake)
        stack.ok("PUT", connection_path(), {"type": "xero", "settings": {"base_url": fake.url + "/nowhere"}})
        answer = xero_connect(stack, fake)
        assert answer["connected"] is True and stored()["refresh_token"] == fake.current_refresh_token(0)
        assert answer["notes"] == ["tenant_id: Xero's connections could not be read; set tenant_id to the "
                                   "organisation's id"]
