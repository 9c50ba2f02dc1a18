"""Which tenants a console user may see: the Cognito groups in their token's claims, one group per tenant
("tenant-acme" lets the user see tenant acme). The console's routes pass an HTTP API JWT authorizer, which
hands the claims to the function as strings: an array claim such as cognito:groups arrives as
"[tenant-acme tenant-globex]". The admin API's IAM routes (the CLI, SigV4) carry no claims and see every
tenant: IAM decides who may call them at all."""

from __future__ import annotations

from typing import Any

from billflow.errors import Forbidden

TENANT_GROUP_PREFIX = "tenant-"
GROUPS_CLAIM = "cognito:groups"


def groups_of(claims: dict[str, Any]) -> list[str]:
    """The groups claim as a list, from any shape it arrives in: API Gateway's "[a b]", a JSON list (a
    direct invocation), "a,b" or one name."""
    value = claims.get(GROUPS_CLAIM)
    if isinstance(value, list):
        return [str(v) for v in value if str(v)]
    if not isinstance(value, str):
        return []
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [g.strip('"') for g in text.replace(",", " ").split() if g.strip('"')]


def tenants_of(claims: dict[str, Any]) -> list[str]:
    return sorted({g.removeprefix(TENANT_GROUP_PREFIX) for g in groups_of(claims)
                   if g.startswith(TENANT_GROUP_PREFIX) and len(g) > len(TENANT_GROUP_PREFIX)})


def check_tenant(claims: dict[str, Any], tenant: str | None) -> None:
    """Forbidden unless the user's groups name the tenant. A route without a tenant (the state machine's
    definition) is open to every signed-in user."""
    if tenant is None:
        return
    if tenant not in tenants_of(claims):
        raise Forbidden(f"you may not see tenant {tenant!r}: your groups do not include "
                        f"{TENANT_GROUP_PREFIX}{tenant}")


CONSOLE_PREFIX = "/console/api/"
ADMIN_PREFIX = "/admin/"


def jwt_claims(event: dict[str, Any]) -> dict[str, Any] | None:
    """The claims an HTTP API JWT authorizer validated (requestContext.authorizer.jwt.claims), if any."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    jwt = authorizer.get("jwt") if isinstance(authorizer, dict) else None
    claims = jwt.get("claims") if isinstance(jwt, dict) else None
    return claims if isinstance(claims, dict) else None


def tenant_in_path(path: str) -> str | None:
    """The {tenant} of /admin/tenants/{tenant}/... (None for routes of no tenant)."""
    parts = path.split("/")
    if len(parts) > 3 and parts[2] == "tenants":
        return parts[3] or None
    return None


def admit(event: dict[str, Any]) -> dict[str, Any]:
    """The event the admin routes serve: the console's /console/api/... (JWT) mapped onto /admin/..., after
    checking the user's groups name the tenant in the path. Forbidden otherwise. IAM calls pass as they are;
    any call carrying JWT claims is checked, whatever its path."""
    path = str(event.get("rawPath") or "")
    claims = jwt_claims(event)
    if path.startswith(CONSOLE_PREFIX):
        if claims is None:
            raise Forbidden("the console's API needs a signed-in user (a Cognito token)")
        path = ADMIN_PREFIX + path.removeprefix(CONSOLE_PREFIX)
        event = {**event, "rawPath": path}
        context = event.get("requestContext")
        if isinstance(context, dict) and isinstance(context.get("http"), dict):
            event["requestContext"] = {**context, "http": {**context["http"], "path": path}}
    if claims is not None:
        from urllib.parse import unquote  # deferred: console calls only

        tenant = tenant_in_path(path)
        check_tenant(claims, unquote(tenant) if tenant else None)
    return event
