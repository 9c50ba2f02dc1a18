"""The admin API's documents: what its routes take and answer (functions/admin/app.py). Powertools validates
requests with them and generates the OpenAPI document (docs/admin-openapi.json) from them; each is built on
first use (defer_build), so a cold start pays only for the routes it serves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from billflow.models.rules import Rule
from billflow.models.schedules import Schedule

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


class ErrorBody(BaseModel):
    model_config = ConfigDict(defer_build=True)

    error: str = Field(description="InvalidRequest, NotFound, Conflict, ...")
    message: str
    details: dict[str, Any] | None = Field(
        default=None, description="e.g. problems: every invalid rule field as 'rule ID: FIELD: message'"
    )


class RulesAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    rules: list[RuleDocument]


class RuleAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    rule: RuleDocument


class DeletedAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    deleted: str


class RulesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rules: list[RuleDocument] = Field(description="Every rule document of the tenant, as kept in git")
    prune: bool = Field(default=False, description="Delete stored rules the documents no longer have")


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rules: list[dict[str, Any]] = Field(description="Rule documents to check (see RuleDocument)")


class ValidateAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    valid: bool
    rules: list[str] = Field(description="Ids of the valid rules")
    problems: list[str] = Field(description="'rule ID: FIELD: message', one per problem")


class CloneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    new_id: str
    name: str | None = Field(default=None, description="Name of the copy (default: the original's + ' (copy)')")
    active: bool = Field(default=False, description="Clones start inactive so a copy never doubles a run")


class ReorderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    source: str
    object: str
    rule_ids: list[str] = Field(
        min_length=1,
        description="These rules first, in this order; the object's other rules follow in their old order",
    )


class PlanDocument(BaseModel):
    model_config = ConfigDict(defer_build=True)

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


class PlanAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    plan: PlanDocument


class ApplyAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    applied: PlanDocument


class ExecutionsAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    executions: list[dict[str, Any]] = Field(
        description="Execution log items, newest first: at, execution, rule_id, record_key, step, status, "
                    "reason, external_id, action_type, transition"
    )


# ------------------------------------------------------------------------------------------- dry runs
class DryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

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


class ChangeReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

    field: str
    before: Any = None
    after: Any = None


class CriterionReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

    number: int
    field: str
    comparator: str
    value: Any = None
    matched: bool
    pending: bool = Field(default=False, description="Decided by the run after Lookup (company, contact)")
    actual: Any = None
    reason: str


class BlockReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

    index: int
    pattern: str = Field(description="The block's pattern; all criteria joined by AND when it has none")
    matched: bool
    pending: bool = Field(default=False, description="May match once the lookup is known")
    criteria: list[CriterionReport]


class ActionReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

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


class RuleReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

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


class EventReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

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


class DryRunReport(BaseModel):
    model_config = ConfigDict(defer_build=True)

    dry_run: bool = True
    sent: int = Field(default=0, description="Requests sent: always 0")
    events: list[EventReport]


# ------------------------------------------------------------------------------------------- replays
class ReplayAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    execution: str = Field(description="Name of the new execution")
    replay_of: str = Field(description="The execution replayed")
    original_status: str = Field(description="FAILED (a failed or limited run), TIMED_OUT or ABORTED")
    original_error: str | None = Field(default=None, description="e.g. RunFailed, DailyLimitReached")
    execution_arn: str


# ------------------------------------------------------------------------------------------- errors
ERROR_ANSWERS = {400: "The request is not valid (each problem says rule, field and why)",
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


class SchedulesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    schedules: list[dict[str, Any]] = Field(description="Every schedule document of the tenant (at most 10)")
    prune: bool = Field(default=False, description="Delete stored schedules the documents no longer have")
    rule_ids: list[str] = Field(default_factory=list,
                                description="Rule ids the same change creates (besides the stored rules)")


class SchedulePlan(BaseModel):
    model_config = ConfigDict(defer_build=True)

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


class SchedulePlanAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    plan: SchedulePlan


class FiringTime(BaseModel):
    local: str = Field(description="In the schedule's time zone (ISO 8601 with offset)")
    utc: str


class ScheduleListing(BaseModel):
    model_config = ConfigDict(defer_build=True)

    schedule: ScheduleDocument
    describe: str
    fires_by: str = Field(description="Its Scheduler expression, or why it has none")
    next: list[FiringTime] = Field(description="The next five firings")


class SchedulesAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    schedules: list[ScheduleListing]


class ScheduleAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

    schedule: ScheduleDocument


class RunScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    firing: str | None = Field(default=None, description="The firing time (UTC ISO) to run; default: now, to "
                                                         "the minute. Running the same firing again starts "
                                                         "nothing new")


class FiringAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

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
class SweepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    rule_id: str = Field(description="The rule to sweep (event-triggered)")
    since: str = Field(description="Records changed from this time (ISO 8601, e.g. 2026-12-01T00:00:00Z)")
    until: str | None = Field(default=None, description="Up to this time (default: now); at most 31 days after since")
    dry_run: bool = Field(default=False, description="List the records the sweep would feed; start nothing")


class SweepAnswer(BaseModel):
    model_config = ConfigDict(defer_build=True)

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
