"""Time: when time-based actions are due, when date-triggered rules fire, and the scheduler that fires them.

Time-based actions (a block's `time_based`) are placed in time when a run starts: N minutes, hours or days
after the trigger, or relative to a date field of the record, optionally at a time of day in the rule's
time zone. The run then waits in a Step Functions Wait state (TimestampPath): no Lambda sleeps.

Date-triggered rules (`trigger: {type: date, field: closeDate, offset_days: 30, at: "09:00"}`) have no event
to ride on. Every event billflow receives for a record indexes, for each active date rule of its object,
the record's next due instant in the records table (one item per rule and record, found through the
`by-due` index by UTC hour). The scheduler (functions/scheduler, on an EventBridge schedule) reads the
items due since its previous run and starts one execution per (rule, record, due instant), named after
them, so a due date fires once however often the scheduler runs. The run fetches the record from the CRM
and checks the rule's criteria on it (and that the date still gives this instant) before acting.

Limitation: a record billflow never received an event for is unknown to it, and a due instant already
past when the record is indexed does not fire.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dt_time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from billflow.logic.limits import send_failure_digests
from billflow.models.events import GENERIC_SOURCES, PARTIAL_RECORD_SOURCES, CrmEvent
from billflow.models.rules import MAX_WAIT_DAYS, DateTrigger, Rule, TenantSettings, TimeBasedActions, is_lookup_field
from billflow.models.run import LogKeys, RunState, TimedGroup, utc_text
from billflow.rules import comparators
from billflow.rules.comparators import Moment, field_moment, instant_of
from billflow.rules.paths import MISSING, get_path
from billflow.settings import get_settings
from billflow.storage import keys
from billflow.storage.counters import Checkpoint, get_checkpoint
from billflow.storage.due_index import DueIndex, DueItem, get_due_index
from billflow.storage.executions import Executions, get_executions
from billflow.storage.rules import RuleStore, get_rule_store

if TYPE_CHECKING:
    from billflow.connectors.base import CrmConnector, RecordFilter, RecordQuery
    from billflow.storage.secrets import Connection

MAX_CATCH_UP = timedelta(days=31)  # a scheduler that was off longer catches up this far back at most
FIRST_WINDOW = timedelta(hours=1)
RESCHEDULE_TOLERANCE = timedelta(seconds=60)


# ------------------------------------------------------------------------------------------- instants
def at_time_of_day(instant: datetime, at: str, zone: tzinfo) -> datetime:
    """The same local day as `instant` in `zone`, at HH:MM there (a time DST skips moves forward)."""
    hour, minute = (int(part) for part in at.split(":"))
    local = instant.astimezone(zone).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return local.astimezone(UTC)


def group_due(group: TimeBasedActions, record: dict[str, Any], trigger_at: datetime,
              zone: tzinfo) -> tuple[datetime | None, str]:
    """When a time-based group is due (UTC), or None and why not (its date field is empty)."""
    if group.field:
        value = get_path(record, group.field)
        moment = field_moment(value, zone)
        if moment is None:
            shown = "empty" if value in (None, "", MISSING) else f"not a date ({value!r})"
            return None, f"{group.field} is {shown}"
        base = instant_of(moment, zone)
    else:
        base = trigger_at
    due = base + group.offset
    if group.at:
        due = at_time_of_day(due, group.at, zone)
    return due.astimezone(UTC), ""


def plan_timed(rule: Rule, blocks: list[int], record: dict[str, Any], trigger_at: datetime) -> list[TimedGroup]:
    """The time-based groups of the blocks that run, placed in time, in the order they come due.

    A group whose time is already past when the rule fires, or more than a year away (longer than an
    execution may live), or whose date field is empty, is kept with a reason: the run logs it as skipped.
    """
    zone = ZoneInfo(rule.timezone)
    found: list[tuple[datetime, int, int, TimedGroup]] = []
    for block in blocks:
        for index, group in enumerate(rule.blocks[block].time_based):
            if not group.actions:
                continue
            due, why = group_due(group, record, trigger_at, zone)
            if due is not None and due < trigger_at - RESCHEDULE_TOLERANCE:
                why = f"{utc_text(due)} had already passed when the rule fired"
            elif due is not None and due > trigger_at + timedelta(days=MAX_WAIT_DAYS):
                why = f"{utc_text(due)} is more than {MAX_WAIT_DAYS} days away (a run lives at most a year)"
            when = due if due is not None and not why else trigger_at
            found.append((when, block, index, TimedGroup(
                block=block, group=index, due=utc_text(when), label=group.describe(),
                actions=group.actions, recheck=group.recheck_criteria, field=group.field, skip=why,
            )))
    return [entry[3] for entry in sorted(found, key=lambda e: (e[0], e[1], e[2]))]


# ------------------------------------------------------------------------------------------- date triggers
def trigger_zone(rule: Rule) -> ZoneInfo:
    trigger = rule.trigger
    return ZoneInfo(trigger.timezone if isinstance(trigger, DateTrigger) and trigger.timezone else rule.timezone)


def _shifted_day(day: date, months: int) -> date:
    """`day` moved by whole months, clamped to the month's length (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.year * 12 + day.month - 1 + months
    year, month = divmod(month_index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def calendar_day(moment: Moment, zone: tzinfo) -> date:
    """The calendar date a date field names. A date-time at exactly midnight UTC is how CRMs store a
    date-only field (Twenty's closeDate): it is that UTC date, not the evening before in American time
    zones; any other date-time is its local date in the rule's time zone."""
    if moment.day is not None:
        return moment.day
    instant = instant_of(moment, zone).astimezone(UTC)
    if instant.time() == dt_time(0):
        return instant.date()
    return instant.astimezone(zone).date()


def date_field_value(value: Any) -> Any:
    """A date field's value as a date or ISO text: HubSpot's webhooks (and some CRMs' APIs) give dates and
    datetimes as epoch milliseconds ("1733356800000"); a date property's is its midnight UTC."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip().isdigit() and 11 <= len(value.strip()) <= 14:
        return datetime.fromtimestamp(int(value.strip()) / 1000, UTC).isoformat()
    return value


def occurrence_after(trigger: DateTrigger, value: Any, zone: tzinfo, after: datetime) -> datetime | None:
    """The first instant strictly after `after` at which the trigger fires for a field holding `value`.

    The field's local date, plus offset_days, at `at`: once, or on the same day of every month or year
    (clamped to shorter months: the 31st fires on the 30th in April).
    """
    moment = field_moment(date_field_value(value), zone)
    if moment is None:
        return None
    base_day = calendar_day(moment, zone)
    hour, minute = (int(part) for part in trigger.at.split(":"))
    offset = timedelta(days=trigger.offset_days)

    def instant(day: date) -> datetime:
        return datetime.combine(day + offset, dt_time(hour, minute), tzinfo=zone).astimezone(UTC)

    if trigger.repeat == "once":
        first = instant(base_day)
        return first if first > after else None
    step = 12 if trigger.repeat == "yearly" else 1
    # Start a step before the occurrence nearest `after`, then walk forward.
    target = (after.astimezone(zone) - offset).date()
    months = (target.year - base_day.year) * 12 + target.month - base_day.month
    first_n = max(0, months // step * step - step)
    for n in range(first_n, first_n + 4 * step, step):
        candidate = instant(_shifted_day(base_day, n))
        if candidate > after:
            return candidate
    return None  # pragma: no cover - four steps past `after` always find one


# ------------------------------------------------------------------------------------------- the due index
def index_record(event: CrmEvent, rules: list[Rule], index: DueIndex, now: datetime | None = None) -> int:
    """Remember when each active date rule of the event's object is next due for its record; the count.

    Every event rewrites the items (a rule created after the record was last seen still learns its date);
    a deleted record, or a date that is gone or past, removes them. An event whose record does not carry the
    field at all (HubSpot's deliveries carry only the property that changed) says nothing about the date:
    the item stays as it is.
    """
    now = now or datetime.now(UTC)
    record_key = keys.record_pk(event.tenant, event.source, event.object, event.record_id)
    written = 0
    for rule in rules:
        if not (rule.active and isinstance(rule.trigger, DateTrigger)):
            continue
        due = None
        if event.action != "deleted":
            value = get_path(event.record, rule.trigger.field)
            if value is MISSING and event.source in PARTIAL_RECORD_SOURCES:
                continue
            due = occurrence_after(rule.trigger, value, trigger_zone(rule), now)
        if due is None:
            index.remove(record_key, rule.id)
        else:
            index.put(event, rule, due)
            written += 1
    return written


# ------------------------------------------------------------------------------------------- the scheduler
@dataclass
class SchedulerRun:
    since: str
    until: str
    due: int = 0
    started: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    searched: dict[str, int] = field(default_factory=dict)  # rule key -> CRM records read for the window
    not_searched: list[str] = field(default_factory=list)  # rules whose CRM cannot be searched, and why

    def summary(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "due": self.due, "started": self.started,
                "duplicates": self.duplicates, "stale": self.stale, "digests": self.digests,
                "errors": self.errors, "searched": self.searched, "not_searched": self.not_searched}


def window(now: datetime, checkpoint: datetime | None) -> tuple[datetime, datetime]:
    since = checkpoint if checkpoint is not None else now - FIRST_WINDOW
    return max(since, now - MAX_CATCH_UP), now


def run_scheduler(
    now: datetime, *, digests: bool = True, rule_store: RuleStore | None = None, index: DueIndex | None = None,
    executions: Executions | None = None, checkpoint: Checkpoint | None = None, crm_search: bool = True,
) -> SchedulerRun:
    """Start the runs of date-triggered rules due since the previous run; then send failure digests."""
    checkpoint = checkpoint or get_checkpoint()
    since, until = window(now, checkpoint.read())
    run = SchedulerRun(since=utc_text(since), until=utc_text(until))
    index = index or get_due_index()
    rule_store = rule_store or get_rule_store()
    rules: dict[tuple[str, str, str], dict[str, Rule]] = {}
    tenants: dict[str, TenantSettings] = {}
    items = index.due_between(since, until)
    run.due = len(items)
    for item in items:
        scope = (item.tenant, item.source, item.object)
        if scope not in rules:
            rules[scope] = {r.id: r for r in rule_store.rules_for(*scope)}
        if item.tenant not in tenants:
            tenants[item.tenant] = rule_store.tenant_settings(item.tenant)
        try:
            fire(item, rules[scope].get(item.rule_id), tenants[item.tenant], index, (since, until), now, run,
                 executions)
        except Exception as exc:  # one bad item must not hold up the others; the window is redone
            run.errors.append(f"{item.pk}: {type(exc).__name__}: {exc}")
    if crm_search:
        search_date_rules(since, until, now, run, rule_store, executions)
    if digests:
        try:
            run.digests = send_failure_digests(now, rule_store)
        except Exception as exc:
            run.errors.append(f"failure digests: {type(exc).__name__}: {exc}")
    if not run.errors:
        checkpoint.advance(until)
    return run


def fire(item: DueItem, rule: Rule | None, settings: TenantSettings, index: DueIndex,
         window: tuple[datetime, datetime], now: datetime, run: SchedulerRun,
         executions: Executions | None = None) -> None:
    """Start the run of one due item (named after rule, record and instant), then move or drop the item."""
    since, until = window
    if rule is None or not rule.active or not isinstance(rule.trigger, DateTrigger) \
            or rule.trigger.field != item.field:
        run.stale.append(item.pk)
        index.advance(item, None)
        return
    zone = trigger_zone(rule)
    due = occurrence_after(rule.trigger, item.value, zone, item.due - timedelta(seconds=1))
    if due is None or not since < due <= until:  # the rule's offset or time changed since it was indexed
        run.stale.append(item.pk)
        index.advance(item, occurrence_after(rule.trigger, item.value, zone, until))
        return
    state = date_run_state(item, rule, due, settings, now)
    if (executions or get_executions()).start_run(state):
        run.started.append(state.execution_name)
    else:
        run.duplicates.append(state.execution_name)
    index.advance(item, occurrence_after(rule.trigger, item.value, zone, due))


def date_run_state(item: DueItem, rule: Rule, due: datetime, tenant: TenantSettings, now: datetime) -> RunState:
    """The run of a date-triggered rule: Lookup fetches the record, the criteria are decided on it."""
    assert isinstance(rule.trigger, DateTrigger)
    settings = get_settings()
    due_text = utc_text(due)
    record = dict(item.record) or {"id": item.record_id, item.field: item.value}
    event = CrmEvent(
        event_id=f"date:{rule.id}:{due_text}", tenant=item.tenant, source=item.source, object=item.object,
        action="updated", record_id=item.record_id, record=record, changed_fields=None,
        occurred_at=due, received_at=now,
    )
    record_key = keys.record_pk(item.tenant, item.source, item.object, item.record_id)
    transition = f"date:{rule.trigger.field}@{due_text}"
    execution_key = keys.execution_key(item.tenant, rule.id, record_key, transition)
    return RunState(
        tenant=item.tenant, execution_key=execution_key,
        execution_name=keys.execution_name(rule.id, execution_key), transition=transition,
        rule=rule, actions=[], event=event,
        daily_limits=tenant.daily_limits,
        default_daily_limit=settings.default_daily_limit if tenant.default_daily_limit is None
        else tenant.default_daily_limit,
        usage_alert=tenant.usage_alert,
        log=LogKeys(rule_key=keys.log_rule_key(item.tenant, rule.id), record_key=record_key,
                    expires_at=str(int(time.time()) + settings.log_retention_days * 86400)),
        blocks=list(range(len(rule.blocks))), recheck=True,
        refresh_record=item.source not in GENERIC_SOURCES, trigger_at=due_text,
    )


# ------------------------------------------------------------------------------------------- CRM search
MAX_SEARCH_RECORDS = 5_000  # records one search reads; a span holding more is searched again in halves
SEARCH_PAGE_SIZE = 200  # the most Twenty and HubSpot give a page (Pipedrive: 500): fewer calls per window
SEARCH_MARGIN = timedelta(days=2)  # the field's values searched reach this far past the window's dates


def search_window(rule: Rule, since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The field values whose due instants may fall in (since, until]: the window's local dates shifted back
    by the offset, widened by a margin (time zones and date-only fields), as UTC instants [from, to)."""
    assert isinstance(rule.trigger, DateTrigger)
    zone = trigger_zone(rule)
    offset = timedelta(days=rule.trigger.offset_days)
    first = since.astimezone(zone).date() - offset
    last = until.astimezone(zone).date() - offset
    start = datetime.combine(first, dt_time(0), tzinfo=UTC) - SEARCH_MARGIN
    end = datetime.combine(last, dt_time(0), tzinfo=UTC) + SEARCH_MARGIN
    return start, end


_EQUALITY = frozenset({"equals", "changed_to"})  # comparators a CRM filter "eq" says the same as


def equality_filters(rule: Rule) -> tuple[RecordFilter, ...]:
    """The criteria every record the rule can match meets, as CRM filters: equalities of record fields in a
    rule of one block whose criteria all hold together (the default pattern). Anything else is evaluated on
    each record the CRM returns, so a filter that cannot be translated costs reads, never a missed record."""
    from billflow.connectors.base import RecordFilter  # deferred: only CRM searches need it

    if len(rule.blocks) != 1 or rule.blocks[0].pattern:
        return ()
    filters = []
    for criterion in rule.blocks[0].criteria:
        name = comparators.canonical(criterion.comparator)
        if name in _EQUALITY and not is_lookup_field(criterion.field) and isinstance(criterion.value, str | int) \
                and not isinstance(criterion.value, bool):
            filters.append(RecordFilter(criterion.field, "eq", criterion.value))
    return tuple(filters)


def search_date_rules(since: datetime, until: datetime, now: datetime, run: SchedulerRun, rule_store: RuleStore,
                      executions: Executions | None = None) -> None:
    """Date rules over every record: ask each rule's CRM for the records whose date field falls in the
    window (and that meet the rule's equalities, where the CRM can filter on them), and start the run of
    each one due in (since, until]. Runs are named as the due index names them (rule, record, due instant):
    a record found both ways, or in two overlapping windows, runs once. A CRM that cannot filter on the date
    field (the generic source's configured search may not) answers more records: their dates are decided here.

    A span holding more records than one search reads (MAX_SEARCH_RECORDS) is searched again in halves, on day
    boundaries, until each half holds fewer: a busy CRM is read whole, and the window moves on. Only one day
    holding more, or a CRM that does not filter on the date, keeps the window open (an error).

    Rules that repeat monthly or yearly match records of any year: they stay with the due index."""
    from billflow.connectors import get_crm  # deferred: only this pass reaches a CRM
    from billflow.connectors.base import RecordFilter, RecordQuery
    from billflow.errors import ConfigurationError
    from billflow.storage.secrets import get_secret_store

    tenants: dict[str, TenantSettings] = {}
    for rule in rule_store.date_triggered_rules():
        trigger = rule.trigger
        assert isinstance(trigger, DateTrigger)
        key = f"{rule.tenant}/{rule.id}"
        if trigger.repeat != "once" or rule.source in GENERIC_SOURCES:
            continue
        try:
            connection = get_secret_store().connection(rule.tenant, rule.source)
            crm = get_crm(connection.type)
        except ConfigurationError as exc:
            run.not_searched.append(f"{key}: {exc}")
            continue
        zone = trigger_zone(rule)
        if rule.tenant not in tenants:
            tenants[rule.tenant] = rule_store.tenant_settings(rule.tenant)
        read = 0
        spans = [search_window(rule, since, until)]
        query = RecordQuery(object_name=rule.object, filters=equality_filters(rule), page_size=SEARCH_PAGE_SIZE,
                            fields=tuple(sorted(rule.record_fields())))
        try:
            while spans:
                low, high = spans.pop()
                bounds = (RecordFilter(trigger.field, "gte", low), RecordFilter(trigger.field, "lt", high))
                spanned = replace(query, filters=(*bounds, *query.filters))
                records = list(_search(crm, connection, spanned, len(bounds)))
                read += len(records)
                if len(records) < MAX_SEARCH_RECORDS:
                    _start_due(records, rule, since, until, now, zone, tenants[rule.tenant], run, executions)
                    continue
                # More than one search reads: nothing is started from this pass; every record is read again
                # in its half (starting them here as well would ask Step Functions about each one twice).
                halves = split_days(low, high)
                if halves is not None and kept_to(records, trigger.field, low, high):
                    spans.extend(reversed(halves))  # the earlier half first
                    continue
                why = (f"with {trigger.field} on one day ({low:%Y-%m-%d})" if halves is None else
                       f"in one window, and the CRM answers records outside the dates asked (it does not filter "
                       f"on {trigger.field})")
                run.errors.append(f"{key}: more than {MAX_SEARCH_RECORDS} records {why}; the window stays open")
        except ConfigurationError as exc:  # the CRM cannot search: said once per run, the window moves on
            run.not_searched.append(f"{key}: {exc}")
        except Exception as exc:  # transient (rate limit, network): the window stays open and is redone
            run.errors.append(f"{key}: CRM search: {type(exc).__name__}: {exc}")
        run.searched[key] = read


Span = tuple[datetime, datetime]


def split_days(low: datetime, high: datetime) -> tuple[Span, Span] | None:
    """A search span of whole days, halved on a day boundary (date-only fields compare by day); None for a
    span of one day, which cannot be split."""
    days = (high - low).days
    if days < 2:
        return None
    middle = low + timedelta(days=days // 2)
    return (low, middle), (middle, high)


def kept_to(records: list[dict[str, Any]], path: str, low: datetime, high: datetime) -> bool:
    """Whether every record's date falls on a UTC day of [low, high): the CRM filtered on it, so a narrower
    search answers fewer records."""
    for record in records:
        moment = field_moment(date_field_value(get_path(record, path)), UTC)
        if moment is None or not low.date() <= calendar_day(moment, UTC) < high.date():
            return False
    return True


def _start_due(records: list[dict[str, Any]], rule: Rule, since: datetime, until: datetime, now: datetime,
               zone: tzinfo, tenant: TenantSettings, run: SchedulerRun, executions: Executions | None) -> None:
    """Start the run of each record the rule's date makes due in (since, until]."""
    assert isinstance(rule.trigger, DateTrigger)
    trigger = rule.trigger
    runs = executions or get_executions()
    for record in records:
        value = get_path(record, trigger.field)
        due = occurrence_after(trigger, value, zone, since)
        if due is None or due > until or record.get("id") in (None, ""):
            continue
        item = DueItem(pk="", tenant=rule.tenant, rule_id=rule.id, source=rule.source, object=rule.object,
                       record_id=str(record["id"]), field=trigger.field, value=value, due=due,
                       record=record)
        state = date_run_state(item, rule, due, tenant, now)
        name = state.execution_name
        # Found by the due index too, or in an earlier overlapping window: Step Functions answers a
        # repeated StartExecution of a running execution with the same input as a success, so ask (unless
        # this container already saw Step Functions hold the name).
        if name in run.started or runs.taken(name) or runs.describe(name) is not None:
            run.duplicates.append(name)
        elif runs.start_run(state):
            run.started.append(name)
        else:
            run.duplicates.append(name)


def _search(crm: CrmConnector, connection: Connection, query: RecordQuery, bounds: int) -> Iterator[dict[str, Any]]:
    """The query's records; when the CRM cannot express one of its equalities (a quote in a Twenty value:
    refused before any call), the same search with the date bounds only: the run decides the criteria."""
    from billflow.connectors.base import iter_records
    from billflow.errors import ConfigurationError

    given = 0
    try:
        for record in iter_records(crm, connection, query, MAX_SEARCH_RECORDS):
            given += 1
            yield record
        return
    except ConfigurationError:
        if given or len(query.filters) == bounds:
            raise
    yield from iter_records(crm, connection, replace(query, filters=query.filters[:bounds]), MAX_SEARCH_RECORDS)
