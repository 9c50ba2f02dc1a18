"""Console users (Cognito, HTTP API JWT authorizer) see only the tenants their groups name, on every admin
route (issue 13). The claims are shaped as API Gateway hands them to the function: every value a string,
cognito:groups an array written as "[tenant-acme tenant-initech]"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import AdminStack

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "docs" / "admin-openapi.json").read_text(encoding="utf-8"))
TENANT_ROUTES = sorted((method.upper(), route) for route, ops in DOCUMENT["paths"].items() for method in ops
                       if "{tenant}" in route)


def console_user(groups: Any) -> dict[str, Any]:
    """requestContext.authorizer of a request that passed the ConsoleUsers JWT authorizer (an access token)."""
    return {"jwt": {"claims": {
        "auth_time": "1764930000", "client_id": "4example0client0id", "cognito:groups": groups,
        "event_id": "0b0e0f00-1111-2222-3333-444455556666", "exp": "1764933600", "iat": "1764930000",
        "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example", "jti": "5a5a5a5a",
        "origin_jti": "6b6b6b6b", "scope": "openid email profile", "sub": "7c7c7c7c-8d8d-9e9e-afaf-b0b0b0b0b0b0",
        "token_use": "access", "username": "7c7c7c7c-8d8d-9e9e-afaf-b0b0b0b0b0b0",
    }, "scopes": None}}


@pytest.fixture(scope="module")
def stack() -> Iterator[AdminStack]:
    with AdminStack() as admin:
        admin.ok("PUT", "/admin/tenants/globex/connections/main", {"type": "stripe", "settings": {"api_key": "k"}})
        yield admin


def concrete(route: str, tenant: str) -> str:
    path = route.replace("{tenant}", tenant)
    return re.sub(r"\{[a-z_]+\}", "main", path)


def body_for(method: str) -> Any:
    return {} if method in ("POST", "PUT") else None


@pytest.mark.parametrize(("method", "route"), TENANT_ROUTES)
def test_a_user_of_acme_is_refused_globex_on_every_route(stack: AdminStack, method: str, route: str) -> None:
    before = stack.snapshot()
    for prefix in ("/console/api/", "/admin/"):  # the console's routes, and an admin path carrying claims
        path = prefix + concrete(route, "globex").removeprefix("/admin/")
        status, answer = stack.call(method, path, body_for(method), authorizer=console_user("[tenant-acme]"))
        assert status == 403, (path, status, answer)
        assert answer["error"] == "Forbidden"
        assert "globex" in answer["message"]
    assert stack.snapshot() == before  # nothing was read into an answer, nothing written


@pytest.mark.parametrize(("method", "route"), TENANT_ROUTES)
def test_a_user_of_globex_reaches_every_route_of_globex(stack: AdminStack, method: str, route: str) -> None:
    path = "/console/api/" + concrete(route, "globex").removeprefix("/admin/")
    user = console_user("[tenant-acme tenant-globex]")
    status, answer = stack.call(method, path, body_for(method), authorizer=user)
    assert status != 403, (path, answer)
    assert status < 500, (path, status, answer)


def test_the_console_lists_globex_s_connections_for_its_users_only(stack: AdminStack) -> None:
    stack.ok("PUT", "/admin/tenants/globex/connections/main", {"type": "stripe", "settings": {"api_key": "k"}})
    path = "/console/api/tenants/globex/connections"
    status, listed = stack.call("GET", path, authorizer=console_user("[tenant-globex]"))
    assert status == 200
    assert [c["name"] for c in listed["connections"]] == ["main"]
    refused_groups: list[Any] = ["[tenant-acme]", "[]", "", "[admins tenant-globexx tenant-]", ["tenant-acme"],
                                 "tenant-acme,tenant-initech"]
    for groups in refused_groups:
        status, refused = stack.call("GET", path, authorizer=console_user(groups))
        assert status == 403, (groups, refused)
    # The same claim in the other shapes a token's groups can take.
    for groups in (["tenant-globex"], "tenant-acme,tenant-globex", "tenant-globex", '["tenant-globex"]'):
        assert stack.call("GET", path, authorizer=console_user(groups))[0] == 200, groups


def test_console_routes_need_a_signed_in_user(stack: AdminStack) -> None:
    status, answer = stack.call("GET", "/console/api/tenants/globex/settings")  # IAM context, no claims
    assert status == 403
    assert "signed-in user" in answer["message"]
    status, answer = stack.call("GET", "/console/api/tenants/globex/settings", authorizer={})
    assert status == 403


def test_routes_of_no_tenant_serve_every_signed_in_user(stack: AdminStack) -> None:
    status, answer = stack.call("GET", "/console/api/statemachine", authorizer=console_user("[tenant-acme]"))
    assert status == 200
    assert "States" in answer["definition"]


def test_iam_callers_see_every_tenant(stack: AdminStack) -> None:
    stack.ok("PUT", "/admin/tenants/globex/connections/main", {"type": "stripe", "settings": {"api_key": "k"}})
    assert stack.ok("GET", "/admin/tenants/globex/connections")["connections"][0]["name"] == "main"
    assert stack.ok("GET", "/admin/tenants/acme/connections") == {"connections": []}
