"""Rules as code and the rule lifecycle, for the admin API.

Rule documents kept in git are the source of truth: plan compares them with the rules table (create,
change, deactivate, delete), apply stores the difference, export writes the table back. The lifecycle
operations (create, edit, clone, activate/deactivate, reorder, delete) change single rules in the table;
an export brings such changes back into git. Inactive rules stay stored and never run.

The pydantic models here are the admin API's request and answer documents: the API validates with them
and its OpenAPI document (docs/admin-openapi.json) is generated from them.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from billflow.errors import BillflowError, InvalidRequest, NotFound
from billflow.models.rules import Rule
from billflow.storage.rules import RuleStore, rule_document

ORDER_STEP = 10  # reorder numbers rules 10, 20, 30...: room to slot one in by hand in YAML


class Conflict(BillflowError):
    """The request contradicts what is stored (a rule id already used, a run still going)."""

    http_status = 409


# ------------------------------------------------------------------------------------------- API documents
class RuleDocument(Rule):
    """A rule as written in YAML: every Rule field but the tenant, which the URL gives. The one-block
    shorthand (criteria, pattern and actions at the top) is accepted too and stored as blocks."""

    model_config = ConfigDict(defer_build=True)

    tenant: SkipJsonSchema[str] = Field(default="", exclude=True)


class ErrorBody(BaseModel):
    model_config = ConfigDict(defer_build=True)

    error: str = Field(description="InvalidRequest, NotFound, Conflict, ...")
    message: str
    details: dict[str, Any] | None = Field(
        default=None, description="e.g. problems: every invalid rule field as 'rule ID: FIELD: message'"
    )


class RulesAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    rules: list[RuleDocument]


class RuleAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    rule: RuleDocument


class DeletedAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    deleted: str


class RulesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rules: list[RuleDocument] = Field(description="Every rule document of the tenant, as kept in git")
    prune: bool = Field(default=False, description="Delete stored rules the documents no longer have")


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rules: list[dict[str, Any]] = Field(description="Rule documents to check (see RuleDocument)")


class ValidateAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    valid: bool
    rules: list[str] = Field(description="Ids of the valid rules")
    problems: list[str] = Field(description="'rule ID: FIELD: message', one per problem")


class CloneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    new_id: str
    name: str | None = Field(default=None, description="Name of the copy (default: the original's + ' (copy)')")
    active: bool = Field(default=False, description="Clones start inactive so a copy never doubles a run")


class ReorderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    source: str
    object: str
    rule_ids: list[str] = Field(
        min_length=1,
        description="These rules first, in this order; the object's other rules follow in their old order",
    )


class PlanDocument(BaseModel):
    model_config = ConfigDict(defer_build=True)

    create: list[str] = Field(default_factory=list, description="In the documents, not stored")
    change: list[str] = Field(default_factory=list, description="Stored, and the document differs")
    deactivate: list[str] = Field(default_factory=list, description="Stored active, the document is inactive")
    delete: list[str] = Field(default_factory=list, description="Stored, not in the documents (with prune)")
    unchanged: list[str] = Field(default_factory=list)
    untracked: list[str] = Field(
        default_factory=list, description="Stored, not in the documents, kept (prune would delete them)"
    )
    fields: dict[str, list[str]] = Field(
        default_factory=dict, description="For each changed or deactivated rule: its fields that differ"
    )

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.change) + len(self.deactivate) + len(self.delete)


class PlanAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    plan: PlanDocument


class ApplyAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    applied: PlanDocument


class ExecutionsAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    executions: list[dict[str, Any]] = Field(
        description="Execution log items, newest first: at, execution, rule_id, record_key, step, status, "
                    "reason, external_id, action_type, transition"
    )


# ------------------------------------------------------------------------------------------- parsing
def parse_rules(tenant: str, documents: list[Any]) -> list[Rule]:
    """Valid rules for the tenant, or InvalidRequest listing every problem with its rule and field."""
    rules, problems = check_documents(documents)
    if problems:
        raise InvalidRequest("rule documents are not valid", problems=problems)
    return [rule.model_copy(update={"tenant": tenant}) for rule in rules]


def check_documents(documents: list[Any]) -> tuple[list[Rule], list[str]]:
    from billflow.logic.validate import validate_rule  # deferred: cold start (reads need no validator)

    rules: list[Rule] = []
    problems: list[str] = []
    seen: set[str] = set()
    for doc in documents:
        if isinstance(doc, BaseModel):
            doc = json.loads(doc.model_dump_json())
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


def parse_rule(tenant: str, document: Any) -> Rule:
    return parse_rules(tenant, [document])[0]


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
