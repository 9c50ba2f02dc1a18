"""The admin API's handler on moto: API Gateway (HTTP API, payload 2.0) events in, the rules table changed.

Rules as code (plan, apply, validate), the rule lifecycle (create, edit, clone, activate/deactivate,
reorder, delete), the execution log's filters and the error shapes. The tables are created from
template.yaml's own definitions (`AdminStack`, in conftest.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import AdminStack

ROOT = Path(__file__).resolve().parents[2]
TENANT = "acme"

WON_RULE: dict[str, Any] = {
    "id": "won-hook",
    "name": "Tell finance about won deals",
    "source": "twenty",
    "object": "opportunity",
    "order": 10,
    "trigger": {"type": "event", "on": "edited"},
    "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"}],
    "actions": [{"type": "webhook", "connection": "hook"}],
}


def rule_doc(rule_id: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(WON_RULE)), "id": rule_id, **changes}


@pytest.fixture
def stack() -> Iterator[AdminStack]:
    with AdminStack() as admin:
        yield admin


def rules_path(*rest: str, tenant: str = TENANT) -> str:
    return "/".join([f"/admin/tenants/{tenant}/rules", *rest])


# ------------------------------------------------------------------------------------------- plan / apply
def test_plan_apply_and_plan_again_shows_nothing_to_change(stack: AdminStack) -> None:
    documents = [rule_doc("won-hook"), rule_doc("lost-hook", criteria=[
        {"field": "stage", "comparator": "changed_to", "value": "LOST"}])]
    plan = stack.ok("POST", rules_path("plan"), {"rules": documents})["plan"]
    assert plan["create"] == ["won-hook", "lost-hook"]
    assert stack.store.all_rules(TENANT) == []  # plan stores nothing

    applied = stack.ok("POST", rules_path("apply"), {"rules": documents})["applied"]
    assert applied["create"] == ["won-hook", "lost-hook"]
    stored = {r.id: r for r in stack.store.all_rules(TENANT)}
    assert set(stored) == {"won-hook", "lost-hook"}
    assert all(r.tenant == TENANT and r.version == 1 for r in stored.values())

    again = stack.ok("POST", rules_path("plan"), {"rules": documents})["plan"]
    assert again["unchanged"] == ["won-hook", "lost-hook"]
    assert again["create"] == again["change"] == again["deactivate"] == again["delete"] == []


def test_plan_names_changed_deactivated_deleted_and_untracked_rules(stack: AdminStack) -> None:
    stack.ok("POST", rules_path("apply"), {"rules": [rule_doc("a"), rule_doc("b"), rule_doc("c")]})
    edited = [rule_doc("a", order=99, name="renamed"), rule_doc("b", active=False)]
    plan = stack.ok("POST", rules_path("plan"), {"rules": edited})["plan"]
    assert plan["change"] == ["a"]
    assert plan["fields"]["a"] == ["name", "order"]
    assert plan["deactivate"] == ["b"]
    assert plan["fields"]["b"] == ["active"]
    assert plan["untracked"] == ["c"]
    assert plan["delete"] == []

    pruned = stack.ok("POST", rules_path("apply"), {"rules": edited, "prune": True})["applied"]
    assert pruned["delete"] == ["c"]
    stored = {r.id: r for r in stack.store.all_rules(TENANT)}
    assert set(stored) == {"a", "b"}
    assert stored["a"].version == 2
    assert stored["a"].order == 99
    assert stored["b"].active is False  # kept, inactive
    assert stored["b"].version == 2


def test_a_rule_moved_to_another_object_leaves_its_old_partition(stack: AdminStack) -> None:
    stack.ok("POST", rules_path("apply"), {"rules": [rule_doc("a")]})
    stack.ok("POST", rules_path("apply"), {"rules": [rule_doc("a", object="company")]})
    assert stack.store.rules_for(TENANT, "twenty", "opportunity") == []
    assert [r.id for r in stack.store.rules_for(TENANT, "twenty", "company")] == ["a"]


def test_tenants_do_not_see_each_others_rules(stack: AdminStack) -> None:
    stack.ok("POST", rules_path("apply"), {"rules": [rule_doc("a")]})
    other = stack.ok("POST", rules_path("plan", tenant="globex"), {"rules": [rule_doc("a")], "prune": True})
    assert other["plan"]["create"] == ["a"]
    assert other["plan"]["delete"] == []
    assert stack.ok("GET", rules_path(tenant="globex"))["rules"] == []


def test_semantic_problems_are_400_with_rule_and_field(stack: AdminStack) -> None:
    bad = rule_doc("bad", pattern="1 AND 3", criteria=[
        {"field": "stage", "comparator": "sounds_like", "value": "x"},
        {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0}])
    status, answer = stack.call("POST", rules_path("apply"), {"rules": [rule_doc("fine"), bad]})
    assert status == 400
    problems = answer["details"]["problems"]
    assert "rule bad: blocks.0.criteria.0.comparator: unknown comparator 'sounds_like'" in problems
    assert any(p.startswith("rule bad: blocks.0.pattern:") for p in problems)
    assert stack.store.all_rules(TENANT) == []  # nothing applied when anything is invalid


def test_documents_that_do_not_fit_the_model_are_422_with_rule_and_field(stack: AdminStack) -> None:
    bad = rule_doc("bad", criteria=[{"fieldname": "stage", "comparator": "equals", "value": "x"}])
    status, answer = stack.call("POST", rules_path("plan"), {"rules": [rule_doc("fine"), bad]})
    assert status == 422
    assert "rule bad: blocks.0.criteria.0.field: Field required" in answer["problems"]
    assert "rule bad: blocks.0.criteria.0.fieldname: Extra inputs are not permitted" in answer["problems"]
    assert {"loc", "msg", "type"} <= set(answer["detail"][0])


def test_validate_stores_nothing_and_lists_problems(stack: AdminStack) -> None:
    answer = stack.ok("POST", rules_path("validate"), {"rules": [rule_doc("ok"), {"id": "x"}]})
    assert answer["valid"] is False
    assert answer["rules"] == ["ok"]
    assert "rule x: source: Field required" in answer["problems"]
    assert stack.store.all_rules(TENANT) == []


# ------------------------------------------------------------------------------------------- lifecycle
def test_create_get_edit_delete(stack: AdminStack) -> None:
    created = stack.ok("POST", rules_path(), rule_doc("won-hook"))["rule"]
    assert created["version"] == 1
    assert "tenant" not in created
    status, answer = stack.call("POST", rules_path(), rule_doc("won-hook"))
    assert status == 409
    assert answer["error"] == "Conflict"

    assert stack.ok("GET", rules_path("won-hook"))["rule"]["name"] == WON_RULE["name"]
    edited = stack.ok("PUT", rules_path("won-hook"), rule_doc("won-hook", name="New name"))["rule"]
    assert (edited["name"], edited["version"]) == ("New name", 2)
    same = stack.ok("PUT", rules_path("won-hook"), rule_doc("won-hook", name="New name"))["rule"]
    assert same["version"] == 2  # an edit that changes nothing is no new version

    status, answer = stack.call("PUT", rules_path("won-hook"), rule_doc("other-id"))
    assert status == 400
    assert "clone" in answer["message"]
    status, _ = stack.call("PUT", rules_path("missing"), rule_doc("missing"))
    assert status == 404

    assert stack.ok("DELETE", rules_path("won-hook")) == {"deleted": "won-hook"}
    assert stack.call("GET", rules_path("won-hook"))[0] == 404
    assert stack.call("DELETE", rules_path("won-hook"))[0] == 404


def test_clone_is_an_inactive_copy_unless_asked(stack: AdminStack) -> None:
    stack.ok("POST", rules_path(), rule_doc("won-hook"))
    copy = stack.ok("POST", rules_path("won-hook", "clone"), {"new_id": "won-hook-eu"})["rule"]
    assert copy["id"] == "won-hook-eu"
    assert copy["active"] is False
    assert copy["name"] == f"{WON_RULE['name']} (copy)"
    assert copy["blocks"] == stack.ok("GET", rules_path("won-hook"))["rule"]["blocks"]
    live = stack.ok("POST", rules_path("won-hook", "clone"), {"new_id": "won-hook-us", "name": "US",
                                                              "active": True})["rule"]
    assert (live["active"], live["name"]) == (True, "US")
    assert stack.call("POST", rules_path("won-hook", "clone"), {"new_id": "won-hook-eu"})[0] == 409
    assert stack.call("POST", rules_path("missing", "clone"), {"new_id": "x"})[0] == 404
    status, answer = stack.call("POST", rules_path("won-hook", "clone"), {"new_id": "Not Valid"})
    assert status == 400
    assert any("rule id" in p for p in answer["details"]["problems"])


def test_deactivate_keeps_the_rule_and_activate_brings_it_back(stack: AdminStack) -> None:
    stack.ok("POST", rules_path(), rule_doc("won-hook"))
    off = stack.ok("POST", rules_path("won-hook", "deactivate"))["rule"]
    assert (off["active"], off["version"]) == (False, 2)
    assert [r.id for r in stack.store.rules_for(TENANT, "twenty", "opportunity")] == ["won-hook"]
    assert stack.ok("POST", rules_path("won-hook", "deactivate"))["rule"]["version"] == 2  # already off
    on = stack.ok("POST", rules_path("won-hook", "activate"))["rule"]
    assert (on["active"], on["version"]) == (True, 3)
    assert stack.call("POST", rules_path("missing", "activate"))[0] == 404


def test_reorder_sets_order_and_the_rest_follow(stack: AdminStack) -> None:
    for order, rule_id in enumerate(("a", "b", "c", "d"), start=1):
        stack.ok("POST", rules_path(), rule_doc(rule_id, order=order))
    stack.ok("POST", rules_path(), rule_doc("elsewhere", object="company"))
    answer = stack.ok("POST", rules_path("reorder"),
                      {"source": "twenty", "object": "opportunity", "rule_ids": ["c", "a"]})
    assert [(r["id"], r["order"]) for r in answer["rules"]] == [("c", 10), ("a", 20), ("b", 30), ("d", 40)]
    assert [r.id for r in stack.store.rules_for(TENANT, "twenty", "opportunity")] == ["c", "a", "b", "d"]

    status, answer = stack.call("POST", rules_path("reorder"),
                                {"source": "twenty", "object": "opportunity", "rule_ids": ["a", "elsewhere"]})
    assert status == 404
    assert answer["details"]["rules"] == ["c", "a", "b", "d"]
    status, _ = stack.call("POST", rules_path("reorder"),
                           {"source": "twenty", "object": "opportunity", "rule_ids": ["a", "a"]})
    assert status == 400


def test_inactive_rules_never_run(stack: AdminStack) -> None:
    from billflow.logic.filter import route_event
    from billflow.models.events import CrmEvent
    from billflow.storage.records import get_record_store

    stack.ok("POST", rules_path(), rule_doc("won-hook"))
    stack.ok("POST", rules_path("won-hook", "clone"), {"new_id": "won-hook-copy"})  # inactive
    event = CrmEvent(
        event_id="e-1", tenant=TENANT, source="twenty", object="opportunity", action="updated",
        record_id="opp-1", record={"id": "opp-1", "stage": "CUSTOMER"}, changed_fields=["stage"],
        occurred_at="2026-03-18T14:22:05Z", received_at="2026-03-18T14:22:06Z",
    )
    outcome = route_event(event, stack.store, get_record_store())
    assert outcome.rules_considered == 1
    assert [e["name"] for e in stack.executions()] == outcome.started
    assert len(outcome.started) == 1
    assert outcome.started[0].startswith("won-hook-")
    assert not outcome.started[0].startswith("won-hook-copy")


def test_listing_filters_by_source_and_object(stack: AdminStack) -> None:
    stack.ok("POST", rules_path(), rule_doc("a"))
    stack.ok("POST", rules_path(), rule_doc("b", object="company"))
    assert [r["id"] for r in stack.ok("GET", rules_path())["rules"]] == ["b", "a"]
    only = stack.ok("GET", rules_path(), query={"object": "company"})["rules"]
    assert [r["id"] for r in only] == ["b"]


def test_unknown_route_is_404(stack: AdminStack) -> None:
    status, _ = stack.call("GET", "/admin/tenants/acme/nothing")
    assert status == 404


# ------------------------------------------------------------------------------------------- the log
def test_execution_log_by_rule_record_and_status(stack: AdminStack) -> None:
    from billflow.storage.execution_log import get_execution_log, log_item
    from billflow.storage.keys import record_pk

    log = get_execution_log()
    runs = [("r1", "won-hook", "opp-1", "succeeded"), ("r2", "won-hook", "opp-2", "failed"),
            ("r3", "lost-hook", "opp-1", "failed"), ("r4", "lost-hook", "opp-2", "limited")]
    for execution, rule_id, record_id, status in runs:
        log.write(log_item(tenant=TENANT, execution=execution, rule_id=rule_id, step="run", status=status,
                           record_key=record_pk(TENANT, "twenty", "opportunity", record_id)))
    log.write(log_item(tenant="globex", execution="g1", rule_id="won-hook", step="run", status="failed",
                       record_key=record_pk("globex", "twenty", "opportunity", "opp-1")))

    def names(**query: str) -> set[str]:
        items = stack.ok("GET", f"/admin/tenants/{TENANT}/executions", query=query)["executions"]
        return {i["execution"] for i in items}

    assert names() == {"r1", "r2", "r3", "r4"}
    assert names(rule="won-hook") == {"r1", "r2"}
    assert names(record="twenty:opportunity:opp-1") == {"r1", "r3"}
    assert names(status="failed") == {"r2", "r3"}
    assert names(rule="lost-hook", status="failed") == {"r3"}
    assert names(record="twenty:opportunity:opp-2", rule="won-hook") == {"r2"}
    assert names(limit="1") == {"r4"}  # newest first
    status, answer = stack.call("GET", f"/admin/tenants/{TENANT}/executions", query={"record": "opp-1"})
    assert status == 400
    assert "source:object:id" in answer["message"]
    assert stack.call("GET", f"/admin/tenants/{TENANT}/executions", query={"limit": "0"})[0] == 422
