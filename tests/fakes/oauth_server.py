"""A fake OAuth2 token endpoint (RFC 6749 refresh_token grant) for Intuit, Xero and Zoho connections.

Behaves like the real ones where billflow can tell the difference:
- Intuit (https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer) and Xero
  (https://identity.xero.com/connect/token): client authentication by HTTP Basic, and the refresh token
  ROTATES: every refresh answers a new one and the one used stops working (`rotate=True`).
  Intuit adds x_refresh_token_expires_in.
- Zoho (https://accounts.zoho.com/oauth/v2/token): client_id and client_secret in the form, the refresh
  token does not rotate and is not in the answer, it carries api_domain (the data centre the API calls go
  to: `api_domain`, point it at a fake Zoho Books), and errors come back as HTTP 200 with
  {"error": "invalid_code"} (`style="zoho"`).
Errors otherwise are RFC 6749 section 5.2: 400 {"error": "invalid_grant"} for a revoked, expired or
already rotated refresh token, 401 {"error": "invalid_client"} for bad client credentials.

The authorization code grant (RFC 6749 4.1, PKCE RFC 7636) for the connect flow: GET /authorize is the
consent page a user approves (`consent()` follows it like a browser and answers the redirect's URL; the code
carries client, redirect_uri and code challenge, lives 60 s and works once), the token endpoint exchanges it
(`grant_type=authorization_code`; redirect_uri must be the same, the verifier must hash to the challenge).
Intuit's redirect adds realmId, Zoho's accounts-server and location.

Xero (`style="xero"`): its access tokens are JWTs carrying `authentication_event_id`, and its identity API's
GET /connections (https://api.xero.com/connections, XeroAPI/Xero-OpenAPI xero-identity.yaml) answers the
organisations the user connected to the app (`organisations`), each with the authEventId of the consent that
connected it last; `?authEventId=` keeps those of one consent. A bearer token this fake issued is required.

Test hooks: `grant()` issues a refresh token, `revoke()`, `expire_access_tokens()`, `access_token_valid()`
for fake APIs to check bearer tokens, `refreshes` (successful refresh grants), `stale_refreshes` (a
refresh token that had already been rotated away was used: the symptom of a lost token), `fail_next()`,
`delay_seconds` (slow answers, to make concurrent refreshes overlap).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.fakes.base import FakeServer, Request, Response

STYLES = ("intuit", "xero", "zoho")
TOKEN_PATH = "/oauth2/v1/tokens/bearer"
CONNECTIONS_PATH = "/connections"  # Xero's identity API
AUTHORIZE_PATH = "/authorize"
CODE_LIFETIME_SECONDS = 60


@dataclass
class Code:
    client_id: str
    redirect_uri: str
    challenge: str | None
    expires_at: float


@dataclass
class Grant:
    client_id: str
    refresh_token: str
    revoked: bool = False
    refresh_tokens_used: list[str] = field(default_factory=list)


class OAuthFake(FakeServer):
    name = "fake-oauth"

    def __init__(
        self, *, style: str = "intuit", rotate: bool | None = None, expires_in: int = 3600,
        clients: dict[str, str] | None = None, api_domain: str = "https://www.zohoapis.com",
    ) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}")
        self.style = style
        self.rotate = (style != "zoho") if rotate is None else rotate
        self.expires_in = expires_in
        self.api_domain = api_domain  # Zoho only
        self.clients = dict(clients or {"client-1": "client-secret-1"})
        self.grants: list[Grant] = []
        self.refreshes = 0
        self.stale_refreshes: list[str] = []
        self.delay_seconds = 0.0
        self._by_refresh: dict[str, Grant] = {}
        self._retired: dict[str, Grant] = {}
        self._access: dict[str, tuple[Grant, float]] = {}
        self._failures: list[Response] = []
        self._state = threading.Lock()
        self._codes: dict[str, Code] = {}
        self.code_exchanges = 0
        # Xero: the organisations a consent connects, and the connections made so far (tenantId -> connection)
        self.organisations: list[dict[str, str]] = [
            {"tenantId": str(uuid.uuid4()), "tenantName": "Demo Company (US)", "tenantType": "ORGANISATION"}]
        self.connections: dict[str, dict[str, Any]] = {}
        self.route("POST", TOKEN_PATH, self._token)
        self.route("GET", AUTHORIZE_PATH, self._authorize)
        self.route("GET", CONNECTIONS_PATH, self._connections)

    @property
    def authorize_url(self) -> str:
        return self.url + AUTHORIZE_PATH

    def consent(self, url: str) -> str:
        """A user approves the consent page at `url`: the Location billflow's callback is sent to."""
        import urllib.error
        import urllib.request

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        try:
            urllib.request.build_opener(NoRedirect).open(url, timeout=5)
        except urllib.error.HTTPError as err:
            if err.code == 302:
                return str(err.headers["Location"])
            raise
        raise AssertionError("the consent page did not redirect")

    def _authorize(self, req: Request) -> Response:
        query = {k: v[-1] for k, v in req.query.items()}
        client_id, redirect_uri, state = query.get("client_id", ""), query.get("redirect_uri", ""), query.get("state")
        if query.get("response_type") != "code" or client_id not in self.clients or not redirect_uri:
            self.violate(f"authorize request without response_type=code, a known client or redirect_uri: {query}")
            return Response(400, {"error": "invalid_request"})
        challenge = query.get("code_challenge")
        if challenge is not None and query.get("code_challenge_method") != "S256":
            self.violate("PKCE without code_challenge_method=S256")
            return Response(400, {"error": "invalid_request"})
        code = _token("code")
        with self._state:
            self._codes[code] = Code(client_id, redirect_uri, challenge, time.time() + CODE_LIFETIME_SECONDS)
        params = {"code": code, **({"state": state} if state else {})}
        if self.style == "intuit":
            params["realmId"] = "9130350000000001"
        if self.style == "zoho":
            params.update({"location": "eu", "accounts-server": "https://accounts.zoho.eu"})
        from urllib.parse import urlencode

        return Response(302, None, {"Location": f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}"
                                               f"{urlencode(params)}"})

    def _exchange_code(self, form: dict[str, str], client: str) -> Response:
        import hashlib

        code = self._codes.pop(form.get("code", ""), None)  # a code works once
        if code is None or code.expires_at < time.time() or code.client_id != client:
            return self._error(400, "invalid_grant", "the authorization code is invalid, expired or used")
        if form.get("redirect_uri") != code.redirect_uri:
            return self._error(400, "invalid_grant", "redirect_uri differs from the authorization request's")
        if code.challenge is not None:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
            if digest != code.challenge:
                return self._error(400, "invalid_grant", "code_verifier does not match the code challenge")
        elif "code_verifier" in form:
            self.violate("code_verifier sent for a code issued without a challenge")
        self.code_exchanges += 1
        grant = Grant(client, _token("rt"))
        self.grants.append(grant)
        self._by_refresh[grant.refresh_token] = grant
        access = _token("at")
        if self.style == "xero":
            access = self._connect_organisations()
        self._access[access] = (grant, time.time() + self.expires_in)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in,
                                "refresh_token": grant.refresh_token}
        if self.style == "intuit":
            body["x_refresh_token_expires_in"] = 8726400
        if self.style == "zoho":
            body["api_domain"] = self.api_domain
        return Response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def _connect_organisations(self) -> str:
        """Xero: a consent connects `organisations` under a new authentication event; its access token says
        which (an unsigned JWT here: billflow reads the claim, Xero's API checks the signature)."""
        event = str(uuid.uuid4())
        now = time.strftime("%Y-%m-%dT%H:%M:%S.0000000", time.gmtime())
        for org in self.organisations:  # under self._state: the token endpoint holds it
            earlier = self.connections.get(org["tenantId"], {})
            self.connections[org["tenantId"]] = {"id": earlier.get("id") or str(uuid.uuid4()), "authEventId": event,
                                                 **org, "createdDateUtc": earlier.get("createdDateUtc") or now,
                                                 "updatedDateUtc": now}
        claims = {"iss": "https://identity.xero.com", "authentication_event_id": event, "jti": secrets.token_hex(8)}

        def part(doc: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

        return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{secrets.token_urlsafe(32)}"

    def _connections(self, req: Request) -> Response:
        scheme, _, token = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not self.access_token_valid(token):
            self.violate("GET /connections without a valid bearer token")
            return Response(401, {"Title": "Unauthorized", "Status": 401, "Detail": "AuthenticationUnsuccessful"})
        event = (req.query.get("authEventId") or [""])[-1]
        with self._state:
            found = [dict(c) for c in self.connections.values() if not event or c["authEventId"] == event]
        return Response(200, found)

    # --- test hooks ------------------------------------------------------------------------------
    def grant(self, client_id: str = "client-1") -> str:
        """A new authorization for client_id; returns its first refresh token."""
        with self._state:
            grant = Grant(client_id, _token("rt"))
            self.grants.append(grant)
            self._by_refresh[grant.refresh_token] = grant
            return grant.refresh_token

    def issue_access_token(self, refresh_token: str, *, expires_in: float | None = None) -> str:
        """An access token for the grant of refresh_token, as if a refresh had happened earlier."""
        with self._state:
            grant = self._by_refresh[refresh_token]
            token = _token("at")
            self._access[token] = (grant, time.time() + (expires_in or self.expires_in))
            return token

    def current_refresh_token(self, grant_index: int = 0) -> str:
        with self._state:
            return self.grants[grant_index].refresh_token

    def revoke(self, grant_index: int = 0) -> None:
        """The user disconnected the app: refreshes fail with invalid_grant, access tokens stop working."""
        with self._state:
            grant = self.grants[grant_index]
            grant.revoked = True
            for token, (owner, _) in list(self._access.items()):
                if owner is grant:
                    del self._access[token]

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now (the API answers 401 from here on)."""
        with self._state:
            self._access = {token: (grant, 0.0) for token, (grant, _) in self._access.items()}

    def access_token_valid(self, token: str) -> bool:
        with self._state:
            entry = self._access.get(token)
            return entry is not None and not entry[0].revoked and entry[1] > time.time()

    def fail_next(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next token request with this instead (not a violation)."""
        with self._state:
            self._failures.append(Response(status, body, headers or {}))

    # --- the endpoint ----------------------------------------------------------------------------
    def _token(self, req: Request) -> Response:
        if self.delay_seconds:
            self._lock.release()  # FakeServer serializes handlers; let overlapping requests in meanwhile
            try:
                time.sleep(self.delay_seconds)
            finally:
                self._lock.acquire()
        with self._state:
            if self._failures:
                return self._failures.pop(0)
            return self._refresh(req)

    def _refresh(self, req: Request) -> Response:
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            self.violate(f"token request with Content-Type {content_type!r}")
            return self._error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        form = {k: v[-1] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
        client = self._client(req, form)
        if client is None:
            return self._error(401, "invalid_client", "client authentication failed")
        if form.get("grant_type") == "authorization_code":
            return self._exchange_code(form, client)
        if form.get("grant_type") != "refresh_token":
            self.violate(f"unsupported grant_type {form.get('grant_type')!r}")
            return self._error(400, "unsupported_grant_type", "only refresh_token is served here")
        presented = form.get("refresh_token", "")
        grant = self._by_refresh.get(presented)
        if grant is None:
            retired = self._retired.get(presented)
            if retired is not None:
                self.stale_refreshes.append(presented)  # someone lost the newest refresh token
            return self._error(400, "invalid_grant", "the refresh token is invalid, expired or revoked")
        if grant.revoked or grant.client_id != client:
            return self._error(400, "invalid_grant", "the refresh token is invalid, expired or revoked")

        grant.refresh_tokens_used.append(presented)
        self.refreshes += 1
        access = _token("at")
        self._access[access] = (grant, time.time() + self.expires_in)
        body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
        if self.rotate:
            del self._by_refresh[presented]
            self._retired[presented] = grant
            grant.refresh_token = _token("rt")
            self._by_refresh[grant.refresh_token] = grant
        if self.style != "zoho":
            body["refresh_token"] = grant.refresh_token
        if self.style == "intuit":
            body["x_refresh_token_expires_in"] = 8726400  # Intuit: 101 days
        if self.style == "zoho":
            body["api_domain"] = self.api_domain
        return Response(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _client(self, req: Request, form: dict[str, str]) -> str | None:
        """The authenticated client id; one method only (RFC 6749 2.3), the one the provider uses."""
        header = req.headers.get("authorization", "")
        in_body = "client_id" in form or "client_secret" in form
        if header and in_body:
            self.violate("client authenticated twice (Authorization header and form fields)")
            return None
        if self.style == "zoho":
            if not in_body:
                self.violate("Zoho takes client_id and client_secret in the request, not a Basic header")
                return None
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        else:
            if not header.startswith("Basic "):
                self.violate(f"{self.style} authenticates clients with HTTP Basic")
                return None
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return None
            client_id, _, secret = decoded.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
        if self.clients.get(client_id) != secret:
            return None
        return client_id

    def _error(self, status: int, error: str, description: str) -> Response:
        body = {"error": error, "error_description": description}
        if self.style == "zoho":
            return Response(200, {"error": "invalid_code" if error == "invalid_grant" else error})
        return Response(status, body)


def _token(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"
