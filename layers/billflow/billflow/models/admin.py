"""The admin API's documents: what its routes take and answer (functions/admin/app.py). Powertools validates
requests with them and generates the OpenAPI document (docs/admin-openapi.json) from them; each is built on
first use (defer_build), so a cold start pays only for the routes it serves."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from billflow.models.rules import Rule, TimeOfDay, TimeZoneName
from billflow.models.schedules import Schedule

ACTION_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def check_emails(addresses: list[str]) -> list[str]:
    for address in addresses:
        if not EMAIL.match(address):
            raise ValueError(f"{address!r} is not an email address")
    return addresses


class AdminAnswer(BaseModel):
    """What a route answers; built on first use (defer_build)."""

    model_config = ConfigDict(defer_build=True)


class AdminRequest(BaseModel):
    """What a route takes: unknown fields are refused, so a typo is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


API_TITLE = "billflow admin API"
API_VERSION = "1.0.0"
API_DESCRIPTION = (
    "Rules as code, the rule lifecycle, dry runs, the execution log and replays. In AWS every route is "
    "IAM-authorised (sign requests with SigV4 for execute-api); the local runtime serves it unsigned on "
    "127.0.0.1."
)


# ------------------------------------------------------------------------------------------- rules
class RuleDocument(Rule):
    """A rule as written in YAML: every Rule field but the tenant, which the URL gives. The one-block
    shorthand (criteria, pattern and actions at the top) is accepted too and stored as blocks."""

    model_config = ConfigDict(defer_build=True)

    tenant: SkipJsonSchema[str] = Field(default="", exclude=True)


class ErrorBody(AdminAnswer):
    error: str = Field(description="InvalidRequest, NotFound, Conflict, ...")
    message: str
    details: dict[str, Any] | None = Field(
        default=None, description="e.g. problems: every invalid rule field as 'rule ID: FIELD: message'"
    )


class RulesAnswer(AdminAnswer):
    rules: list[RuleDocument]


class RuleAnswer(AdminAnswer):
    rule: RuleDocument


class DeletedAnswer(AdminAnswer):
    deleted: str


class RulesRequest(AdminRequest):
    rules: list[RuleDocument] = Field(description="Every rule document of the tenant, as kept in git")
    prune: bool = Field(default=False, description="Delete stored rules the documents no longer have")


class ValidateRequest(AdminRequest):
    rules: list[dict[str, Any]] = Field(description="Rule documents to check (see RuleDocument)")


class ValidateAnswer(AdminAnswer):
    valid: bool
    rules: list[str] = Field(description="Ids of the valid rules")
    problems: list[str] = Field(description="'rule ID: FIELD: message', one per problem")


class CloneRequest(AdminRequest):
    new_id: str
    name: str | None = Field(default=None, description="Name of the copy (default: the original's + ' (copy)')")
    active: bool = Field(default=False, description="Clones start inactive so a copy never doubles a run")


class ReorderRequest(AdminRequest):
    source: str
    object: str
    rule_ids: list[str] = Field(
        min_length=1,
        description="These rules first, in this order; the object's other rules follow in their old order",
    )


class PlanDocument(AdminAnswer):
    create: list[str] = Field(default_factory=list, description="In the documents, not stored")
    change: list[str] = Field(default_factory=list, description="Stored, and the document differs")
    deactivate: list[str] = Field(default_factory=list, description="Stored active, the document is inactive")
    delete: list[str] = Field(default_factory=list, description="Stored, not in the documents (with prune)")
    unchanged: list[str] = Field(default_factory=list)
    untracked: list[str] = Field(
        default_factory=list, description="Stored, not in the documents, kept (prune would delete them)"
    )
    fields: dict[str, list[str]] = Field(
        default_factory=dict, description="For each changed or deactivated rule: its fields that differ"
    )

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.change) + len(self.deactivate) + len(self.delete)


class PlanAnswer(AdminAnswer):
    plan: PlanDocument


class ApplyAnswer(AdminAnswer):
    applied: PlanDocument


class ExecutionsAnswer(AdminAnswer):
    executions: list[dict[str, Any]] = Field(
        description="Execution log items, newest first: at, execution, rule_id, record_key, step, status, "
                    "reason, external_id, action_type, transition"
    )


# ------------------------------------------------------------------------------------------- dry runs
class DryRunRequest(AdminRequest):
    event: dict[str, Any] = Field(
        description="The sample event: a CRM webhook body as the CRM posts it (e.g. events/twenty/*.json; "
                    "no signature needed) or a normalised CrmEvent document"
    )
    source: str | None = Field(
        default=None, description="Source adapter reading a webhook body (default: the one that accepts it)"
    )
    rule_id: str | None = Field(default=None, description="Only this stored rule (default: all of the object)")
    rules: list[RuleDocument] | None = Field(
        default=None, description="Try these rule documents instead of the stored rules (nothing is stored)"
    )
    previous: dict[str, Any] | None = Field(
        default=None,
        description="The record before the change; without it, the fields the event says changed "
                    "(Twenty's updatedFields) changed, from an unknown value",
    )
    lookup: dict[str, Any] | None = Field(
        default=None, description="What the CRM lookup would return (company, contact, line_items)"
    )
    fetch_lookup: bool = Field(
        default=False, description="Read the company and contact from the CRM (GET requests only)"
    )


class ChangeReport(AdminAnswer):
    field: str
    before: Any = None
    after: Any = None


class CriterionReport(AdminAnswer):
    number: int
    field: str
    comparator: str
    value: Any = None
    matched: bool
    pending: bool = Field(default=False, description="Decided by the run after Lookup (company, contact)")
    actual: Any = None
    reason: str


class BlockReport(AdminAnswer):
    index: int
    pattern: str = Field(description="The block's pattern; all criteria joined by AND when it has none")
    matched: bool
    pending: bool = Field(default=False, description="May match once the lookup is known")
    criteria: list[CriterionReport]


class ActionReport(AdminAnswer):
    index: int
    type: str
    connection: str | None = None
    when: str = Field(default="now", description="now, or when a time-based action would run")
    idempotency_key: str = Field(description="The key the real send would carry")
    request: Any = Field(default=None, description="What the action type rendered (what format stores)")
    requests: list[dict[str, Any]] = Field(
        default_factory=list, description="The HTTP requests the send would make, in order; none was made"
    )
    error: str | None = Field(default=None, description="Why this action could not be rendered or previewed")


class RuleReport(AdminAnswer):
    rule_id: str
    name: str
    active: bool
    order: int
    matched: bool = Field(description="The trigger fires and a block's criteria hold")
    runs: bool = Field(description="A real event would start a run: matched and the rule is active")
    reason: str
    transition: str = ""
    execution_name: str = ""
    blocks: list[BlockReport] = Field(default_factory=list)
    actions: list[ActionReport] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class EventReport(AdminAnswer):
    event_id: str
    tenant: str
    source: str
    object: str
    action: str
    record_id: str
    changed_fields: list[str] | None = None
    changes_from: str = Field(description="Where the changes come from: the previous record or the event")
    changes: list[ChangeReport]
    lookup: str = Field(description="given, fetched from the CRM, or stand-ins")
    rules: list[RuleReport]


class DryRunReport(AdminAnswer):
    dry_run: bool = True
    sent: int = Field(default=0, description="Requests sent: always 0")
    events: list[EventReport]


# ------------------------------------------------------------------------------------------- replays
class ReplayAnswer(AdminAnswer):
    execution: str = Field(description="Name of the new execution")
    replay_of: str = Field(description="The execution replayed")
    original_status: str = Field(description="FAILED (a failed or limited run), TIMED_OUT or ABORTED")
    original_error: str | None = Field(default=None, description="e.g. RunFailed, DailyLimitReached")
    execution_arn: str


# ------------------------------------------------------------------------------------------- tenant settings
class UsageAlertSettings(AdminRequest):
    threshold_percent: int = Field(default=80, ge=1, le=100, description="Alert when a count reaches this share")
    recipients: list[str] = Field(default_factory=list, max_length=10, description="Email addresses")

    @field_validator("recipients")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return check_emails(value)


class FailureDigestSettings(AdminRequest):
    frequency: Literal["daily", "weekly", "off"] = "daily"
    time: TimeOfDay = Field(default="08:00", description="HH:MM in timezone")
    timezone: TimeZoneName = "UTC"
    weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"] = Field(
        default="monday", description="Weekly digests: the day they are sent")
    recipients: list[str] = Field(default_factory=list, max_length=10, description="Email addresses")

    @field_validator("recipients")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        return check_emails(value)


class SettingsDocument(BaseModel):
    """A tenant's settings as the admin API, the CLI and settings.yaml write them."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    # At least 1, as the stack's DefaultDailyLimit: the state machine's reservation lets the day's first send
    # through before a counter exists, so a limit of 0 would not hold (deactivate the rule instead).
    daily_limits: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="action type -> sends per UTC day (at least 1)")
    default_daily_limit: int | None = Field(
        default=None, ge=1, description="Sends per day of action types daily_limits does not name; answers "
                                        "give the one in force (the stack's DefaultDailyLimit when unset)")
    usage_alert: UsageAlertSettings | None = None
    failure_digest: FailureDigestSettings | None = None
    default_timezone: TimeZoneName = Field(default="UTC", description="IANA zone of rules that name none")
    updated_at: str | None = Field(default=None, description="When the settings were last saved (answers only; "
                                                             "ignored in requests)")

    @field_validator("daily_limits")
    @classmethod
    def _action_types(cls, value: dict[str, int]) -> dict[str, int]:
        for name in value:
            if not ACTION_TYPE.match(name):
                raise ValueError(f"{name!r} is not an action type; write e.g. stripe.invoice or webhook")
        return value


# ------------------------------------------------------------------------------------------- connections
class ConnectionSummary(AdminAnswer):
    name: str
    type: str
    keys: list[str] = Field(description="The names of its settings; values are never returned")
    updated_at: str | None = Field(default=None, description="When its secret last changed (ISO 8601)")
    connected: bool | None = Field(default=None, description="OAuth types: a grant (refresh token) is stored")


class ConnectionsAnswer(AdminAnswer):
    connections: list[ConnectionSummary]


class ConnectionAnswer(AdminAnswer):
    connection: ConnectionSummary
    created: bool = Field(default=False, description="True when this request created the connection")


class ConnectionRequest(AdminRequest):
    type: str = Field(description="stripe, quickbooks, xero, zoho_books, hubspot, twenty, webhook")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="The connection's settings (secret values included). Merged into the stored ones when "
                    "the type is unchanged; a key set to null is removed")
    replace: bool = Field(default=False, description="Replace every stored setting instead of merging")


class AuthorizeAnswer(AdminAnswer):
    url: str = Field(description="The provider's consent page: open it in the browser")
    redirect_uri: str = Field(description="billflow's callback, registered with the provider's app")
    expires_at: str = Field(description="The consent must be given before this time (ISO 8601)")


class OAuthCallbackAnswer(AdminAnswer):
    connected: bool
    tenant: str
    connection: str
    keys: list[str] = Field(description="The connection's setting names after the grant was stored")
    notes: list[str] = Field(default_factory=list,
                             description="What else was set (Xero: the organisation), or what the admin must still set")


# ------------------------------------------------------------------------------------------- usage
class UsageToday(AdminAnswer):
    action_type: str
    count: int = Field(description="Places taken today (UTC): sent plus in flight")
    limit: int


class UsageDay(AdminAnswer):
    date: str = Field(description="YYYY-MM-DD (UTC)")
    sent: int
    failed: int
    limited: int


class UsageAnswer(AdminAnswer):
    today: list[UsageToday]
    days: list[UsageDay] = Field(description="Oldest first, one per day, today last")


# ------------------------------------------------------------------------------------------- run paths
class StateMachineAnswer(AdminAnswer):
    definition: dict[str, Any] = Field(description="The state machine's Amazon States Language document")


VisitStatus = Literal["passed", "waiting", "retried", "failed", "running"]


class StateVisit(AdminAnswer):
    name: str
    status: VisitStatus
    entered: str | None = None
    exited: str | None = None
    retries: int = Field(default=0, description="Task attempts after the first (Retry)")


class ExecutionPathAnswer(AdminAnswer):
    status: str = Field(description="RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED")
    states: list[StateVisit] = Field(description="Each state the run entered, in the order it first did")


# ------------------------------------------------------------------------------------------- errors
ERROR_ANSWERS = {400: "The request is not valid (each problem says rule, field and why)",
                 403: "The signed-in user's groups do not include this tenant",
                 404: "No such rule or run for this tenant", 409: "Conflicts with what is stored"}


def error_responses(*codes: int) -> dict[int, Any]:
    """The answers of a route: 200 (its return model), the errors it may give (ErrorBody), 422 (added by
    Powertools: a body that does not fit the request model)."""
    answers: dict[int, Any] = {200: {"description": "Successful Response"}}
    answers.update({code: {"description": ERROR_ANSWERS[code],
                           "content": {"application/json": {"model": ErrorBody}}} for code in codes})
    return answers


# ------------------------------------------------------------------------------------------- schedules (issue 12)
class ScheduleDocument(Schedule):
    """A recurring schedule as written in YAML (a `schedules:` list beside the rules); the URL gives the
    tenant."""

    model_config = ConfigDict(defer_build=True)

    tenant: SkipJsonSchema[str] = Field(default="", exclude=True)


class SchedulesRequest(AdminRequest):
    schedules: list[dict[str, Any]] = Field(description="Every schedule document of the tenant (at most 10)")
    prune: bool = Field(default=False, description="Delete stored schedules the documents no longer have")
    rule_ids: list[str] = Field(default_factory=list,
                                description="Rule ids the same change creates (besides the stored rules)")


class SchedulePlan(AdminAnswer):
    create: list[str] = Field(default_factory=list)
    change: list[str] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    untracked: list[str] = Field(default_factory=list)
    fields: dict[str, list[str]] = Field(default_factory=dict)
    how: dict[str, str] = Field(default_factory=dict, description="Schedule id -> its EventBridge Scheduler "
                                "expression: cron(...) in its time zone, or at(...) re-armed by billflow, and why")

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.change) + len(self.delete)


class SchedulePlanAnswer(AdminAnswer):
    plan: SchedulePlan


class FiringTime(BaseModel):
    local: str = Field(description="In the schedule's time zone (ISO 8601 with offset)")
    utc: str


class ScheduleListing(AdminAnswer):
    schedule: ScheduleDocument
    describe: str
    fires_by: str = Field(description="Its Scheduler expression, or why it has none")
    next: list[FiringTime] = Field(description="The next five firings")


class SchedulesAnswer(AdminAnswer):
    schedules: list[ScheduleListing]


class ScheduleAnswer(AdminAnswer):
    schedule: ScheduleDocument


class RunScheduleRequest(AdminRequest):
    firing: str | None = Field(default=None, description="The firing time (UTC ISO) to run; default: now, to "
                                                         "the minute. Running the same firing again starts "
                                                         "nothing new")


class FiringAnswer(AdminAnswer):
    tenant: str
    schedule: str
    firing: str
    started: list[str]
    duplicates: list[str]
    skipped: str
    records: int
    rearmed: str | None
    errors: list[str]


# ------------------------------------------------------------------------------------------- sweeps (issue 11)
class SweepRequest(AdminRequest):
    rule_id: str = Field(description="The rule to sweep (event-triggered)")
    since: str = Field(description="Records changed from this time (ISO 8601, e.g. 2026-12-01T00:00:00Z)")
    until: str | None = Field(default=None, description="Up to this time (default: now); at most 31 days after since")
    dry_run: bool = Field(default=False, description="List the records the sweep would feed; start nothing")


class SweepAnswer(AdminAnswer):
    tenant: str
    rule_id: str
    since: str
    until: str
    dry_run: bool
    examined: int = Field(description="Records the CRM returned for the window")
    matched: int = Field(description="Of those, records the rule's criteria hold for")
    documented: list[str] = Field(description="Matched records that already have their document (skipped)")
    fed: list[str] = Field(description="Records fed through the pipeline (dry run: that would be)")
    started: list[str] = Field(description="Executions started (marked trigger=sweep in the log)")
    duplicates: list[str] = Field(description="Executions refused: the webhook's run of that change exists")
    errors: list[str]
