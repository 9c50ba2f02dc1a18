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
from typing import Any

from billflow.logic.observe import log_undecided, mark_fired, observe_record
from billflow.logic.schedule import index_record, plan_timed
from billflow.models.events import GENERIC_SOURCES, CrmEvent
from billflow.models.rules import Rule, UsageAlert
from billflow.models.run import LogKeys, RunState, utc_text
from billflow.rules.engine import Clock, RuleVerdict, evaluate_rule, transition_held
from billflow.rules.index import RuleIndex, indexed_rules
from billflow.settings import get_settings
from billflow.storage import keys
from billflow.storage.due_index import DueIndex, get_due_index
from billflow.storage.execution_log import get_execution_log
from billflow.storage.executions import Executions, get_executions
from billflow.storage.records import RecordStateStore
from billflow.storage.rules import RuleStore


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
    if index is None:
        if rules is None:
            rules = rule_store.rules_for(event.tenant, event.source, event.object)
        index = RuleIndex([r for r in rules if r.active])
    if not index.event_rules:
        return [], []
    observed = observe_record(record_store, event, index.watched)
    changes = observed.changes
    if observed.undecided:  # never silent: the execution log says which deliveries could not be decided
        log_undecided(get_execution_log(), event, index.event_rules, observed.undecided)
    rules = index.candidates(changes)  # the others need a change this event did not make
    # A source without a CRM has nothing to look up: its company/contact criteria read the record.
    lookup: dict[str, Any] | None = {} if event.source in GENERIC_SOURCES else None
    verdicts = [evaluate_rule(rule, event, changes, clock=Clock.for_rule(rule, lookup=lookup)) for rule in rules]
    return rules, verdicts


def route_event(
    event: CrmEvent, rule_store: RuleStore, record_store: RecordStateStore,
    executions: Executions | None = None, due_index: DueIndex | None = None,
) -> FilterOutcome:
    """Match the event; start one named execution per matched rule; index its date rules' due times."""
    index = indexed_rules(rule_store, event.tenant, event.source, event.object)
    stored = index.rules
    _, verdicts = match_rules(event, rule_store, record_store, index=index)
    outcome = FilterOutcome(rules_considered=len(stored), verdicts=verdicts)
    dated = [r for r in stored if r.is_date_triggered]
    if dated:
        outcome.indexed = index_record(event, dated, due_index or get_due_index())
    matched = [v for v in verdicts if v.matched]
    if not matched:
        return outcome
    tenant_settings = rule_store.tenant_settings(event.tenant)
    executions = executions or get_executions()
    for verdict in matched:
        rule = verdict.rule
        if rule.trigger.when == "first_edit" and not mark_fired(record_store, event, rule.id):
            outcome.verdicts.append(RuleVerdict(rule, False, "first-edit rule already fired for this record"))
            continue
        state = build_run_state(event, verdict, tenant_settings.daily_limits, tenant_settings.usage_alert,
                                tenant_settings.default_daily_limit)
        name = state.execution_name
        if executions.start_run(state):
            outcome.started.append(name)
        else:
            outcome.duplicates.append(name)
    return outcome


def build_run_state(
    event: CrmEvent, verdict: RuleVerdict, daily_limits: dict[str, int], usage_alert: UsageAlert | None = None,
    default_daily_limit: int | None = None,
) -> RunState:
    """The run of a matched rule: the blocks that run (or may, pending Lookup), placed in time."""
    settings = get_settings()
    rule = verdict.rule
    record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
    execution_key = keys.execution_key(event.tenant, rule.id, record_key, verdict.transition)
    selected = verdict.selected or [b.index for b in verdict.matched_blocks]
    actions = [a for index in selected for a in rule.blocks[index].actions]
    trigger_at = event.received_at
    return RunState(
        tenant=event.tenant,
        execution_key=execution_key,
        execution_name=keys.execution_name(rule.id, execution_key),
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
        ),
        blocks=selected,
        timed=plan_timed(rule, selected, event.record, trigger_at),
        recheck=verdict.needs_lookup,
        held=transition_held(verdict),
        trigger_at=utc_text(trigger_at),
        usage_alert=usage_alert,
    )
