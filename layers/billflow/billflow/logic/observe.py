"""Turning "the record after the change" into field transitions, exactly once per change, in any order.

CRMs deliver concurrently and out of order. Transitions are decided per field, from the event itself:
an event that announces a change of a field (Twenty's `updatedFields`, or a created record) is that
field's change, versioned by the event's own time, whether it arrives before or after newer events. So
any permutation or duplication of a record's deliveries yields the same transitions, hence the same
execution names, as in-order delivery. A late, older event never rolls the remembered value back: it is
placed in the field's history by its time. Only a source that never says what changed falls back to
comparing values, and only for events newer than every other seen.

What cannot be decided is returned as `undecided` (never dropped in silence): the filter writes it to the
execution log as `skipped` with the reason.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from billflow.errors import TransientError
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.rules import comparators
from billflow.rules.comparators import FieldChange
from billflow.rules.paths import MISSING, get_path
from billflow.storage import keys
from billflow.storage.execution_log import ExecutionLog, log_item
from billflow.storage.records import HISTORY_PER_FIELD, Observation, RecordState, RecordStateStore, storable

_ATTEMPTS = 8
SKIPPED = "skipped"


@dataclass
class Observed:
    """What observe decided for one event: the changes it carries, and the fields it could not decide."""

    changes: dict[str, FieldChange] = field(default_factory=dict)
    undecided: dict[str, str] = field(default_factory=dict)  # path -> why


def observe_record(store: RecordStateStore, event: CrmEvent, paths: set[str]) -> Observed:
    """Decide the event's changes of the watched paths and remember what it reported."""
    if not paths or event.action == "deleted":
        return Observed()
    pk = _pk(event)
    for _ in range(_ATTEMPTS):
        state = store.get(pk)
        observed, dirty = decide(state, event, paths)
        if not dirty or store.save(state):
            return observed
    raise TransientError("record state is contended; the bus retries this event")


def observe_changes(store: RecordStateStore, event: CrmEvent, paths: set[str]) -> dict[str, FieldChange]:
    return observe_record(store, event, paths).changes


def mark_fired(store: RecordStateStore, event: CrmEvent, rule_id: str) -> bool:
    """For first-edit rules: True the first time a rule fires for a record, False ever after."""
    pk = _pk(event)
    for _ in range(_ATTEMPTS):
        state = store.get(pk)
        if rule_id in state.fired:
            return state.fired_by.get(rule_id) == event.event_id  # a redelivery of the first firing
        state.fired.append(rule_id)
        state.fired_by[rule_id] = event.event_id
        if store.save(state):
            return True
    raise TransientError("record state is contended; the bus retries this event")


def change_version(event: CrmEvent) -> int:
    """The version of a change is the time it happened (ms): the same whatever the order of arrival."""
    return int(event.occurred_at.timestamp() * 1000)


def decide(state: RecordState, event: CrmEvent, paths: set[str]) -> tuple[Observed, bool]:
    """The event's changes given what is remembered; updates `state`. True if state needs saving."""
    observed = Observed()
    dirty = False
    at_ms = change_version(event)
    says = event.action == "created" or event.changed_fields is not None
    announced = {f.split(".")[0] for f in event.changed_fields or ()}
    first_seen = state.first_seen
    for path in sorted(paths):
        new: Any = get_path(event.record, path)
        if new is MISSING:
            continue
        history = state.fields.setdefault(path, [])
        mine = next((o for o in history if o.event_id == event.event_id), None)
        if mine is not None:  # a redelivery: the same answer as the first time
            if mine.version is not None:
                observed.changes[path] = FieldChange(path, _before(history, mine), new, mine.version)
            continue
        kept = storable(new)
        this = Observation(at_ms, kept, event.event_id)
        newest = history[-1] if history else None
        is_newest = newest is None or this.order() > newest.order()
        if event.action == "created" or path.split(".")[0] in announced:
            this.version = at_ms
        elif not says and newest is not None and is_newest and kept != newest.value:
            this.version = at_ms  # the CRM never says what changed: a newer, different value is a change
        elif newest is None and first_seen and not says:
            observed.undecided[path] = (
                f"first delivery of this record does not say what changed: {path} = {_shown(new)} taken as the "
                "starting value, no transition decided")
        elif newest is not None and says and is_newest and kept != newest.value:
            observed.undecided[path] = (
                f"{path} is now {_shown(new)} (was {_shown(newest.value)}) but no delivery received so far announces "
                "that change: it was lost or is still on its way")
        bisect.insort(history, this, key=Observation.order)
        del history[:-HISTORY_PER_FIELD]
        dirty = True
        if this.version is not None:
            observed.changes[path] = FieldChange(path, _before(history, this), new, this.version)
    return observed, dirty


def log_undecided(log: ExecutionLog, event: CrmEvent, rules: list[Rule], undecided: dict[str, str]) -> int:
    """One `skipped` entry per rule whose transition reads an undecided field; the number written.

    Written at the event's own time under a name derived from the event, so a redelivery rewrites the same
    entry rather than adding one.
    """
    written = 0
    record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
    for rule in rules:
        fields = sorted({
            c.field for b in rule.blocks for c in b.criteria
            if comparators.is_transition(c.comparator) and c.field in undecided
        })
        if not fields:
            continue
        transition = f"undecided:{event.event_id}"
        name = keys.execution_name(rule.id, keys.execution_key(event.tenant, rule.id, record_key, transition))
        log.write(log_item(
            tenant=event.tenant, execution=name, rule_id=rule.id, record_key=record_key, step="observe",
            status=SKIPPED, reason="; ".join(undecided[f] for f in fields), transition=transition,
            at=event.occurred_at,
        ))
        written += 1
    return written


def _before(history: list[Observation], this: Observation) -> Any:
    """The value reported just before this one in time (None when none is known yet)."""
    earlier = [o for o in history if o.order() < this.order()]
    return earlier[-1].value if earlier else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _pk(event: CrmEvent) -> str:
    return keys.record_pk(event.tenant, event.source, event.object, event.record_id)
