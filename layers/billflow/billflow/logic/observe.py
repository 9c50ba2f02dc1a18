"""Turning "the record after the change" into field transitions, exactly once per change, in any order.

CRMs deliver concurrently and out of order. Transitions are decided per field, from the event itself:
an event that announces a change of a field (Twenty's `updatedFields`, or a created record) is that
field's change, versioned by the event's own time, whether it arrives before or after newer events. So
any permutation or duplication of a record's deliveries yields the same transitions, hence the same
execution names, as in-order delivery. A late, older event never rolls the remembered value back: it is
placed in the field's history by its time. Only a source that never says what changed falls back to
comparing values, and only for events newer than every other seen.

When in doubt, ask the CRM (issue 11): a first-seen record whose delivery does not say what changed is
read from the CRM's API (CrmConnector.get_record) before anything is decided. The CRM's answer is observed
as an event of its own (`crm_event`: its time is the record's last-modified time, its id derived from the
record and that time, so two paths that read the same state derive the same change), and a field that no
change was ever decided for is taken as changed to its current value at that time. The delivery is then
placed in the history like any late one. So whichever delivery comes first, and however often, the
transition is the CRM's, and its execution name the same. The reconciliation sweep (logic/sweep.py) feeds
records it reads from the CRM through the same path.

What cannot be decided even so (no CRM connection, a CRM that cannot read records) is returned as
`undecided` (never dropped in silence): the filter writes it to the execution log as `skipped` with the
reason.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from billflow.errors import ConfigurationError, TargetRejected, TransientError
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
    event: CrmEvent | None = None  # the event decided: the CRM's view when the CRM was asked, else None


# Reads a record from its CRM: (the CRM's view as an event, or None and why it could not be read).
CrmReader = Callable[[CrmEvent], tuple[CrmEvent | None, str]]


def observe_record(
    store: RecordStateStore, event: CrmEvent, paths: set[str], ask: CrmReader | None = None, from_crm: bool = False,
) -> Observed:
    """Decide the event's changes of the watched paths and remember what it reported.

    ask: how to read the record from the CRM when the event cannot be decided (a first sight that does not
    say what changed); from_crm: the event is the CRM's own view (the sweep), decided as such.
    """
    if not paths or event.action == "deleted":
        return Observed()
    pk = _pk(event)
    why_not = ""
    for _ in range(_ATTEMPTS):
        state = store.get(pk)
        if ask is not None and not from_crm and state.first_seen and _silent(event):
            view, why_not = ask(event)
            if view is not None:
                observed, _ = decide(state, view, paths, from_crm=True)
                decide(state, event, paths)  # the delivery itself, placed in the history
                observed.event = view
                if store.save(state):
                    return observed
                continue
        observed, dirty = decide(state, event, paths, from_crm=from_crm)
        if why_not:
            observed.undecided = {p: f"{why}; the CRM could not be asked: {why_not}"
                                  for p, why in observed.undecided.items()}
        if not dirty or store.save(state):
            return observed
    raise TransientError("record state is contended; the bus retries this event")


def _silent(event: CrmEvent) -> bool:
    return event.action == "updated" and event.changed_fields is None


def crm_event(
    tenant: str, source: str, object_name: str, record_id: str, record: dict[str, Any], modified_at: datetime,
    received_at: datetime,
) -> CrmEvent:
    """A record as the CRM holds it, as an event: its id depends only on the record and its last-modified time,
    so the filter and the sweep reading the same state derive the same change."""
    at_ms = int(modified_at.timestamp() * 1000)
    digest = hashlib.sha256("\x1f".join([tenant, source, object_name, record_id, str(at_ms)]).encode()).hexdigest()
    return CrmEvent(
        event_id=f"crm-{digest[:40]}", tenant=tenant, source=source, object=object_name, action="updated",
        record_id=record_id, record=record, changed_fields=None, occurred_at=modified_at, received_at=received_at,
    )


def read_from_crm(event: CrmEvent) -> tuple[CrmEvent | None, str]:
    """The record as the CRM holds it now, through the tenant's connection named after the source; None and
    why when there is no such connection, the CRM cannot read records, or no longer has it. A transient
    failure raises (the bus retries the event)."""
    from billflow.connectors import get_crm  # deferred: only undecided first sights read the CRM
    from billflow.storage.secrets import get_secret_store

    try:
        connection = get_secret_store().connection(event.tenant, event.source)
        crm = get_crm(connection.type)
        record = crm.get_record(connection, event.object, event.record_id)
    except (ConfigurationError, TargetRejected) as exc:
        return None, exc.message
    if record is None:
        return None, "the CRM has no such record"
    modified = crm.modified_at(connection, record) or event.occurred_at
    return crm_event(event.tenant, event.source, event.object, event.record_id, record, modified,
                     datetime.now(UTC)), ""


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


def decide(state: RecordState, event: CrmEvent, paths: set[str], from_crm: bool = False) -> tuple[Observed, bool]:
    """The event's changes given what is remembered; updates `state`. True if state needs saving.

    from_crm: the event is the CRM's view of the record; a field no change was ever decided for is taken as
    changed to its current value at the CRM's last-modified time."""
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
        announces = event.action == "created" or path.split(".")[0] in announced
        if says and not announces and newest is not None and is_newest and kept == newest.value:
            # An edit of other fields: the value is the one already remembered, and a source that says what
            # changed decides every transition from its announcements, so this report adds nothing. Not
            # writing it keeps the common unmatched event to one read (no record-state write).
            continue
        if announces:
            this.version = at_ms
        elif from_crm and all(o.version is None for o in history):
            this.version = at_ms  # the CRM's state is the first decided value of this field
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
