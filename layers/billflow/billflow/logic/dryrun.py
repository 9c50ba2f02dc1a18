"""Dry run: what the rules would do with a sample event, and why, with nothing sent and nothing stored.

A sample event is a CRM's webhook body (normalised by its source adapter; no signature needed) or a
CrmEvent document. For each rule of the event's object (or the rules given), the report shows the
trigger's verdict, every block and criterion with the engine's reasons, and for a match the exact requests
each action would send: the action type's render() then preview(), the same calls and idempotency keys a
run uses. Nothing is written: no record state (what changed comes from the previous record, when given, or
from the fields the event says changed), no daily-limit counter, no execution, no log item. The CRM is
only read when asked (fetch_lookup); otherwise values a lookup would give appear as stand-ins such as
{company.name}.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from billflow.actions import get_action_type
from billflow.connectors import get_crm
from billflow.errors import InvalidRequest
from billflow.logic.admin import get_rule, parse_rules
from billflow.logic.filter import build_run_state
from billflow.logic.once_per import send_key
from billflow.logic.schedule import plan_timed
from billflow.models.admin import (
    ActionReport,
    BlockReport,
    ChangeReport,
    CriterionReport,
    DryRunReport,
    DryRunRequest,
    EventReport,
    RuleReport,
)
from billflow.models.events import GENERIC_SOURCES, CrmEvent
from billflow.models.rules import Rule, block_requires_line_items
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import Clock, RuleVerdict, evaluate_rule
from billflow.rules.paths import MISSING, get_path
from billflow.rules.templates import placeholders
from billflow.sources import get_source, known_sources, source_for
from billflow.storage.rules import RuleStore
from billflow.storage.secrets import get_secret_store

LOOKUP_ROOTS = ("company", "contact", "line_items")
_CRM_EVENT_KEYS = frozenset({"event_id", "tenant", "source", "object", "action", "record_id", "record"})


# ------------------------------------------------------------------------------------------- the run
def dry_run(tenant: str, request: DryRunRequest, store: RuleStore) -> DryRunReport:
    events = read_events(tenant, request.event, request.source)
    given: list[Rule] | None = None
    if request.rules is not None:
        given = parse_rules(tenant, list(request.rules))
    elif request.rule_id:
        given = [get_rule(store, tenant, request.rule_id)]
    daily_limits = store.tenant_settings(tenant).daily_limits
    reports = []
    for event in events:
        rules = store.rules_for(tenant, event.source, event.object) if given is None else given
        reports.append(_event_report(event, rules, request, daily_limits))
    return DryRunReport(events=reports)


def read_events(tenant: str, body: dict[str, Any], source: str | None) -> list[CrmEvent]:
    """The sample as normalised events of this tenant: a CrmEvent document, or a webhook body."""
    if source is None and body.keys() >= _CRM_EVENT_KEYS:
        try:
            event = CrmEvent.model_validate(body)
        except ValueError as exc:
            raise InvalidRequest("the sample event is not a valid CrmEvent", problems=[str(exc)]) from None
        return [event.model_copy(update={"tenant": tenant})]
    raw = json.dumps(body).encode()
    problems: list[str] = []
    # "generic" accepts nothing until a tenant's source secret configures it: not tried on a guess.
    for name in [source] if source else [n for n in known_sources() if n != "generic"]:
        adapter = source_for(tenant, name) if source else get_source(name)  # a generic source: its mapping
        try:
            return adapter.parse(tenant=tenant, body=raw, received_at=datetime.now(UTC))
        except InvalidRequest as exc:
            found = exc.details.get("problems") or []
            problems.append(f"{name}: {exc.message}" + (f" ({'; '.join(map(str, found))})" if found else ""))
    raise InvalidRequest("the sample event is neither a CrmEvent nor a webhook body a source accepts",
                         problems=problems)


def observed_changes(
    event: CrmEvent, paths: set[str], previous: dict[str, Any] | None
) -> dict[str, FieldChange]:
    """What changed, as the filter would see it, computed without record state.

    With the previous record: every watched field whose value differs. Without: as the filter sees a record
    for the first time (logic.observe): the fields the CRM says changed, or every field of a created record.
    """
    if event.action == "deleted":
        return {}
    announced = {f.split(".")[0] for f in event.changed_fields or ()}
    changes: dict[str, FieldChange] = {}
    for path in sorted(paths):
        new = get_path(event.record, path)
        if new is MISSING:
            continue
        if previous is not None:
            old = get_path(previous, path)
            old = None if old is MISSING else old
            if old != new:
                changes[path] = FieldChange(path, old, new, 1)
        elif event.action == "created" or path.split(".")[0] in announced:
            changes[path] = FieldChange(path, None, new, 1)
    return changes


def _event_report(
    event: CrmEvent, rules: list[Rule], request: DryRunRequest, daily_limits: dict[str, int]
) -> EventReport:
    previous = request.previous
    if previous is not None and isinstance(previous.get("record"), dict):
        previous = previous["record"]  # a webhook body or CrmEvent of the earlier state
    watched = set().union(*(r.watched_paths() for r in rules)) if rules else set()
    changes = observed_changes(event, watched, previous)
    if previous is not None:
        changes_from = "the previous record given"
    elif event.action == "created":
        changes_from = "a created record: every field changed"
    else:
        changes_from = "the fields the event says changed (their earlier values are unknown)"
    lookup, lookup_note = _lookup(event, rules, request)
    known = request.lookup is not None or request.fetch_lookup  # else criteria on the lookup stay pending
    return EventReport(
        event_id=event.event_id, tenant=event.tenant, source=event.source, object=event.object,
        action=event.action, record_id=event.record_id, changed_fields=event.changed_fields,
        changes_from=changes_from,
        changes=[ChangeReport(field=c.path, before=c.before, after=c.after) for c in changes.values()],
        lookup=lookup_note,
        rules=[_rule_report(rule, event, changes, lookup, known, daily_limits) for rule in rules],
    )


def _rule_report(
    rule: Rule, event: CrmEvent, changes: dict[str, FieldChange], lookup: dict[str, Any], lookup_known: bool,
    daily_limits: dict[str, int],
) -> RuleReport:
    report = RuleReport(rule_id=rule.id, name=rule.name, active=rule.active, order=rule.order, matched=False,
                        runs=False, reason="")
    if (rule.source, rule.object) != (event.source, event.object):
        report.reason = (f"rule is for {rule.source}/{rule.object}; the event is for "
                         f"{event.source}/{event.object}")
        return report
    # An inactive rule never runs, but seeing what it would do is how one tries a rule before activating it.
    evaluated = rule if rule.active else rule.model_copy(update={"active": True})
    # With the lookup known, company and contact criteria are decided as the run decides them after Lookup.
    clock = Clock.for_rule(rule, lookup=lookup) if lookup_known else None
    verdict = evaluate_rule(evaluated, event, changes, clock=clock)
    report.matched = verdict.matched
    report.runs = verdict.matched and rule.active
    report.reason = verdict.reason if rule.active else f"rule is inactive: it never runs ({verdict.reason})"
    report.blocks = [
        BlockReport(
            index=block.index,
            pattern=rule.blocks[block.index].pattern or " AND ".join(str(c.number) for c in block.criteria),
            matched=block.matched,
            pending=block.pending,
            criteria=[
                CriterionReport(number=c.number, field=c.criterion.field, comparator=c.criterion.comparator,
                                value=c.criterion.value, matched=c.matched, pending=c.pending, actual=c.actual,
                                reason=c.reason)
                for c in block.criteria
            ],
        )
        for block in verdict.blocks
    ]
    if rule.trigger.when == "first_edit":
        report.notes.append("first_edit: runs only the first time it fires for a record")
    if any(b.pending for b in verdict.blocks):
        report.notes.append("criteria on the company or contact are decided after Lookup: give a lookup, or "
                            "fetch it, to decide them here")
    if verdict.matched and _line_items_missing(rule, verdict.selected, lookup, lookup_known, report):
        report.runs = False
        return report
    if verdict.matched:
        report.transition = verdict.transition
        report.actions, report.execution_name = _action_reports(event, verdict, lookup, daily_limits)
        report.notes.append("the execution name assumes this is the field's first observed change")
    return report


def _line_items_missing(
    rule: Rule, selected: list[int], lookup: dict[str, Any], lookup_known: bool, report: RuleReport
) -> bool:
    """Issue 11: require_line_items, as the run decides it after Lookup; True when the run would end
    not_matched for want of line items."""
    wanting = sorted({a.type for i in selected for a in block_requires_line_items(rule.blocks[i])})
    items = lookup.get("line_items") if lookup_known else None
    if isinstance(items, list) and items:
        report.notes.append(f"{len(items)} line item(s) from the lookup become the document's lines")
    if not wanting:
        return False
    if not lookup_known:
        report.notes.append("require_line_items is decided after Lookup: give a lookup with line_items, or "
                            "fetch it, to decide it here")
        return False
    if items:
        return False
    report.reason = (f"not_matched after Lookup: the record has no line items and {', '.join(wanting)} "
                     "requires them (require_line_items)")
    return True


def _action_reports(
    event: CrmEvent, verdict: RuleVerdict, lookup: dict[str, Any], daily_limits: dict[str, int]
) -> tuple[list[ActionReport], str]:
    """Every action of the run in its order (the immediate ones, then the time-based ones), rendered and
    previewed as dispatch would, with the key dispatch would give it."""
    state = build_run_state(event, verdict, daily_limits)
    state = state.model_copy(update={"lookup": lookup, "dry_run": True})
    if not state.timed:
        state = state.model_copy(update={"timed": _timed(verdict, event)})
    reports: list[ActionReport] = []
    for index, action in enumerate(state.sequence()):
        key = send_key(state, action, index)  # as dispatch derives it
        position = state.group_at(index)
        group = state.timed[position] if position is not None else None
        report = ActionReport(index=index, type=action.type, connection=action.connection or action.system,
                              idempotency_key=key, when="now" if group is None else f"{group.label} ({group.due})")
        if group is not None and group.skip:
            report.error = f"skipped when the run gets there: {group.skip}"
        else:
            try:
                handler = get_action_type(action.type)
                report.request = handler.render(action, state)
                report.requests = handler.preview(action, report.request, state, key)
            except Exception as exc:  # a dry run reports every action's problem instead of stopping at one
                report.error = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
        reports.append(report)
        # Later actions may use this one's result ({{ dispatch.external_id }}): unknown until it runs.
        stand_in = {"index": index, "action_type": action.type, "status": "dry_run",
                    "external_id": f"{{action.{index}.external_id}}", "external_url": None, "details": {}}
        state = state.model_copy(update={"results": [*state.results, stand_in]})
    return reports, state.execution_name


def _timed(verdict: RuleVerdict, event: CrmEvent) -> list[Any]:
    """The time-based groups of the blocks that run, placed in time as if the rule fired now."""
    blocks = [b.index for b in verdict.matched_blocks]
    if not any(verdict.rule.blocks[b].time_based for b in blocks):
        return []
    return list(plan_timed(verdict.rule, blocks, event.record, datetime.now(UTC)))


def _lookup(event: CrmEvent, rules: list[Rule], request: DryRunRequest) -> tuple[dict[str, Any], str]:
    if event.source in GENERIC_SOURCES:
        return {}, "none: this source has no CRM to look up"
    if request.lookup is not None:
        return request.lookup, "given"
    if request.fetch_lookup:
        connection = get_secret_store().connection(event.tenant, event.source)
        found = get_crm(connection.type).lookup(connection, event.object, event.record)
        return found, "fetched from the CRM (read only)"
    return _stand_ins(rules), (
        "not run: values a CRM lookup would give appear as {company.name}-style stand-ins "
        "(give a lookup, or fetch it)"
    )


def _stand_ins(rules: list[Rule]) -> dict[str, Any]:
    """{company: {name: "{company.name}"}, ...}: every lookup value the rules' placeholders read."""
    paths = {"company.name"}  # the customer's name on every billing document
    for rule in rules:
        for block in rule.blocks:
            for action in block.actions:
                paths |= placeholders(action.options) | placeholders(action.value)
    stand_ins: dict[str, Any] = {}
    for path in sorted(paths, key=lambda p: -p.count(".")):  # deepest first: a parent stays a mapping
        parts = path.split(".")
        if parts[0] not in LOOKUP_ROOTS or len(parts) < 2:
            continue
        node = stand_ins
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node.setdefault(parts[-1], "{" + path + "}")
    return stand_ins
