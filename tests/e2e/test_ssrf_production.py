"""Issue 8 §6 on the local runtime started as production (Stage=prod): a rule whose webhook URL names an
internal address is refused when it is saved, for each address class, and nothing is sent to loopback;
the setting that lets the local runtime and tests reach loopback is ignored in production."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billflow_local.runtime import LocalRuntime

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"
INTERNAL_URLS = [
    "http://127.0.0.1/hook", "http://localhost/hook", "http://[::1]/hook", "http://10.1.2.3/hook",
    "http://172.16.0.9/hook", "http://192.168.0.9/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/", "http://0.0.0.0/hook", "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook", "http://224.0.0.1/hook", "http://100.64.0.1/hook", "http://[fc00::1]/hook",
    "http://[fe80::1]/hook",
]


@pytest.fixture(scope="module")
def production() -> Iterator[LocalRuntime]:
    with LocalRuntime(ROOT, port=0, tenant=TENANT, parameters={"Stage": "prod"}, echo=None,
                      connections={"tenants": {TENANT: {"sources": {"twenty": {"signing_secret": "s" * 24}}}}},
                      ) as runtime:
        yield runtime


def post(runtime: LocalRuntime, path: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{runtime.url}{path}", data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def hook_rule(rule_id: str, url: str) -> dict[str, Any]:
    return {"id": rule_id, "name": "tell the finance system", "source": "twenty", "object": "opportunity",
            "trigger": {"type": "event", "on": "edited"},
            "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
            "actions": [{"type": "webhook", "options": {"url": url, "payload": {"deal": "{{ record.name }}"}}}]}


def test_each_internal_address_class_is_refused_when_a_rule_is_saved_in_production(
    production: LocalRuntime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOW_LOOPBACK_TARGETS", "true")  # as tests set it: production must ignore it
    rules = [hook_rule(f"hook-{i}", url) for i, url in enumerate(INTERNAL_URLS)]

    status, answer = post(production, f"/admin/tenants/{TENANT}/rules/validate", {"rules": rules})

    assert status == 200 and answer["valid"] is False and answer["rules"] == []
    refused = {int(p.split(":")[0].removeprefix("rule hook-")) for p in answer["problems"]
               if "billflow does not call" in p}
    assert refused == set(range(len(INTERNAL_URLS))), answer["problems"]


def test_a_public_webhook_url_is_accepted_in_production(production: LocalRuntime) -> None:
    status, answer = post(production, f"/admin/tenants/{TENANT}/rules/validate",
                          {"rules": [hook_rule("public", "https://hooks.example.com/billing")]})
    assert (status, answer["valid"], answer["problems"]) == (200, True, [])
