"""The admin API's OpenAPI document is generated from the code and shipped; the template routes every route.

If a test here fails after a change to the admin routes or to the rule models: run `make openapi`
(scripts/generate_openapi.py) and commit docs/admin-openapi.json; add new routes to template.yaml's
AdminFunction events with `Auth: {Authorizer: AWS_IAM}`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from billflow_local.template import Template

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "admin-openapi.json"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_openapi", ROOT / "scripts" / "generate_openapi.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> str:
    document: str = _script().generate()
    return document


@pytest.fixture(scope="module")
def document(generated: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(generated)
    return parsed


def _code_routes(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}


def _template_routes() -> dict[tuple[str, str], dict[str, Any]]:
    template = Template.load(ROOT / "template.yaml")
    events = template.function_events("AdminFunction", "HttpApi")
    # /console and /console/{name} (issue 13) are the console's static files, served by this function, not API
    # operations (its API is /console/api/...)
    return {(str(p["Method"]).upper(), str(p["Path"])): p for p in events.values()
            if str(p["Path"]) not in CONSOLE_FILES}


def test_the_shipped_document_is_what_the_code_generates(generated: str) -> None:
    assert SHIPPED.exists(), "docs/admin-openapi.json is missing: run `make openapi`"
    assert SHIPPED.read_text(encoding="utf-8") == generated, (
        "docs/admin-openapi.json differs from what the admin API's code generates: run `make openapi`"
    )


def test_the_document_describes_every_operation(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert document["security"] == [{"sigv4": []}]
    assert document["components"]["securitySchemes"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    schemas = document["components"]["schemas"]
    for (method, path), op in ((k, document["paths"][k[1]][k[0].lower()]) for k in _code_routes(document)):
        assert op.get("summary"), f"{method} {path} has no summary"
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].split("/")[-1] in schemas, f"{method} {path}: 200 has no model"
        for code, answer in op["responses"].items():
            if code not in ("200", "422"):
                assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        if method in ("POST", "PUT") and "requestBody" in op:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert body["$ref"].split("/")[-1] in schemas
    # Rule documents are described field by field (the YAML admins write).
    rule = schemas["RuleDocument"]
    assert {"id", "source", "object", "active", "order", "trigger", "blocks"} <= set(rule["properties"])
    assert "tenant" not in rule["properties"]


# Routes of the admin function that are not IAM-authorised, and what authorises them instead: the OAuth
# providers' redirect (its single-use state) and the console's mirror of the admin routes (Cognito JWT).
OAUTH_CALLBACK = ("GET", "/oauth/callback")
CONSOLE_ROUTE = ("ANY", "/console/api/{proxy+}")
CONSOLE_FILES = ("/console", "/console/{name}")


def test_every_admin_route_is_routed_by_the_template_with_iam_auth(document: dict[str, Any]) -> None:
    template = _template_routes()
    missing = sorted(f"{m} {p}" for m, p in _code_routes(document) - set(template))
    assert not missing, f"template.yaml's AdminFunction does not route: {missing}"
    unauthenticated = sorted(f"{m} {p}" for (m, p), props in template.items()
                             if (m, p) not in (OAUTH_CALLBACK, CONSOLE_ROUTE)
                             and (props.get("Auth") or {}).get("Authorizer") != "AWS_IAM")
    assert not unauthenticated, f"admin routes without IAM authorisation: {unauthenticated}"


def test_only_the_oauth_callback_is_open_and_the_console_takes_cognito_tokens(document: dict[str, Any]) -> None:
    template = _template_routes()
    assert "Auth" not in template[OAUTH_CALLBACK]
    assert document["paths"]["/oauth/callback"]["get"]["security"] == [{}]
    assert template[CONSOLE_ROUTE]["Auth"] == {"Authorizer": "ConsoleUsers"}
    api = Template.load(ROOT / "template.yaml").properties("HttpApi")
    jwt = api["Auth"]["Authorizers"]["ConsoleUsers"]["JwtConfiguration"]
    assert jwt["audience"] == [{"Ref": "ConsoleUserPoolClient"}]
    client = Template.load(ROOT / "template.yaml").properties("ConsoleUserPoolClient")
    assert client["GenerateSecret"] is False  # a browser keeps no secret: authorization code with PKCE
    assert client["AllowedOAuthFlows"] == ["code"]
    assert client["CallbackURLs"] == [{"Ref": "ConsoleCallbackUrl"}]


def test_the_template_routes_nothing_the_admin_api_lacks(document: dict[str, Any]) -> None:
    stale = sorted(f"{m} {p}" for m, p in set(_template_routes()) - _code_routes(document) - {CONSOLE_ROUTE})
    assert not stale, f"template.yaml routes admin paths the code does not serve: {stale}"


def test_route_paths_use_the_template_spelling(document: dict[str, Any]) -> None:
    for path in document["paths"]:
        assert re.fullmatch(r"(/[a-z-]+|/\{[a-z_]+\})+", path), path
