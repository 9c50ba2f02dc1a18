"""Which rules an event matches, and why.

Pure: the filter hands in the event, the field changes billflow observed and the rules of that object;
the engine answers with a verdict per rule and block, with the reason for every criterion.

Criteria are decided in three places, with what is known there (see Clock):
- the filter, on the event's record: a criterion on the looked-up company or contact (`company.name`) is
  *pending*; the pattern is evaluated in three-valued logic, and a block that may still match once the
  lookup is known makes the run start with `recheck` (decided after Lookup);
- the run, right after Lookup (`lookup` given): transitions keep the answers the filter gave (`held`);
- the run, when a time-based action's time comes (`since` given): every criterion is checked against the
  record as it is then; a transition holds if it held at the trigger and the field still has the value
  it changed to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from billflow.models.events import CrmEvent
from billflow.models.rules import Block, Criterion, Rule, block_requires_line_items, is_lookup_field
from billflow.rules import comparators
from billflow.rules.comparators import FieldChange
from billflow.rules.paths import MISSING, get_path
from billflow.rules.pattern import Node, default_pattern, parse_pattern

_TRIGGER_ACTIONS = {
    "created": {"created"},
    "edited": {"updated"},
    "created_or_edited": {"created", "updated"},
    "deleted": {"deleted"},
}


@dataclass(frozen=True)
class Clock:
    """What a verdict may depend on besides the record: time, the lookup, earlier answers."""

    zone: tzinfo = UTC
    now: datetime | None = None  # None: the current time
    lookup: dict[str, Any] | None = None  # None: lookup fields are pending
    held: dict[str, bool] | None = None  # "block.number" -> the filter's answer for a transition
    since: dict[str, Any] | None = None  # a recheck: the record as it was at the trigger

    @classmethod
    def for_rule(cls, rule: Rule, **kwargs: Any) -> Clock:
        return cls(zone=ZoneInfo(rule.timezone), **kwargs)

    def current(self) -> datetime:
        return self.now or datetime.now(UTC)


@dataclass(frozen=True)
class CriterionResult:
    number: int
    criterion: Criterion
    matched: bool
    actual: Any
    reason: str
    pending: bool = False  # cannot be decided yet (needs the lookup)


@dataclass(frozen=True)
class BlockResult:
    index: int
    matched: bool
    criteria: list[CriterionResult]
    pending: bool = False  # may match once the lookup is known


@dataclass
class RuleVerdict:
    rule: Rule
    matched: bool
    reason: str
    blocks: list[BlockResult] = field(default_factory=list)
    transition: str = ""
    selected: list[int] = field(default_factory=list)  # blocks that run (or may, when needs_lookup)
    needs_lookup: bool = False

    @property
    def matched_blocks(self) -> list[BlockResult]:
        return [b for b in self.blocks if b.matched]


def held_key(block: int, number: int) -> str:
    return f"{block}.{number}"


def evaluate_criterion(
    number: int, criterion: Criterion, data: dict[str, Any], changes: dict[str, FieldChange],
    clock: Clock | None = None, block: int = 0,
) -> CriterionResult:
    clock = clock or Clock()
    name = comparators.canonical(criterion.comparator)
    if name in comparators.TRANSITION_COMPARATORS:
        return _transition(number, criterion, name, data, changes, clock, block)
    if is_lookup_field(criterion.field):
        if clock.lookup is None:
            return CriterionResult(number, criterion, False, None,
                                   f"{criterion.field}: decided after Lookup fetches the "
                                   f"{criterion.field.split('.')[0]}", pending=True)
        root = criterion.field.split(".", 1)[0]
        actual = get_path(clock.lookup if root in clock.lookup else data, criterion.field)
    else:
        actual = get_path(data, criterion.field)
    if name in comparators.DATE_COMPARATORS:
        ok = comparators.DATE_COMPARATORS[name](actual, criterion.value, clock.zone, clock.current())
    else:
        compare = comparators.VALUE_COMPARATORS.get(name)
        if compare is None:
            return CriterionResult(number, criterion, False, None, f"unknown comparator {criterion.comparator!r}")
        ok = compare(actual, criterion.value)
    shown = "missing" if actual is MISSING else repr(actual)
    verb = "holds" if ok else "does not hold"
    reason = f"{criterion.field} is {shown}: {criterion.comparator} {criterion.value!r} {verb}"
    return CriterionResult(number, criterion, ok, None if actual is MISSING else actual, reason)


def _transition(
    number: int, criterion: Criterion, name: str, data: dict[str, Any], changes: dict[str, FieldChange],
    clock: Clock, block: int,
) -> CriterionResult:
    held = (clock.held or {}).get(held_key(block, number))
    if clock.since is not None:
        # A recheck: the change happened at the trigger; it still stands if the value is still the new one.
        then, now = get_path(clock.since, criterion.field), get_path(data, criterion.field)
        still = then is not MISSING and now == then
        ok = held is not False and still
        reason = (f"{criterion.field} is still {now!r}" if still
                  else f"{criterion.field} is now {'missing' if now is MISSING else repr(now)}, was {then!r}")
        if held is False:
            reason = f"{criterion.field} did not change as required at the trigger"
        return CriterionResult(number, criterion, ok, None if now is MISSING else now, reason)
    if clock.held is not None:  # after Lookup: the event's changes are gone, the filter's answers are kept
        verb = "changed as required" if held else "did not change as required"
        return CriterionResult(number, criterion, held is True, None,
                               f"{criterion.field} {verb} when the event came")
    change = changes.get(criterion.field)
    if change is None:
        return CriterionResult(number, criterion, False, None, f"{criterion.field} did not change")
    ok = comparators.TRANSITION_COMPARATORS[name](change, criterion.value)
    reason = f"{criterion.field} changed from {change.before!r} to {change.after!r}"
    return CriterionResult(number, criterion, ok, change.after, reason)


def kleene(node: Node, truth: Callable[[int], bool | None]) -> bool | None:
    """A pattern in three-valued logic: None (unknown) unless the known criteria already decide it."""
    if node.op == "num":
        return truth(node.number)
    if node.op == "not":
        inner = kleene(node.children[0], truth)
        return None if inner is None else not inner
    values = [kleene(child, truth) for child in node.children]
    if node.op == "and":
        if any(v is False for v in values):
            return False
        return True if all(v is True for v in values) else None
    if any(v is True for v in values):
        return True
    return False if all(v is False for v in values) else None


def evaluate_block(
    index: int, block: Block, data: dict[str, Any], changes: dict[str, FieldChange], clock: Clock | None = None,
) -> BlockResult:
    results = [evaluate_criterion(i, c, data, changes, clock, index) for i, c in enumerate(block.criteria, start=1)]
    tree = parse_pattern(block.pattern, len(block.criteria)) if block.pattern else default_pattern(
        len(block.criteria)
    )
    verdict = kleene(tree, lambda n: None if results[n - 1].pending else results[n - 1].matched)
    return BlockResult(index, verdict is True, results, pending=verdict is None)


def trigger_fires(rule: Rule, event: CrmEvent, changes: dict[str, FieldChange]) -> tuple[bool, str]:
    if rule.trigger.type == "date":
        return False, "a date-triggered rule runs when its date comes (the scheduler), not on events"
    if event.action not in _TRIGGER_ACTIONS[rule.trigger.on]:
        return False, f"trigger is on {rule.trigger.on}, event is {event.action}"
    watched = rule.trigger.fields
    if watched and event.action == "updated":
        changed = set(event.changed_fields or ()) | {p.split(".")[0] for p in changes}
        if not changed & {w.split(".")[0] for w in watched}:
            return False, f"none of the watched fields {watched} changed"
    return True, "trigger fires"


def evaluate_blocks(
    rule: Rule, data: dict[str, Any], changes: dict[str, FieldChange], clock: Clock,
    first_match_only: bool | None = None, only: list[int] | None = None,
) -> tuple[list[BlockResult], list[int]]:
    """Blocks in order (only those in `only`, when given): every result, and the blocks that run.

    First-match rules stop at the first block that surely matches; blocks before it that may still match
    (pending the lookup) are kept as candidates, in order, for the run to decide.
    """
    first = rule.first_match_only if first_match_only is None else first_match_only
    results: list[BlockResult] = []
    selected: list[int] = []
    for index, block in enumerate(rule.blocks):
        if only is not None and index not in only:
            continue
        result = evaluate_block(index, block, data, changes, clock)
        results.append(result)
        if result.matched or result.pending:
            selected.append(index)
        if result.matched and first:
            break
    return results, selected


def evaluate_rule(
    rule: Rule, event: CrmEvent, changes: dict[str, FieldChange], data: dict[str, Any] | None = None,
    first_match_only: bool | None = None, clock: Clock | None = None,
) -> RuleVerdict:
    """first_match_only: None follows the rule's blocks_match (first, unless the rule says every)."""
    if not rule.active:
        return RuleVerdict(rule, False, "rule is inactive")
    fires, why = trigger_fires(rule, event, changes)
    if not fires:
        return RuleVerdict(rule, False, why)
    data = event.record if data is None else data
    clock = clock or Clock.for_rule(rule)
    blocks, selected = evaluate_blocks(rule, data, changes, clock, first_match_only)
    if not selected:
        return RuleVerdict(rule, False, "no block's criteria hold", blocks)
    pending = [b.index for b in blocks if b.pending and b.index in selected]
    chosen = [b for b in blocks if b.index in selected]
    reason = "criteria hold" if not pending else (
        f"block(s) {', '.join(str(i + 1) for i in pending)} decided after Lookup (company/contact criteria)")
    # An action that requires line items is decided after Lookup too: only Lookup knows the line items.
    needs_line_items = any(block_requires_line_items(rule.blocks[i]) for i in selected)
    return RuleVerdict(rule, True, reason, blocks, transition_of(rule, chosen, changes, event),
                       selected=selected, needs_lookup=bool(pending) or needs_line_items)


def transition_held(verdict: RuleVerdict) -> dict[str, bool]:
    """The filter's answers for the transition criteria of the selected blocks (the run cannot redo them)."""
    return {
        held_key(b.index, r.number): r.matched
        for b in verdict.blocks if b.index in verdict.selected
        for r in b.criteria if comparators.is_transition(r.criterion.comparator)
    }


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
