"""Turning "the record after the change" into field transitions, exactly once per change."""

from __future__ import annotations

from typing import Any

from billflow.errors import TransientError
from billflow.models.events import CrmEvent
from billflow.rules.comparators import FieldChange
from billflow.rules.paths import MISSING, get_path
from billflow.storage.records import RecordState, RecordStateStore

_ATTEMPTS = 8


def observe_changes(store: RecordStateStore, event: CrmEvent, paths: set[str]) -> dict[str, FieldChange]:
    """Compare the event's record with what billflow last saw and remember the new values.

    A field whose value differs from the remembered one changed (its version goes up). A redelivery of
    the event that caused the current version yields that same change again, so the same execution name is
    derived and Step Functions refuses the duplicate; any other event with an unchanged value yields none.
    """
    if not paths or event.action == "deleted":
        return {}
    pk = _pk(event)
    for _ in range(_ATTEMPTS):
        state = store.get(pk)
        changes, dirty = _diff(state, event, paths)
        if not dirty or store.save(state):
            return changes
    raise TransientError("record state is contended; the bus retries this event")


def mark_fired(store: RecordStateStore, event: CrmEvent, rule_id: str) -> bool:
    """For first-edit rules: True the first time a rule fires for a record, False ever after."""
    pk = _pk(event)
    for _ in range(_ATTEMPTS):
        state = store.get(pk)
        if rule_id in state.fired:
            return state.causes.get(f"fired:{rule_id}") == event.event_id  # a redelivery of the first firing
        state.fired.append(rule_id)
        state.causes[f"fired:{rule_id}"] = event.event_id
        if store.save(state):
            return True
    raise TransientError("record state is contended; the bus retries this event")


def _pk(event: CrmEvent) -> str:
    from billflow.storage.keys import record_pk

    return record_pk(event.tenant, event.source, event.object, event.record_id)


def _diff(state: RecordState, event: CrmEvent, paths: set[str]) -> tuple[dict[str, FieldChange], bool]:
    occurred = event.occurred_at.isoformat()
    if state.last_occurred_at and occurred < state.last_occurred_at:
        return {}, False  # an older event arriving late must not roll transitions back
    changes: dict[str, FieldChange] = {}
    dirty = False
    announced = {f.split(".")[0] for f in event.changed_fields or ()}
    for path in sorted(paths):
        new: Any = get_path(event.record, path)
        if new is MISSING:
            continue
        if path in state.values:
            old = state.values[path]
            if new != old:
                version = state.versions.get(path, 0) + 1
                changes[path] = FieldChange(path, old, new, version)
                state.previous[path], state.values[path] = old, new
                state.versions[path], state.causes[path] = version, event.event_id
                dirty = True
            elif state.causes.get(path) == event.event_id:
                changes[path] = FieldChange(path, state.previous.get(path), new, state.versions[path])
        else:
            # First sight: a change only if the CRM says so (or the record is new); else a baseline.
            is_change = event.action == "created" or path.split(".")[0] in announced
            state.values[path] = new
            state.previous[path] = None
            state.versions[path] = 1 if is_change else 0
            state.causes[path] = event.event_id if is_change else ""
            if is_change:
                changes[path] = FieldChange(path, None, new, 1)
            dirty = True
    if dirty:
        state.last_occurred_at = max(state.last_occurred_at, occurred)
    return changes, dirty
