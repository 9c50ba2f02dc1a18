"""Connecting an OAuth target (QuickBooks, Xero, Zoho Books, HubSpot) from the browser.

1. authorize: the connection already holds its app's client_id and client_secret (saved like any
   connection). billflow makes a random `state` (and a PKCE verifier where the provider supports PKCE,
   Xero), stores them for STATE_TTL_SECONDS (storage/oauth_states.py, only the state's hash) and answers the
   provider's consent URL with billflow's callback as redirect_uri.
2. callback (GET /oauth/callback, reached by the browser, no sign-in): the state is taken (deleted: it works
   once; unknown, used or expired states are refused), the code is exchanged at the provider's token
   endpoint (RFC 6749 4.1.3, client authentication as the refresh grant does it: connectors/oauth.py), and
   the grant (refresh token, access token, its expiry, QuickBooks' realmId, Zoho's accounts server and API
   domain) is merged into the connection's secret. No token is ever answered or logged.
3. Xero's API needs the organisation (xero-tenant-id) besides the token: billflow asks Xero's identity API
   which organisations this consent connected (GET /connections?authEventId=, the event named in the access
   token) and stores the one as tenant_id; when the consent connected several, the answer lists them and the
   admin sets tenant_id (an id already set that the consent reaches is kept).

The consent and token URLs are the providers' own; a connection's authorize_url and token_url settings
override them (a sandbox, or the local stand-ins).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from billflow.connectors import http
from billflow.errors import BillflowError, ConfigurationError, InvalidRequest, NotFound
from billflow.models.admin import AuthorizeAnswer, OAuthCallbackAnswer
from billflow.storage.oauth_states import OAuthStates
from billflow.storage.secrets import Connection, read_secret, secret_name, write_secret

STATE_TTL_SECONDS = 600  # the consent must be given within 10 minutes
CALLBACK_PATH = "/oauth/callback"


@dataclass(frozen=True)
class Provider:
    authorize_url: str
    token_url: str
    scope: str
    pkce: bool  # S256 code challenge (RFC 7636)
    client_auth: str  # "basic" (HTTP Basic) or "body" (client_id and client_secret in the form)
    extra: tuple[tuple[str, str], ...] = ()


PROVIDERS: dict[str, Provider] = {
    # Intuit: https://developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-authorization
    "quickbooks": Provider("https://appcenter.intuit.com/connect/oauth2",
                           "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
                           "com.intuit.quickbooks.accounting", pkce=False, client_auth="basic"),
    # Xero: https://developer.xero.com/documentation/guides/oauth2/auth-flow (PKCE supported)
    "xero": Provider("https://login.xero.com/identity/connect/authorize", "https://identity.xero.com/connect/token",
                     "offline_access accounting.transactions accounting.contacts accounting.settings",
                     pkce=True, client_auth="basic"),
    # Zoho: https://www.zoho.com/books/api/v3/oauth/ (offline access: a refresh token; consent every time)
    "zoho_books": Provider("https://accounts.zoho.com/oauth/v2/auth", "https://accounts.zoho.com/oauth/v2/token",
                           "ZohoBooks.fullaccess.all", pkce=False, client_auth="body",
                           extra=(("access_type", "offline"), ("prompt", "consent"))),
    # HubSpot: https://developers.hubspot.com/docs/api/oauth-quickstart-guide
    "hubspot": Provider("https://app.hubspot.com/oauth/authorize", "https://api.hubapi.com/oauth/v1/token",
                        "oauth crm.objects.deals.read crm.objects.deals.write crm.objects.companies.read "
                        "crm.objects.contacts.read crm.objects.line_items.read", pkce=False, client_auth="body"),
}


def _connection(tenant: str, name: str) -> tuple[str, dict[str, Any]]:
    secret_id = secret_name(tenant, "connection", name)
    document = read_secret(secret_id)
    if not isinstance(document, dict):
        raise NotFound(f"tenant {tenant} has no connection {name!r}; save it with its client_id and "
                       "client_secret first")
    return secret_id, document


def _provider(name: str, document: dict[str, Any]) -> Provider:
    kind = str(document.get("type", ""))
    provider = PROVIDERS.get(kind)
    if provider is None:
        raise InvalidRequest(f"connection {name!r} is a {kind or 'typeless'} connection; OAuth connect serves "
                             f"{', '.join(sorted(PROVIDERS))}")
    for key in ("client_id", "client_secret"):
        if not document.get(key):
            raise InvalidRequest(f"connection {name!r} has no {key}: save the app's client_id and client_secret "
                                 "first", fields=[f"settings.{key}"])
    return provider


def authorize(states: OAuthStates, tenant: str, name: str, redirect_uri: str) -> AuthorizeAnswer:
    _, document = _connection(tenant, name)
    provider = _provider(name, document)
    state = secrets.token_urlsafe(32)
    params = {"client_id": str(document["client_id"]), "response_type": "code",
              "scope": str(document.get("scope") or provider.scope), "redirect_uri": redirect_uri, "state": state}
    params.update(dict(provider.extra))
    flow: dict[str, Any] = {"tenant": tenant, "connection": name, "type": document["type"],
                            "redirect_uri": redirect_uri}
    if provider.pkce:
        verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-]: RFC 7636 allows 43 to 128
        flow["code_verifier"] = verifier
        params["code_challenge"] = pkce_challenge(verifier)
        params["code_challenge_method"] = "S256"
    expires_at = states.put(state, flow, STATE_TTL_SECONDS)
    base = str(document.get("authorize_url") or provider.authorize_url)
    return AuthorizeAnswer(url=f"{base}{'&' if '?' in base else '?'}{urlencode(params)}", redirect_uri=redirect_uri,
                           expires_at=datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def callback(states: OAuthStates, query: dict[str, str]) -> OAuthCallbackAnswer:
    """Store the grant the provider's redirect carries; InvalidRequest for anything but a live state."""
    state = query.get("state") or ""
    if not state:
        raise InvalidRequest("state: missing; open the connect link from billflow again")
    flow = states.take(state)  # taken before anything else: a state never works twice, even on errors
    if flow is None:
        raise InvalidRequest("state: unknown, already used or expired; start the connection again")
    name = str(flow["connection"])
    if query.get("error"):
        raise InvalidRequest(f"the provider did not grant access: {query['error'][:200]}; start again")
    code = query.get("code") or ""
    if not code:
        raise InvalidRequest("code: missing from the provider's redirect")
    tenant = str(flow["tenant"])
    secret_id, document = _connection(tenant, name)
    if document.get("type") != flow["type"]:
        raise InvalidRequest(f"connection {name!r} changed type while it was being connected; start again")
    provider = _provider(name, document)
    updated = dict(document)
    if flow["type"] == "quickbooks" and query.get("realmId"):
        updated["realm_id"] = query["realmId"]  # the company the user picked on Intuit's consent page
    if flow["type"] == "zoho_books" and query.get("accounts-server"):
        updated["accounts_server"] = query["accounts-server"]  # the user's data centre (checked below)
    token_url = _token_url(name, updated, provider)
    grant = _exchange(name, token_url, provider, updated, code, str(flow["redirect_uri"]), flow.get("code_verifier"))
    now = time.time()
    updated.update(access_token=grant["access_token"], refresh_token=grant["refresh_token"],
                   access_token_expires_at=int(now + float(grant.get("expires_in") or 3600)))
    refresh_expires_in = grant.get("x_refresh_token_expires_in") or grant.get("refresh_token_expires_in")
    if isinstance(refresh_expires_in, int | float):
        updated["refresh_token_expires_at"] = int(now + refresh_expires_in)
    if isinstance(grant.get("api_domain"), str):
        updated["api_domain"] = grant["api_domain"]
    notes = _xero_organisation(updated, str(grant["access_token"])) if flow["type"] == "xero" else []
    write_secret(secret_id, updated)
    return OAuthCallbackAnswer(connected=True, tenant=tenant, connection=name,
                               keys=sorted(k for k in updated if k != "type"), notes=notes)


def _xero_organisation(settings: dict[str, Any], access_token: str) -> list[str]:
    """Set tenant_id to the Xero organisation this consent connected (see the module docstring); what was
    done, or what the admin must still do. The grant is stored either way."""
    from billflow.connectors.xero import DEFAULT_BASE_URL  # deferred: Xero's connect flow only

    event = _jwt_claim(access_token, "authentication_event_id")
    url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/") + "/connections"
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    found: Any = None
    try:
        answer = http.request("GET", url + (f"?{urlencode({'authEventId': event})}" if event else ""),
                              headers=headers, target="xero connections", raise_for_status=False)
        found = answer.json() if answer.status < 400 else None
    except (BillflowError, ValueError):
        pass
    if not isinstance(found, list):
        return ["tenant_id: Xero's connections could not be read; set tenant_id to the organisation's id"]
    organisations = {str(c["tenantId"]): str(c.get("tenantName") or "") for c in found
                     if isinstance(c, dict) and c.get("tenantType") == "ORGANISATION" and c.get("tenantId")}
    current = str(settings.get("tenant_id") or "")
    if current in organisations:
        return [f"tenant_id: kept ({organisations[current] or current})"]
    if len(organisations) == 1:
        [(tenant_id, tenant_name)] = organisations.items()
        settings["tenant_id"] = tenant_id
        return [f"tenant_id: {tenant_name or tenant_id} ({tenant_id})"]
    if not organisations:
        return ["tenant_id: the consent connected no Xero organisation; connect again and pick one"]
    choices = ", ".join(f"{n or '?'} ({i})" for i, n in sorted(organisations.items(), key=lambda kv: kv[1]))
    return [f"tenant_id: the consent connected {len(organisations)} organisations ({choices}); set tenant_id to one"]


def _jwt_claim(token: str, claim: str) -> str:
    """A claim of a JWT access token, unverified: it only narrows a call the token itself authenticates."""
    parts = token.split(".")
    if len(parts) != 3:
        return ""
    try:
        doc = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return ""
    value = doc.get(claim) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else ""


def _token_url(name: str, settings: dict[str, Any], provider: Provider) -> str:
    if settings.get("token_url"):
        return str(settings["token_url"])
    if settings.get("type") == "zoho_books":
        from billflow.connectors.zoho_books import token_url  # deferred: Zoho's data centres, one flow only

        try:
            return token_url(Connection(name=name, type="zoho_books", settings=settings))
        except ConfigurationError as exc:
            raise InvalidRequest(exc.message) from None
    return provider.token_url


def _exchange(name: str, token_url: str, provider: Provider, settings: dict[str, Any], code: str,
              redirect_uri: str, verifier: str | None) -> dict[str, Any]:
    """RFC 6749 4.1.3: the authorization code for tokens."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier:
        form["code_verifier"] = verifier
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    client_id, client_secret = str(settings["client_id"]), str(settings["client_secret"])
    if provider.client_auth == "basic":
        headers["Authorization"] = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    else:
        form.update(client_id=client_id, client_secret=client_secret)
    target = f"{settings.get('type')} token endpoint"
    try:
        answer = http.request("POST", token_url, headers=headers, body=urlencode(form).encode(), target=target,
                              raise_for_status=False)
    except BillflowError as exc:  # unreachable, refused by netguard: the flow cannot finish, say why
        raise InvalidRequest(f"connection {name!r}: {exc.message}") from None
    try:
        doc = answer.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or answer.status >= 400 or doc.get("error") or not doc.get("access_token") \
            or not doc.get("refresh_token"):
        reason = (doc.get("error_description") or doc.get("error")) if isinstance(doc, dict) else None
        raise InvalidRequest(f"connection {name!r}: the token endpoint refused the code "
                             f"({str(reason or answer.status)[:200]}); start the connection again",
                             status=answer.status)
    return doc
