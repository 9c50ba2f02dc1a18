"""Checking rule documents before they are stored: every problem with its rule and field path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from billflow.logic.templates import placeholders
from billflow.models.rules import DOCUMENT_ACTIONS, Rule
from billflow.rules import comparators
from billflow.rules.pattern import PatternError, parse_pattern

# Where placeholders may read from (the run's context, see logic.workflow.RunState.context).
PLACEHOLDER_ROOTS = frozenset(
    {"record", "event", "company", "contact", "line_items", "results", "dispatch", "rule"}
)


@dataclass(frozen=True)
class Problem:
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"rule {self.rule or '?'}: {self.field or '(document)'}: {self.message}"


def validate_rule(document: Any) -> tuple[Rule | None, list[Problem]]:
    rule_id = str(document.get("id", "")) if isinstance(document, dict) else ""
    if not isinstance(document, dict):
        return None, [Problem(rule_id, "", "a rule is a mapping of fields (id, source, object, ...)")]
    try:
        rule = Rule.model_validate(document)
    except ValidationError as exc:
        return None, [
            Problem(rule_id, ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
    return rule, semantic_problems(rule)


def semantic_problems(rule: Rule) -> list[Problem]:
    problems: list[Problem] = []
    if not rule.blocks:
        problems.append(Problem(rule.id, "blocks", "a rule needs at least one block (criteria and actions)"))
    for b, block in enumerate(rule.blocks):
        where = f"blocks.{b}"
        for c, criterion in enumerate(block.criteria, start=1):
            if not comparators.is_known(criterion.comparator):
                problems.append(Problem(rule.id, f"{where}.criteria.{c - 1}.comparator",
                                        f"unknown comparator {criterion.comparator!r}"))
            elif criterion.value is None and comparators.canonical(criterion.comparator) not in (
                comparators.VALUELESS
            ):
                problems.append(Problem(rule.id, f"{where}.criteria.{c - 1}.value",
                                        f"{criterion.comparator} needs a value"))
        if block.pattern:
            try:
                parse_pattern(block.pattern, len(block.criteria))
            except PatternError as exc:
                problems.append(Problem(rule.id, f"{where}.pattern", str(exc)))
        if not block.actions:
            problems.append(Problem(rule.id, f"{where}.actions", "a block needs at least one action"))
        for a, action in enumerate(block.actions):
            path = f"{where}.actions.{a}"
            if action.type in DOCUMENT_ACTIONS and not (action.connection or action.system):
                problems.append(Problem(rule.id, path, "a document action needs a connection (or a system)"))
            if action.type == "field_update" and not action.field:
                problems.append(Problem(rule.id, f"{path}.field", "field_update needs the field to set"))
            for name in sorted(placeholders(action.options) | placeholders(action.value)):
                if name.split(".")[0] not in PLACEHOLDER_ROOTS:
                    roots = ", ".join(sorted(PLACEHOLDER_ROOTS))
                    message = f"unknown placeholder {{{{ {name} }}}}; placeholders start with one of {roots}"
                    problems.append(Problem(rule.id, path, message))
    return problems
