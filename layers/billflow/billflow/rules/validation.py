"""Checking rule documents before they are stored: every problem with its rule and field path.

Each action type checks its own options; the caller passes the action types in (`action_types`: a type's
name to its handler, billflow.actions.get_action_type), so the rules engine never imports actions or the
connectors behind them. billflow.logic.validate.validate_rule is the check with every action type.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ValidationError

from billflow.models.rules import DOCUMENT_ACTIONS, OTHER_ACTIONS, Action, DateTrigger, Rule, is_lookup_field
from billflow.rules import comparators
from billflow.rules.options import option_problems
from billflow.rules.pattern import PatternError, parse_pattern
from billflow.rules.target_limits import option_problems as target_option_problems
from billflow.rules.templates import normalise, placeholders, references

# Where placeholders may read from (the run's context, see models.run.RunState.context).
PLACEHOLDER_ROOTS = frozenset(
    {"record", "event", "company", "contact", "line_items", "results", "dispatch", "rule"}
)
# Per rule, as in Zoho Books (seed 004): field updates, email alerts, webhooks. Every action of the rule
# counts (all blocks, time-based and failure actions).
ACTIONS_PER_RULE = {"field_update": 3, "email_alert": 5, "webhook": 1}
# An action type's handler by its name (billflow.actions.get_action_type); those with check() are asked.
ActionTypes = Callable[[str], object]
_BLOCK_ACTION = re.compile(r"^blocks\.\d+\.actions\.\d+$")
# Action types whose options are not templates (JSONata has its own syntax).
UNTEMPLATED_OPTIONS = frozenset({"expression"})


@dataclass(frozen=True)
class Problem:
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"rule {self.rule or '?'}: {self.field or '(document)'}: {self.message}"


def validate_rule(document: Any, action_types: ActionTypes) -> tuple[Rule | None, list[Problem]]:
    rule_id = str(document.get("id", "")) if isinstance(document, dict) else ""
    if not isinstance(document, dict):
        return None, [Problem(rule_id, "", "a rule is a mapping of fields (id, source, object, ...)")]
    try:
        rule = Rule.model_validate(document)
    except ValidationError as exc:
        return None, [
            Problem(rule_id, ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()
        ]
    return rule, semantic_problems(rule, action_types)


def semantic_problems(rule: Rule, action_types: ActionTypes) -> list[Problem]:
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
        if not block.actions and not any(group.actions for group in block.time_based):
            problems.append(Problem(rule.id, f"{where}.actions",
                                    "a block needs at least one action (immediate or time-based)"))
        for a, action in enumerate(block.actions):
            path = f"{where}.actions.{a}"
            if action.type in DOCUMENT_ACTIONS and not (action.connection or action.system):
                problems.append(Problem(rule.id, path, "a document action needs a connection (or a system)"))
            if action.type == "field_update" and not action.field:
                problems.append(Problem(rule.id, f"{path}.field", "field_update needs the field to set"))
            for name in sorted(placeholders(_templated(action))):
                if name.split(".")[0] not in PLACEHOLDER_ROOTS:
                    roots = ", ".join(sorted(PLACEHOLDER_ROOTS))
                    message = f"unknown placeholder {{{{ {name} }}}}; placeholders start with one of {roots}"
                    problems.append(Problem(rule.id, path, message))
    problems.extend(action_problems(rule, action_types))
    problems.extend(time_problems(rule))
    if rule.sweep is not None and rule.is_date_triggered:  # issue 11
        problems.append(Problem(rule.id, "sweep", "a date-triggered rule reads every record when its date comes; "
                                                  "the sweep catches missed webhooks of event-triggered rules"))
    return problems


# --- dates, times, lookups: comparators, time-based actions, date triggers ----------------------------
def time_problems(rule: Rule) -> list[Problem]:
    problems: list[Problem] = []
    dated = isinstance(rule.trigger, DateTrigger)
    if isinstance(rule.trigger, DateTrigger) and is_lookup_field(rule.trigger.field):
        problems.append(Problem(rule.id, "trigger.field", "a date trigger follows a field of the record itself, "
                                                          "not of the looked-up company or contact"))
    for b, block in enumerate(rule.blocks):
        for c, criterion in enumerate(block.criteria):
            where = f"blocks.{b}.criteria.{c}"
            if comparators.is_transition(criterion.comparator):
                if dated:
                    problems.append(Problem(rule.id, f"{where}.comparator", "a date-triggered rule has no change "
                                            "to compare: use value comparators (is, before, ...)"))
                elif is_lookup_field(criterion.field):
                    problems.append(Problem(rule.id, f"{where}.comparator", f"{criterion.field}: billflow sees "
                                            "changes of the record only; compare the looked-up company or "
                                            "contact by value"))
            if comparators.is_date(criterion.comparator) and not comparators.is_date_value(criterion.value):
                problems.append(Problem(rule.id, f"{where}.value", f"{criterion.value!r} is not a date: give "
                                        "2026-03-31, 2026-03-31T09:00, today, yesterday, tomorrow, now, "
                                        "or -7d / +30d / +2w / -3h / +90m"))
        for g, group in enumerate(block.time_based):
            where = f"blocks.{b}.time_based.{g}"
            if not group.actions:
                problems.append(Problem(rule.id, f"{where}.actions", "time-based actions need at least one action"))
            if group.field and is_lookup_field(group.field):
                problems.append(Problem(rule.id, f"{where}.field", "time-based actions follow a date field of "
                                                                  "the record itself"))
            if group.recheck_criteria and not block.criteria:
                problems.append(Problem(rule.id, f"{where}.recheck_criteria",
                                        "the block has no criteria to check again"))
    return problems


# --- actions: per-type options, limits per rule, ${...} references ------------------------------------
@runtime_checkable
class _ChecksOptions(Protocol):
    def check(self, action: Action) -> list[tuple[str, str]]: ...


def rule_actions(rule: Rule) -> list[tuple[str, Action]]:
    """Every action of a rule with its path, in the order a run meets them (blocks first, then failures)."""
    found: list[tuple[str, Action]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Action):
            found.append((path, node))
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                walk(getattr(node, name), f"{path}.{name}" if path else name)
        elif isinstance(node, list | tuple):
            for i, item in enumerate(node):
                walk(item, f"{path}.{i}")
        elif isinstance(node, dict):
            for key, item in node.items():
                walk(item, f"{path}.{key}")

    walk(rule, "")
    return found


def action_problems(rule: Rule, action_types: ActionTypes) -> list[Problem]:
    problems: list[Problem] = []
    actions = rule_actions(rule)
    counts: dict[str, int] = {}
    for index, (path, action) in enumerate(actions):
        counts[action.type] = counts.get(action.type, 0) + 1
        limit = ACTIONS_PER_RULE.get(action.type)
        if limit is not None and counts[action.type] == limit + 1:
            problems.append(Problem(rule.id, path, f"a rule may have at most {limit} {action.type} action(s); "
                                                   f"this is one too many"))
        handler = action_types(action.type)
        problems.extend(Problem(rule.id, f"{path}.{where}", message)  # issue 8 §8: unknown options refused
                        for where, message in option_problems(action))
        if action.type in DOCUMENT_ACTIONS and action.system:  # issue 9: each target's own limits, in one place
            problems.extend(Problem(rule.id, f"{path}.options", message)
                            for message in target_option_problems(f"{action.system}.{action.type}", action.options))
        if isinstance(handler, _ChecksOptions):
            problems.extend(Problem(rule.id, f"{path}.{where}", message) for where, message in handler.check(action))
        if not _BLOCK_ACTION.match(path):  # blocks' actions had their {{ }} placeholders checked above
            allowed = PLACEHOLDER_ROOTS | ({"failure"} if path.startswith("on_failure") else set())  # issue 8 §8
            for name in sorted(placeholders(_templated(action))):
                if name.split(".")[0] not in allowed:
                    roots = ", ".join(sorted(allowed))
                    problems.append(Problem(rule.id, path, f"unknown placeholder {{{{ {name} }}}}; placeholders "
                                                           f"start with one of {roots}"))
        earlier = {a.type for _, a in actions[:index]} if not path.startswith("on_failure") else {
            a.type for _, a in actions}
        problems.extend(Problem(rule.id, path, message) for message in _reference_problems(rule, action, earlier))
    return problems


def _reference_problems(rule: Rule, action: Action, earlier: set[str]) -> list[str]:
    problems: list[str] = []
    templated = _templated(action)
    if not earlier and any(p.split(".")[0] in ("dispatch", "results") for p in placeholders(templated)):
        problems.append("{{ dispatch... }} / {{ results... }} in the rule's first action: no action has run before it")
    data_roots = {normalise(r) for r in PLACEHOLDER_ROOTS - {"results", "dispatch"}}
    data_roots |= {normalise(rule.object), "record"}
    action_types = {normalise(t): t for t in DOCUMENT_ACTIONS | OTHER_ACTIONS}
    for reference in sorted(references(templated)):
        head = normalise(reference.split(".")[0])
        if head in data_roots:
            continue
        if head == "dispatch":
            if not earlier:
                problems.append(f"${{{reference}}} in the rule's first action: no action has run before it")
            continue
        kind = action_types.get(head)
        if kind is None:
            known = sorted({rule.object.upper(), "RECORD", "COMPANY", "CONTACT", "EVENT", "RULE", "DISPATCH"})
            problems.append(f"unknown placeholder ${{{reference}}}; it starts with {', '.join(known)} or an "
                            f"action type (INVOICE, WEBHOOK, EXPRESSION, ...)")
        elif kind not in earlier:
            problems.append(f"placeholder ${{{reference}}} reads the result of an earlier {kind} action, and no "
                            f"{kind} action comes before this one")
    return problems


def _templated(action: Action) -> list[Any]:
    """The parts of an action that are templates: its options (unless its type has its own language), value."""
    return [action.value] if action.type in UNTEMPLATED_OPTIONS else [action.options, action.value]
