"""Rules as code and the rule lifecycle, for the admin API.

Rule documents kept in git are the source of truth: plan compares them with the rules table (create,
change, deactivate, delete), apply stores the difference, export writes the table back. The lifecycle
operations (create, edit, clone, activate/deactivate, reorder, delete) change single rules in the table;
an export brings such changes back into git. Inactive rules stay stored and never run.

The admin API's request and answer documents are in models/admin.py; the execution log's queries and the
wording of invalid requests are here, so functions/admin/app.py holds routes only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from billflow.errors import BillflowError, InvalidRequest, NotFound
from billflow.models.admin import PlanDocument, RuleDocument
from billflow.models.rules import Rule
from billflow.storage.execution_log import ExecutionLog
from billflow.storage.keys import record_pk
from billflow.storage.rules import RuleStore, rule_document

ORDER_STEP = 10  # reorder numbers rules 10, 20, 30...: room to slot one in by hand in YAML
FILTERED_PAGE = 1000  # log items read from one index before a second filter (rule, status) narrows them


class Conflict(BillflowError):
    """The request contradicts what is stored (a rule id already used, a run still going)."""

    http_status = 409


# ------------------------------------------------------------------------------------------- parsing
def parse_rules(tenant: str, documents: list[Any], default_timezone: str | None = None) -> list[Rule]:
    """Valid rules for the tenant, or InvalidRequest listing every problem with its rule and field. A document
    that names no timezone takes `default_timezone` (the tenant's settings), else UTC."""
    rules, problems = check_documents(documents, default_timezone)
    if problems:
        raise InvalidRequest("rule documents are not valid", problems=problems)
    return [rule.model_copy(update={"tenant": tenant}) for rule in rules]


def check_documents(documents: list[Any], default_timezone: str | None = None) -> tuple[list[Rule], list[str]]:
    from billflow.logic.validate import validate_rule  # deferred: cold start (reads need no validator)

    rules: list[Rule] = []
    problems: list[str] = []
    seen: set[str] = set()
    for doc in documents:
        if isinstance(doc, BaseModel):
            named_zone = "timezone" in doc.model_fields_set  # the request's own keys, before defaults
            doc = json.loads(doc.model_dump_json())
        else:
            named_zone = isinstance(doc, dict) and "timezone" in doc
        if default_timezone and not named_zone and isinstance(doc, dict):
            doc = {**doc, "timezone": default_timezone}
        rule, found = validate_rule(doc)
        problems.extend(str(p) for p in found)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(f"rule {rule.id}: id: used twice")
        seen.add(rule.id)
        if not found:
            rules.append(rule)
    return rules, problems


def parse_rule(tenant: str, document: Any, default_timezone: str | None = None) -> Rule:
    return parse_rules(tenant, [document], default_timezone)[0]


def as_document(rule: Rule) -> RuleDocument:
    return RuleDocument.model_validate(rule_document(rule))


# ------------------------------------------------------------------------------------------- plan / apply
def plan_rules(store: RuleStore, tenant: str, rules: list[Rule], prune: bool) -> PlanDocument:
    current = {r.id: r for r in store.all_rules(tenant)}
    plan = PlanDocument()
    for rule in rules:
        existing = current.get(rule.id)
        if existing is None:
            plan.create.append(rule.id)
            continue
        differing = _differing_fields(existing, rule)
        if not differing:
            plan.unchanged.append(rule.id)
        elif existing.active and not rule.active:
            plan.deactivate.append(rule.id)
            plan.fields[rule.id] = differing
        else:
            plan.change.append(rule.id)
            plan.fields[rule.id] = differing
    wanted = {r.id for r in rules}
    missing = sorted(rid for rid in current if rid not in wanted)
    if prune:
        plan.delete = missing
    else:
        plan.untracked = missing
    return plan


def apply_rules(store: RuleStore, tenant: str, rules: list[Rule], prune: bool = False) -> PlanDocument:
    plan = plan_rules(store, tenant, rules, prune)
    current = {r.id: r for r in store.all_rules(tenant)}
    changed = set(plan.change) | set(plan.deactivate)
    for rule in rules:
        if rule.id in plan.create:
            store.put(rule.model_copy(update={"version": 1}))
        elif rule.id in changed:
            _replace(store, current[rule.id], rule)
    for rule_id in plan.delete:
        store.delete(current[rule_id])
    return plan


def _replace(store: RuleStore, old: Rule, new: Rule) -> Rule:
    stored = new.model_copy(update={"tenant": old.tenant, "version": old.version + 1})
    store.put(stored)
    # A rule moved to another source or object leaves its old partition (after the new one exists, so it
    # is never missing; the filter reads one partition, so it never sees both).
    if (old.source, old.object) != (stored.source, stored.object):
        store.delete(old)
    return stored


def _comparable(rule: Rule) -> dict[str, Any]:
    doc = rule_document(rule)
    doc.pop("version", None)
    return doc


def _differing_fields(old: Rule, new: Rule) -> list[str]:
    before, after = _comparable(old), _comparable(new)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# ------------------------------------------------------------------------------------------- lifecycle
def get_rule(store: RuleStore, tenant: str, rule_id: str) -> Rule:
    rule = store.get(tenant, rule_id)
    if rule is None:
        raise NotFound(f"tenant {tenant} has no rule {rule_id!r}")
    return rule


def create_rule(store: RuleStore, tenant: str, rule: Rule) -> Rule:
    if store.get(tenant, rule.id) is not None:
        raise Conflict(f"rule {rule.id!r} already exists; edit it, or clone it under a new id")
    stored = rule.model_copy(update={"tenant": tenant, "version": 1})
    store.put(stored)
    return stored


def edit_rule(store: RuleStore, tenant: str, rule_id: str, rule: Rule) -> Rule:
    if rule.id != rule_id:
        raise InvalidRequest(f"the document's id {rule.id!r} is not the rule being edited ({rule_id!r}); "
                             "clone a rule to give it a new id")
    old = get_rule(store, tenant, rule_id)
    if not _differing_fields(old, rule):
        return old
    return _replace(store, old, rule)


def clone_rule(
    store: RuleStore, tenant: str, rule_id: str, new_id: str, name: str | None = None, active: bool = False
) -> Rule:
    original = get_rule(store, tenant, rule_id)
    document = {**rule_document(original), "id": new_id, "name": name or f"{original.name or rule_id} (copy)",
                "active": active, "version": 1}
    return create_rule(store, tenant, parse_rule(tenant, document))


def set_active(store: RuleStore, tenant: str, rule_id: str, active: bool) -> Rule:
    rule = get_rule(store, tenant, rule_id)
    if rule.active == active:
        return rule
    stored = rule.model_copy(update={"active": active, "version": rule.version + 1})
    store.put(stored)
    return stored


def reorder_rules(store: RuleStore, tenant: str, source: str, object_name: str, rule_ids: list[str]) -> list[Rule]:
    """Give the listed rules orders 10, 20, ... in the order given; the object's other rules follow."""
    current = store.rules_for(tenant, source, object_name)
    by_id = {r.id: r for r in current}
    duplicates = sorted({rid for rid in rule_ids if rule_ids.count(rid) > 1})
    if duplicates:
        raise InvalidRequest(f"rule ids listed twice: {', '.join(duplicates)}")
    unknown = [rid for rid in rule_ids if rid not in by_id]
    if unknown:
        raise NotFound(f"{source}/{object_name} of tenant {tenant} has no rule(s) {', '.join(unknown)}",
                       rules=[r.id for r in current])
    listed = set(rule_ids)
    ordered = [by_id[rid] for rid in rule_ids] + [r for r in current if r.id not in listed]
    result: list[Rule] = []
    for position, rule in enumerate(ordered, start=1):
        order = position * ORDER_STEP
        if rule.order != order:
            rule = rule.model_copy(update={"order": order, "version": rule.version + 1})
            store.put(rule)
        result.append(rule)
    return result


def delete_rule(store: RuleStore, tenant: str, rule_id: str) -> Rule:
    rule = get_rule(store, tenant, rule_id)
    store.delete(rule)
    return rule


def list_rules(store: RuleStore, tenant: str, source: str | None, object_name: str | None) -> list[RuleDocument]:
    """Every stored rule of the tenant (export), of one source and/or object when given."""
    rules = store.all_rules(tenant)
    return [as_document(r) for r in rules if source in (None, r.source) and object_name in (None, r.object)]


# ------------------------------------------------------------------------------------------- the execution log
def query_executions(
    log: ExecutionLog, tenant: str, rule: str | None, record: str | None, status: str | None, limit: int,
) -> list[dict[str, Any]]:
    """Log items newest first, of one rule, record (source:object:id) and/or status."""
    if record:
        source, _, rest = record.partition(":")
        object_name, _, record_id = rest.partition(":")
        if not (source and object_name and record_id):
            raise InvalidRequest("record is source:object:id, e.g. twenty:opportunity:<uuid>")
        # The record index is the narrowest; the other filters are applied to its items.
        key = record_pk(tenant, source, object_name, record_id)
        items = log.by_record(key, FILTERED_PAGE if rule or status else limit)
    elif rule:
        items = log.by_rule(tenant, rule, FILTERED_PAGE if status else limit)
    elif status:
        items = log.by_status(tenant, status, limit)
    else:
        items = log.recent(tenant, limit)
    chosen = [i for i in items if rule in (None, i.get("rule_id")) and status in (None, i.get("status"))]
    return chosen[:limit]


# ------------------------------------------------------------------------------------------- invalid requests
def invalid_request_answer(errors: Sequence[Any], body: Any) -> dict[str, Any]:
    """The 422 body for pydantic's errors on a request `body`: Powertools' `detail` (HTTPValidationError) and
    each error as `billflow rules validate` words it."""
    detail: list[dict[str, Any]] = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]
    return {"detail": detail, "problems": [request_problem(e["loc"], e["msg"], body) for e in detail]}


def request_problem(loc: list[Any], message: str, body: Any) -> str:
    """'rule ID: FIELD: message' for a rule document's field, as `billflow rules validate` says it."""
    path = [str(p) for p in loc[1:]] if loc[:1] == ["body"] else [str(p) for p in loc]
    rule_doc: Any = body
    if len(path) >= 2 and path[0] == "rules" and path[1].isdigit() and isinstance(body, dict):
        docs = body.get("rules")
        index = int(path[1])
        rule_doc = docs[index] if isinstance(docs, list) and index < len(docs) else None
        path = path[2:]
    rule_id = rule_doc.get("id") if isinstance(rule_doc, dict) else None
    where = ".".join(path) or "(document)"
    message = message.removeprefix("Value error, ")
    return f"rule {rule_id}: {where}: {message}" if rule_id else f"{where}: {message}"
