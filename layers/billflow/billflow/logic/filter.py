"""Which rules an event matches; one named Step Functions execution per match.

Most CRM updates match nothing and end here, costing one Lambda call. A match starts an execution named
after (tenant, rule, record, transition): Step Functions itself refuses a second one with that name, so a
change delivered many times is acted on once.

Criteria on the looked-up company or contact cannot be decided here: a block that may match once they are
known starts its run with `recheck`, and the run decides right after Lookup (ending as "not_matched" if
the block does not hold). Date-triggered rules never match an event; the event indexes when the record's
date makes them due (logic/schedule.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from billflow.logic.observe import CrmReader, log_undecided, mark_fired, observe_record, read_from_crm
from billflow.models.events import GENERIC_SOURCES, PARTIAL_RECORD_SOURCES, CrmEvent
from billflow.models.rules import Rule, TenantSettings, UsageAlert
from billflow.recent import Recent
from billflow.rules.engine import Clock, RuleVerdict, evaluate_rule, transition_held
from billflow.rules.index import RuleIndex, indexed_rules
from billflow.settings import get_settings
from billflow.storage import keys
from billflow.storage.records import RecordStateStore
from billflow.storage.rules import RuleStore

# Most events match no rule: what only a match (the run, its schedule, starting it), a date-triggered rule
# (the due index) or an undecided delivery (the log) needs is imported there, not by every cold start.
if TYPE_CHECKING:
    from billflow.models.run import RunState
    from billflow.storage.due_index import DueIndex
    from billflow.storage.executions import Executions


@dataclass
class FilterOutcome:
    rules_considered: int = 0
    started: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    verdicts: list[RuleVerdict] = field(default_factory=list)
    indexed: int = 0  # date-triggered rules told when this record is due

    def summary(self) -> dict[str, Any]:
        return {
            "rules_considered": self.rules_considered,
            "started": self.started,
            "duplicates": self.duplicates,
            "not_matched": {v.rule.id: v.reason for v in self.verdicts if not v.matched},
            **({"indexed": self.indexed} if self.indexed else {}),
        }


def match_rules(
    event: CrmEvent, rule_store: RuleStore, record_store: RecordStateStore, rules: list[Rule] | None = None,
    index: RuleIndex | None = None,
) -> tuple[list[Rule], list[RuleVerdict]]:
    """The object's active event-triggered rules and their verdicts (rules: already read, if given; with
    their index, only the rules this event's changes may match are evaluated)."""
    _, rules, verdicts = match_event(event, rule_store, record_store, rules, index)
    return rules, verdicts


def match_event(
    event: CrmEvent, rule_store: RuleStore, record_store: RecordStateStore, rules: list[Rule] | None = None,
    index: RuleIndex | None = None, ask: CrmReader | None = read_from_crm, from_crm: bool = False,
) -> tuple[CrmEvent, list[Rule], list[RuleVerdict]]:
    """match_rules, and the event the verdicts are about: the delivery, or the CRM's view of the record when
    the delivery could not be decided and the CRM was asked (issue 11); from_crm: the event is the CRM's
    view already (the sweep)."""
    if index is None:
        if rules is None:
            rules = rule_store.rules_for(event.tenant, event.source, event.object)
        index = RuleIndex([r for r in rules if r.active])
    if not index.event_rules:
        return event, [], []
    observed = observe_record(record_store, event, index.watched, ask=ask, from_crm=from_crm)
    event = observed.event or event
    changes = observed.changes
    if observed.undecided:  # never silent: the execution log says which deliveries could not be decided
        from billflow.storage.execution_log import get_execution_log

        log_undecided(get_execution_log(), event, index.event_rules, observed.undecided)
    rules = index.candidates(changes)  # the others need a change this event did not make
    # A source without a CRM has nothing to look up: its company/contact criteria read the record.
    lookup: dict[str, Any] | None = {} if event.source in GENERIC_SOURCES else None
    # A HubSpot delivery carries only the changed property; the CRM's own view of the record is whole.
    partial = event.source in PARTIAL_RECORD_SOURCES and observed.event is None and not from_crm
    verdicts = [evaluate_rule(rule, event, changes, clock=Clock.for_rule(rule, lookup=lookup, partial=partial))
                for rule in rules]
    return event, rules, verdicts


class RoutedDeliveries:
    """The runs each delivery this container routed made, by the change it reports (its event id) and the
    rules index it met. A redelivery of that change meeting the same index (same rules, unchanged version
    token) decides the same transitions, so the same run names: when Step Functions holds them all
    (Executions.taken), it is a duplicate, known without reading the record's state again. A CRM retrying a
    delivery ten times costs one record-state read, not ten."""

    def __init__(self, kept: int = 10_000) -> None:
        self._runs: Recent[tuple[str, ...], tuple[RuleIndex, tuple[str, ...]]] = Recent(kept)

    @staticmethod
    def _key(table: str, event: CrmEvent) -> tuple[str, ...]:
        return table, event.tenant, event.source, event.object, event.record_id, event.event_id

    def runs(self, table: str, event: CrmEvent, index: RuleIndex) -> tuple[str, ...] | None:
        """The run names an earlier delivery of this change made under this very index, or None."""
        found = self._runs.get(self._key(table, event))
        return found[1] if found is not None and found[0] is index else None

    def remember(self, table: str, event: CrmEvent, index: RuleIndex, names: list[str]) -> None:
        self._runs.put(self._key(table, event), (index, tuple(names)))

    def clear(self) -> None:
        """Forget every delivery (the local runtime's new stack: a new container)."""
        self._runs.clear()


routed_deliveries = RoutedDeliveries()


def route_event(
    event: CrmEvent, rule_store: RuleStore, record_store: RecordStateStore,
    executions: Executions | None = None, due_index: DueIndex | None = None, from_crm: bool = False,
    trigger: str = "",
) -> FilterOutcome:
    """Match the event; start one named execution per matched rule; index its date rules' due times.

    from_crm and trigger: the sweep's records (read from the CRM; their runs are marked with the trigger)."""
    index = indexed_rules(rule_store, event.tenant, event.source, event.object)
    stored = index.rules
    delivered = event
    earlier = None if from_crm else routed_deliveries.runs(rule_store.table, delivered, index)
    if earlier:
        executions = _executions(executions)
        if all(executions.taken(name) for name in earlier):
            return FilterOutcome(rules_considered=len(stored), duplicates=list(earlier))
    event, _, verdicts = match_event(event, rule_store, record_store, index=index, from_crm=from_crm)
    outcome = FilterOutcome(rules_considered=len(stored), verdicts=verdicts)
    dated = [r for r in stored if r.is_date_triggered]
    if dated:
        from billflow.logic.schedule import index_record
        from billflow.storage.due_index import get_due_index

        outcome.indexed = index_record(event, dated, due_index or get_due_index())
    matched = [v for v in verdicts if v.matched]
    if not matched:
        return outcome
    executions = _executions(executions)
    tenant_settings: TenantSettings | None = None  # read once, and only for a run not known to have started
    for verdict in matched:
        rule = verdict.rule
        if rule.trigger.when == "first_edit" and not mark_fired(record_store, event, rule.id):
            outcome.verdicts.append(RuleVerdict(rule, False, "first-edit rule already fired for this record"))
            continue
        name = run_name(event, verdict)  # the state's execution_name, known before the state is built
        if executions.taken(name):  # a redelivery this container already started: Step Functions would refuse it
            outcome.duplicates.append(name)
            continue
        if tenant_settings is None:
            tenant_settings = rule_store.tenant_settings(event.tenant)
        state = build_run_state(event, verdict, tenant_settings.daily_limits, tenant_settings.usage_alert,
                                tenant_settings.default_daily_limit, trigger=trigger)
        if executions.start_run(state):
            outcome.started.append(name)
        else:
            outcome.duplicates.append(name)
    runs = outcome.started + outcome.duplicates
    if not from_crm and len(runs) == len(matched):  # every match has its run: a redelivery can only repeat them
        routed_deliveries.remember(rule_store.table, delivered, index, runs)
    return outcome


def _executions(given: Executions | None) -> Executions:
    """The executions given, else the container's (imported here: most events start none)."""
    from billflow.storage.executions import get_executions

    return given or get_executions()


def _run_keys(event: CrmEvent, verdict: RuleVerdict) -> tuple[str, str, str]:
    """The record's key, the transition's execution key (the run's identity) and its execution name."""
    record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
    execution_key = keys.execution_key(event.tenant, verdict.rule.id, record_key, verdict.transition)
    return record_key, execution_key, keys.execution_name(verdict.rule.id, execution_key)


def run_name(event: CrmEvent, verdict: RuleVerdict) -> str:
    """The execution name of the matched rule's run: the same for every delivery of one transition."""
    return _run_keys(event, verdict)[2]


def build_run_state(
    event: CrmEvent, verdict: RuleVerdict, daily_limits: dict[str, int], usage_alert: UsageAlert | None = None,
    default_daily_limit: int | None = None, trigger: str = "",
) -> RunState:
    """The run of a matched rule: the blocks that run (or may, pending Lookup), placed in time."""
    from billflow.logic.schedule import plan_timed
    from billflow.models.run import LogKeys, RunState, utc_text

    settings = get_settings()
    rule = verdict.rule
    record_key, execution_key, execution_name = _run_keys(event, verdict)
    selected = verdict.selected or [b.index for b in verdict.matched_blocks]
    actions = [a for index in selected for a in rule.blocks[index].actions]
    trigger_at = event.received_at
    return RunState(
        tenant=event.tenant,
        execution_key=execution_key,
        execution_name=execution_name,
        transition=verdict.transition,
        rule=rule,
        actions=actions,
        event=event,
        daily_limits=daily_limits,
        # the tenant's own default (tenant settings) before the stack's
        default_daily_limit=settings.default_daily_limit if default_daily_limit is None else default_daily_limit,
        log=LogKeys(
            rule_key=keys.log_rule_key(event.tenant, rule.id),
            record_key=record_key,
            expires_at=str(int(time.time()) + settings.log_retention_days * 86400),
            trigger=trigger,
        ),
        blocks=selected,
        timed=plan_timed(rule, selected, event.record, trigger_at),
        recheck=verdict.needs_lookup,
        held=transition_held(verdict),
        trigger_at=utc_text(trigger_at),
        usage_alert=usage_alert,
    )
