"""Which rules an event matches; one named Step Functions execution per match.

Most CRM updates match nothing and end here, costing one Lambda call. A match starts an execution named
after (tenant, rule, record, transition): Step Functions itself refuses a second one with that name, so a
change delivered many times is acted on once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from billflow.aws import client
from billflow.logic.observe import mark_fired, observe_changes
from billflow.logic.workflow import LogKeys, RunState
from billflow.models.events import CrmEvent
from billflow.models.rules import Rule
from billflow.observability import logger
from billflow.rules.engine import RuleVerdict, evaluate_rule
from billflow.settings import get_settings
from billflow.storage import keys
from billflow.storage.records import RecordStateStore
from billflow.storage.rules import RuleStore


@dataclass
class FilterOutcome:
    rules_considered: int = 0
    started: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    verdicts: list[RuleVerdict] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "rules_considered": self.rules_considered,
            "started": self.started,
            "duplicates": self.duplicates,
            "not_matched": {v.rule.id: v.reason for v in self.verdicts if not v.matched},
        }


def match_rules(
    event: CrmEvent, rule_store: RuleStore, record_store: RecordStateStore
) -> tuple[list[Rule], list[RuleVerdict]]:
    rules = [r for r in rule_store.rules_for(event.tenant, event.source, event.object) if r.active]
    if not rules:
        return [], []
    watched = set().union(*(r.watched_paths() for r in rules))
    changes = observe_changes(record_store, event, watched)
    verdicts = [evaluate_rule(rule, event, changes) for rule in rules]
    return rules, verdicts


def route_event(event: CrmEvent, rule_store: RuleStore, record_store: RecordStateStore) -> FilterOutcome:
    rules, verdicts = match_rules(event, rule_store, record_store)
    outcome = FilterOutcome(rules_considered=len(rules), verdicts=verdicts)
    matched = [v for v in verdicts if v.matched]
    if not matched:
        return outcome
    tenant_settings = rule_store.tenant_settings(event.tenant)
    for verdict in matched:
        rule = verdict.rule
        if rule.trigger.when == "first_edit" and not mark_fired(record_store, event, rule.id):
            outcome.verdicts.append(RuleVerdict(rule, False, "first-edit rule already fired for this record"))
            continue
        state = build_run_state(event, verdict, tenant_settings.daily_limits)
        name = state.execution_name
        if start_execution(name, state):
            outcome.started.append(name)
        else:
            outcome.duplicates.append(name)
    return outcome


def build_run_state(event: CrmEvent, verdict: RuleVerdict, daily_limits: dict[str, int]) -> RunState:
    settings = get_settings()
    rule = verdict.rule
    record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
    execution_key = keys.execution_key(event.tenant, rule.id, record_key, verdict.transition)
    actions = [a for b in verdict.matched_blocks for a in rule.blocks[b.index].actions]
    return RunState(
        tenant=event.tenant,
        execution_key=execution_key,
        execution_name=keys.execution_name(rule.id, execution_key),
        transition=verdict.transition,
        rule=rule,
        actions=actions,
        event=event,
        daily_limits=daily_limits,
        default_daily_limit=settings.default_daily_limit,
        log=LogKeys(
            rule_key=keys.log_rule_key(event.tenant, rule.id),
            record_key=record_key,
            expires_at=str(int(time.time()) + settings.log_retention_days * 86400),
        ),
    )


def start_execution(name: str, state: RunState) -> bool:
    """True if started; False if Step Functions already has an execution of that name (a duplicate)."""
    sfn = client("stepfunctions")
    try:
        sfn.start_execution(
            stateMachineArn=get_settings().state_machine_arn,
            name=name,
            input=json.dumps(state.model_dump(mode="json")),
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        logger.info("duplicate transition refused by Step Functions", extra={"execution": name})
        return False
    logger.info("execution started", extra={"execution": name, "rule": state.rule.id})
    return True
