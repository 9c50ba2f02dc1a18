"""The reconciliation sweep: ask the CRM for records a rule should have acted on, and catch missed webhooks.

CRMs lose webhooks (Twenty delivers at most once; any CRM's delivery can fail). Per tenant and rule with a
`sweep: {every, window}`, the sweep asks the CRM (CrmConnector.search_records, page by page within its rate
limits) for the rule's object changed in the window, its criteria translated to the CRM's filters where
they translate (an equality; the rest is evaluated here), then for each record:

1. evaluates the rule's criteria on it as the CRM holds it now (a transition "changed to X" as "is X";
   company/contact criteria are left to the run, which decides them after Lookup);
2. skips it when it already has a document: an id in a document action's write-back field, or a document
   of this rule for this record in the execution log;
3. feeds the rest through the filter's own path (logic/filter.route_event) as the CRM's view of the record
   (logic/observe.crm_event: its time is the record's last-modified time). The record state decides what
   changed exactly as for a webhook, so a record whose change was delivered makes no run, and a missed
   change makes the run the webhook would have made, under the same execution name when the source's
   change version is the record's last-modified time (the generic source's mapping, see
   docs/sources/pipedrive.md). Step Functions refuses the second execution of one name, and a document
   action still finds a document another transition made (logic/once_per.py), so a race between a late
   webhook and the sweep invoices once.

Runs started by the sweep are marked with trigger "sweep" in the execution log.

The scheduled entry point (run_due_sweeps) sweeps the rules whose `every` has passed since their last
sweep (a checkpoint per tenant and rule, claimed by one conditional write); `billflow sweep` runs one rule
over any window, with a dry run that lists what it would feed and starts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from billflow.connectors import get_crm
from billflow.connectors.base import CrmConnector, RecordQuery, iter_records
from billflow.errors import BillflowError, ConfigurationError, InvalidRequest, NotFound, TransientError
from billflow.logic.filter import route_event
from billflow.logic.observe import crm_event
from billflow.logic.once_per import LOG_ITEMS_SEARCHED, NOT_A_DOCUMENT
from billflow.logic.schedule import equality_filters
from billflow.models.rules import DOCUMENT_ACTIONS, Rule, is_lookup_field
from billflow.models.run import utc_text
from billflow.observability import logger
from billflow.rules import comparators
from billflow.rules.comparators import FieldChange
from billflow.rules.engine import Clock, evaluate_blocks
from billflow.rules.paths import MISSING, get_path
from billflow.storage import keys
from billflow.storage.counters import SweepCheckpoints, get_sweep_checkpoints
from billflow.storage.execution_log import ExecutionLog, get_execution_log
from billflow.storage.executions import Executions
from billflow.storage.records import RecordStateStore, get_record_store
from billflow.storage.rules import RuleStore, get_rule_store
from billflow.storage.secrets import Connection, get_secret_store

TRIGGER = "sweep"
MAX_RECORDS_PER_SWEEP = 10_000  # a bound per rule and run; a larger window is swept by splitting it
PAGE_SIZE = 100


@dataclass
class SweepReport:
    tenant: str
    rule_id: str
    since: str
    until: str
    dry_run: bool = False
    examined: int = 0
    matched: int = 0
    documented: list[str] = field(default_factory=list)  # records that already have their document
    fed: list[str] = field(default_factory=list)  # records fed through the pipeline (dry run: would be)
    started: list[str] = field(default_factory=list)  # executions started
    duplicates: list[str] = field(default_factory=list)  # executions refused: the webhook's run exists
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant, "rule_id": self.rule_id, "since": self.since, "until": self.until,
            "dry_run": self.dry_run, "examined": self.examined, "matched": self.matched,
            "documented": self.documented, "fed": self.fed, "started": self.started,
            "duplicates": self.duplicates, "errors": self.errors,
        }


def sweep_rule(
    tenant: str, rule: Rule, since: datetime, until: datetime, *, dry_run: bool = False,
    rule_store: RuleStore | None = None, record_store: RecordStateStore | None = None,
    executions: Executions | None = None, log: ExecutionLog | None = None,
    crm_for: Callable[[str], CrmConnector] = get_crm, now: Callable[[], datetime] | None = None,
) -> SweepReport:
    """Sweep one rule over [since, until): see the module's docstring."""
    if rule.is_date_triggered:
        raise InvalidRequest(f"rule {rule.id!r} is date-triggered: the scheduler reads its records when they fall due")
    if since >= until:
        raise InvalidRequest(f"the window is empty: since {utc_text(since)} is not before until {utc_text(until)}")
    report = SweepReport(tenant, rule.id, utc_text(since), utc_text(until), dry_run)
    connection = get_secret_store().connection(tenant, rule.source)
    crm = crm_for(connection.type)
    query = RecordQuery(object_name=rule.object, filters=equality_filters(rule), updated_after=since,
                        updated_before=until, page_size=PAGE_SIZE, fields=read_fields(rule))
    log = log or get_execution_log()
    rule_store = rule_store or get_rule_store()
    record_store = record_store or get_record_store()
    clock = now or (lambda: datetime.now(UTC))
    for record in iter_records(crm, connection, query, MAX_RECORDS_PER_SWEEP):
        report.examined += 1
        record_id = str(record.get("id") or "")
        if not record_id or not candidate(rule, record):
            continue
        report.matched += 1
        if has_document(rule, tenant, record_id, record, log):
            report.documented.append(record_id)
            continue
        report.fed.append(record_id)
        if dry_run:
            continue
        event = crm_event(tenant, rule.source, rule.object, record_id, record,
                          _modified(crm, connection, record) or clock(), clock())
        try:
            outcome = route_event(event, rule_store, record_store, executions, from_crm=True, trigger=TRIGGER)
        except TransientError:
            raise  # the whole sweep is retried; started runs are refused as duplicates by their names
        except BillflowError as exc:
            report.errors.append(f"{record_id}: {exc.message}")
            continue
        report.started.extend(outcome.started)
        report.duplicates.extend(outcome.duplicates)
    if report.examined >= MAX_RECORDS_PER_SWEEP:
        report.errors.append(f"stopped at {MAX_RECORDS_PER_SWEEP} records: sweep a shorter window")
    logger.info("sweep done", extra=report.summary())
    return report


def run_due_sweeps(
    now: datetime, *, rule_store: RuleStore | None = None, checkpoints: SweepCheckpoints | None = None,
    **sweep_options: Any,
) -> list[SweepReport]:
    """Every tenant's rules whose sweep is due now, each over its window ending now."""
    rule_store = rule_store or get_rule_store()
    checkpoints = checkpoints or get_sweep_checkpoints()
    reports: list[SweepReport] = []
    for tenant, rule_id in rule_store.swept_rules():
        rule = rule_store.get(tenant, rule_id)
        if rule is None or not rule.active or rule.sweep is None:
            continue
        if not checkpoints.claim(tenant, rule_id, now, rule.sweep.every_delta):
            continue
        try:
            reports.append(sweep_rule(tenant, rule, now - rule.sweep.window_delta, now, rule_store=rule_store,
                                      **sweep_options))
        except (ConfigurationError, NotFound, InvalidRequest) as exc:  # one tenant's setup never stops the others
            report = SweepReport(tenant, rule_id, utc_text(now - rule.sweep.window_delta), utc_text(now))
            report.errors.append(exc.message)
            reports.append(report)
    return reports


def sweep_by_hand(
    tenant: str, rule_id: str, since: datetime, until: datetime | None = None, dry_run: bool = False,
    **sweep_options: Any,
) -> SweepReport:
    """`billflow sweep` and POST /admin/tenants/{tenant}/sweeps: one rule, any window (max 31 days)."""
    rule_store = sweep_options.pop("rule_store", None) or get_rule_store()
    rule = rule_store.get(tenant, rule_id)
    if rule is None:
        raise NotFound(f"tenant {tenant!r} has no rule {rule_id!r}")
    until = until or datetime.now(UTC)
    if until - since > timedelta(days=31):
        raise InvalidRequest("sweep at most 31 days at once: give a later --since (or an --until)")
    return sweep_rule(tenant, rule, since, until, dry_run=dry_run, rule_store=rule_store, **sweep_options)


# --- what the sweep asks and decides -----------------------------------------------------------------------
def candidate(rule: Rule, record: dict[str, Any]) -> bool:
    """Whether the record, as the CRM holds it now, can be one the rule acts on: its criteria hold with every
    transition taken as having happened (changed to X: is X now). Lookup criteria are left to the run."""
    changes: dict[str, FieldChange] = {}
    for block in rule.blocks:
        for criterion in block.criteria:
            if comparators.is_transition(criterion.comparator) and not is_lookup_field(criterion.field):
                value = get_path(record, criterion.field)
                if value is not MISSING:
                    changes[criterion.field] = FieldChange(criterion.field, None, value, 0)
    _, selected = evaluate_blocks(rule, record, changes, Clock.for_rule(rule))
    return bool(selected)


def read_fields(rule: Rule) -> tuple[str, ...]:
    """What the sweep reads of each record: what the rule's criteria read, and its write-back fields."""
    written = {a.write_back_field for b in rule.blocks for a in b.every_action()
               if a.type in DOCUMENT_ACTIONS and a.write_back_field}
    return tuple(sorted(rule.record_fields() | written))


def has_document(rule: Rule, tenant: str, record_id: str, record: dict[str, Any], log: ExecutionLog) -> bool:
    """A document this rule made for the record: its id in a write-back field, or in the execution log."""
    actions = [a for b in rule.blocks for a in b.every_action()]
    documents = {a.type for a in actions if a.type in DOCUMENT_ACTIONS}
    if not documents:
        return False
    for action in actions:
        if action.type in DOCUMENT_ACTIONS and action.write_back_field:
            written = get_path(record, action.write_back_field)
            if written not in (MISSING, None, ""):
                return True
    record_key = keys.record_pk(tenant, rule.source, rule.object, record_id)
    return any(
        item.get("rule_id") == rule.id and item.get("action_type") in documents and item.get("external_id")
        and str(item.get("step", "")).startswith("action-") and item.get("status") not in NOT_A_DOCUMENT
        for item in log.by_record(record_key, LOG_ITEMS_SEARCHED)
    )


def _modified(crm: CrmConnector, connection: Connection, record: dict[str, Any]) -> datetime | None:
    return crm.modified_at(connection, record)
