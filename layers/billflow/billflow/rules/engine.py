"""Which rules an event matches, and why.

Pure: the filter hands in the event, the field changes billflow observed and the rules of that object;
the engine answers with a verdict per rule and block, with the reason for every criterion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billflow.models.events import CrmEvent
from billflow.models.rules import Block, Criterion, Rule
from billflow.rules import comparators
from billflow.rules.comparators import FieldChange
from billflow.rules.paths import MISSING, get_path
from billflow.rules.pattern import default_pattern, parse_pattern

_TRIGGER_ACTIONS = {
    "created": {"created"},
    "edited": {"updated"},
    "created_or_edited": {"created", "updated"},
    "deleted": {"deleted"},
}


@dataclass(frozen=True)
class CriterionResult:
    number: int
    criterion: Criterion
    matched: bool
    actual: Any
    reason: str


@dataclass(frozen=True)
class BlockResult:
    index: int
    matched: bool
    criteria: list[CriterionResult]


@dataclass
class RuleVerdict:
    rule: Rule
    matched: bool
    reason: str
    blocks: list[BlockResult] = field(default_factory=list)
    transition: str = ""

    @property
    def matched_blocks(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.matched]


def evaluate_criterion(
    number: int, criterion: Criterion, data: dict[str, Any], changes: dict[str, FieldChange]
) -> CriterionResult:
    name = comparators.canonical(criterion.comparator)
    if name in comparators.TRANSITION_COMPARATORS:
        change = changes.get(criterion.field)
        if change is None:
            return CriterionResult(number, criterion, False, None, f"{criterion.field} did not change")
        ok = comparators.TRANSITION_COMPARATORS[name](change, criterion.value)
        reason = f"{criterion.field} changed from {change.before!r} to {change.after!r}"
        return CriterionResult(number, criterion, ok, change.after, reason)
    actual = get_path(data, criterion.field)
    compare = comparators.VALUE_COMPARATORS.get(name)
    if compare is None:
        return CriterionResult(number, criterion, False, None, f"unknown comparator {criterion.comparator!r}")
    ok = compare(actual, criterion.value)
    shown = "missing" if actual is MISSING else repr(actual)
    verb = "holds" if ok else "does not hold"
    reason = f"{criterion.field} is {shown}: {criterion.comparator} {criterion.value!r} {verb}"
    return CriterionResult(number, criterion, ok, None if actual is MISSING else actual, reason)


def evaluate_block(
    index: int, block: Block, data: dict[str, Any], changes: dict[str, FieldChange]
) -> BlockResult:
    results = [evaluate_criterion(i, c, data, changes) for i, c in enumerate(block.criteria, start=1)]
    tree = parse_pattern(block.pattern, len(block.criteria)) if block.pattern else default_pattern(
        len(block.criteria)
    )
    matched = tree.evaluate(lambda n: results[n - 1].matched)
    return BlockResult(index, matched, results)


def trigger_fires(rule: Rule, event: CrmEvent, changes: dict[str, FieldChange]) -> tuple[bool, str]:
    if event.action not in _TRIGGER_ACTIONS[rule.trigger.on]:
        return False, f"trigger is on {rule.trigger.on}, event is {event.action}"
    watched = rule.trigger.fields
    if watched and event.action == "updated":
        changed = set(event.changed_fields or ()) | {p.split(".")[0] for p in changes}
        if not changed & {w.split(".")[0] for w in watched}:
            return False, f"none of the watched fields {watched} changed"
    return True, "trigger fires"


def evaluate_rule(
    rule: Rule, event: CrmEvent, changes: dict[str, FieldChange], data: dict[str, Any] | None = None,
    first_match_only: bool = False,
) -> RuleVerdict:
    if not rule.active:
        return RuleVerdict(rule, False, "rule is inactive")
    fires, why = trigger_fires(rule, event, changes)
    if not fires:
        return RuleVerdict(rule, False, why)
    data = event.record if data is None else data
    blocks: list[BlockResult] = []
    for index, block in enumerate(rule.blocks):
        result = evaluate_block(index, block, data, changes)
        blocks.append(result)
        if result.matched and first_match_only:
            break
    matched = [b for b in blocks if b.matched]
    if not matched:
        return RuleVerdict(rule, False, "no block's criteria hold", blocks)
    return RuleVerdict(rule, True, "criteria hold", blocks, transition_of(rule, matched, changes, event))


def transition_of(
    rule: Rule, matched: list[BlockResult], changes: dict[str, FieldChange], event: CrmEvent
) -> str:
    """What makes this firing unique: the versions of the transitions it rode on, else the event itself."""
    parts = sorted(
        {
            f"{r.criterion.field}@{changes[r.criterion.field].version}"
            for b in matched
            for r in b.criteria
            if r.matched and r.criterion.field in changes
            and comparators.is_transition(r.criterion.comparator)
        }
    )
    return "+".join(parts) if parts else f"event:{event.event_id}"
