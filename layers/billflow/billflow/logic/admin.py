"""Rules as code: plan and apply a set of rule documents to a tenant's rules table; read the log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billflow.errors import InvalidRequest
from billflow.models.rules import Rule
from billflow.rules.validation import validate_rule
from billflow.storage.rules import RuleStore, rule_document


@dataclass
class Plan:
    create: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return {"create": self.create, "update": self.update, "unchanged": self.unchanged,
                "delete": self.delete}


def parse_rules(tenant: str, documents: list[Any]) -> list[Rule]:
    rules: list[Rule] = []
    problems: list[str] = []
    seen: set[str] = set()
    for doc in documents:
        rule, found = validate_rule(doc)
        problems.extend(str(p) for p in found)
        if rule is None:
            continue
        if rule.id in seen:
            problems.append(f"rule {rule.id}: id: used twice")
        seen.add(rule.id)
        rules.append(rule.model_copy(update={"tenant": tenant}))
    if problems:
        raise InvalidRequest("rule documents are not valid", problems=problems)
    return rules


def plan_rules(store: RuleStore, tenant: str, rules: list[Rule], prune: bool) -> Plan:
    current = {r.id: r for r in store.all_rules(tenant)}
    plan = Plan()
    for rule in rules:
        existing = current.get(rule.id)
        if existing is None:
            plan.create.append(rule.id)
        elif _comparable(existing) != _comparable(rule):
            plan.update.append(rule.id)
        else:
            plan.unchanged.append(rule.id)
    if prune:
        wanted = {r.id for r in rules}
        plan.delete = sorted(rid for rid in current if rid not in wanted)
    return plan


def apply_rules(store: RuleStore, tenant: str, rules: list[Rule], prune: bool = False) -> Plan:
    plan = plan_rules(store, tenant, rules, prune)
    current = {r.id: r for r in store.all_rules(tenant)}
    for rule in rules:
        if rule.id in plan.create:
            store.put(rule)
        elif rule.id in plan.update:
            # A moved rule (other source/object) leaves its old partition.
            old = current[rule.id]
            if (old.source, old.object) != (rule.source, rule.object):
                store.delete(old)
            store.put(rule.model_copy(update={"version": old.version + 1}))
    for rule_id in plan.delete:
        store.delete(current[rule_id])
    return plan


def _comparable(rule: Rule) -> dict[str, Any]:
    doc = rule_document(rule)
    doc.pop("version", None)
    return doc
