"""Admin API (IAM-authorised in AWS): rules as code, the rule lifecycle, dry runs, the execution log, replays.

The same operations as the `billflow` CLI, for tools: routes only. The documents are in
billflow/models/admin.py (Powertools validates them and generates the OpenAPI document, docs/admin-openapi.json,
kept in step by `make openapi`); what each route does is in billflow/logic (admin, dryrun, replay).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from billflow.connectors.base import ConnectionReport
from billflow.errors import BillflowError, ConfigurationError, Forbidden, InvalidRequest, NotFound
from billflow.jsonbody import parse_event_body
from billflow.logic import access, admin
from billflow.models.admin import (
    ApplyAnswer,
    AuthorizeAnswer,
    CloneRequest,
    ConnectionAnswer,
    ConnectionRequest,
    ConnectionsAnswer,
    DeletedAnswer,
    DryRunReport,
    DryRunRequest,
    ExecutionPathAnswer,
    ExecutionsAnswer,
    FiringAnswer,
    OAuthCallbackAnswer,
    PlanAnswer,
    ReorderRequest,
    ReplayAnswer,
    RuleAnswer,
    RuleDocument,
    RulesAnswer,
    RulesRequest,
    RunScheduleRequest,
    ScheduleAnswer,
    ScheduleDocument,
    SchedulePlanAnswer,
    SchedulesAnswer,
    SchedulesRequest,
    SettingsDocument,
    StateMachineAnswer,
    SweepAnswer,
    SweepRequest,
    UsageAnswer,
    ValidateAnswer,
    ValidateRequest,
    error_responses,
)
from billflow.observability import logger
from billflow.settings import requires_settings
from billflow.storage.execution_log import get_execution_log
from billflow.storage.rules import get_rule_store
from billflow.storage.tenant_settings import get_tenant_settings_store

app = APIGatewayHttpResolver(enable_validation=True)

RULES = ["rules"]
RUNS = ["runs"]
CONNECTIONS = ["connections"]
SETTINGS = ["settings"]


# ------------------------------------------------------------------------------------------- rules as code
@app.get("/admin/tenants/<tenant>/rules", tags=RULES, summary="Every stored rule (export)",
         responses=error_responses(400))
def list_rules(
    tenant: str,
    source: Annotated[str | None, Query(description="Only rules of this source")] = None,
    object_name: Annotated[str | None, Query(alias="object", description="Only rules of this object")] = None,
) -> RulesAnswer:
    return RulesAnswer(rules=admin.list_rules(get_rule_store(), tenant, source, object_name))


@app.post("/admin/tenants/<tenant>/rules/validate", tags=RULES, summary="Check rule documents; stores nothing",
          responses=error_responses())
def validate(tenant: str, body: Annotated[ValidateRequest, Body()]) -> ValidateAnswer:
    rules, problems = admin.check_documents(body.rules)
    return ValidateAnswer(valid=not problems, rules=[r.id for r in rules], problems=problems)


@app.post("/admin/tenants/<tenant>/rules/plan", tags=RULES, summary="What apply would change",
          responses=error_responses(400))
def plan(tenant: str, body: Annotated[RulesRequest, Body()]) -> PlanAnswer:
    rules = admin.parse_rules(tenant, list(body.rules), _default_timezone(tenant))
    return PlanAnswer(plan=admin.plan_rules(get_rule_store(), tenant, rules, body.prune))


@app.post("/admin/tenants/<tenant>/rules/apply", tags=RULES, summary="Store the rule documents",
          responses=error_responses(400))
def apply(tenant: str, body: Annotated[RulesRequest, Body()]) -> ApplyAnswer:
    rules = admin.parse_rules(tenant, list(body.rules), _default_timezone(tenant))
    applied = admin.apply_rules(get_rule_store(), tenant, rules, body.prune)
    logger.info("rules applied", extra={"tenant": tenant, **applied.model_dump()})
    return ApplyAnswer(applied=applied)


@app.post("/admin/tenants/<tenant>/rules/reorder", tags=RULES, summary="Set the order of an object's rules",
          responses=error_responses(400, 404))
def reorder(tenant: str, body: Annotated[ReorderRequest, Body()]) -> RulesAnswer:
    rules = admin.reorder_rules(get_rule_store(), tenant, body.source, body.object, body.rule_ids)
    logger.info("rules reordered", extra={"tenant": tenant, "rules": [r.id for r in rules]})
    return RulesAnswer(rules=[admin.as_document(r) for r in rules])


def _default_timezone(tenant: str) -> str | None:
    """The tenant's default zone for rule documents that name none (tenant settings)."""
    return get_tenant_settings_store().read(tenant).settings.default_timezone


# ------------------------------------------------------------------------------------------- one rule
@app.post("/admin/tenants/<tenant>/rules", tags=RULES, summary="Create a rule",
          responses=error_responses(400, 409))
def create(tenant: str, body: Annotated[RuleDocument, Body()]) -> RuleAnswer:
    rule = admin.create_rule(get_rule_store(), tenant, admin.parse_rule(tenant, body, _default_timezone(tenant)))
    logger.info("rule created", extra={"tenant": tenant, "rule": rule.id})
    return RuleAnswer(rule=admin.as_document(rule))


@app.get("/admin/tenants/<tenant>/rules/<rule_id>", tags=RULES, summary="One rule", responses=error_responses(404))
def get_one(tenant: str, rule_id: str) -> RuleAnswer:
    return RuleAnswer(rule=admin.as_document(admin.get_rule(get_rule_store(), tenant, rule_id)))


@app.put("/admin/tenants/<tenant>/rules/<rule_id>", tags=RULES, summary="Edit (replace) a rule",
         responses=error_responses(400, 404))
def edit(tenant: str, rule_id: str, body: Annotated[RuleDocument, Body()]) -> RuleAnswer:
    rule = admin.edit_rule(get_rule_store(), tenant, rule_id,
                           admin.parse_rule(tenant, body, _default_timezone(tenant)))
    logger.info("rule edited", extra={"tenant": tenant, "rule": rule.id, "version": rule.version})
    return RuleAnswer(rule=admin.as_document(rule))


@app.delete("/admin/tenants/<tenant>/rules/<rule_id>", tags=RULES, summary="Delete a rule",
            responses=error_responses(404))
def delete(tenant: str, rule_id: str) -> DeletedAnswer:
    admin.delete_rule(get_rule_store(), tenant, rule_id)
    logger.info("rule deleted", extra={"tenant": tenant, "rule": rule_id})
    return DeletedAnswer(deleted=rule_id)


@app.post("/admin/tenants/<tenant>/rules/<rule_id>/clone", tags=RULES,
          summary="Copy a rule under a new id (inactive unless asked)", responses=error_responses(400, 404, 409))
def clone(tenant: str, rule_id: str, body: Annotated[CloneRequest, Body()]) -> RuleAnswer:
    rule = admin.clone_rule(get_rule_store(), tenant, rule_id, body.new_id, body.name, body.active)
    logger.info("rule cloned", extra={"tenant": tenant, "rule": rule.id, "from": rule_id})
    return RuleAnswer(rule=admin.as_document(rule))


@app.post("/admin/tenants/<tenant>/rules/<rule_id>/activate", tags=RULES, summary="Mark a rule active",
          responses=error_responses(404))
def activate(tenant: str, rule_id: str) -> RuleAnswer:
    return RuleAnswer(rule=admin.as_document(admin.set_active(get_rule_store(), tenant, rule_id, True)))


@app.post("/admin/tenants/<tenant>/rules/<rule_id>/deactivate", tags=RULES,
          summary="Mark a rule inactive: kept, never runs", responses=error_responses(404))
def deactivate(tenant: str, rule_id: str) -> RuleAnswer:
    return RuleAnswer(rule=admin.as_document(admin.set_active(get_rule_store(), tenant, rule_id, False)))


# ------------------------------------------------------------------------------------------- dry run
@app.post("/admin/tenants/<tenant>/dry-run", tags=RULES,
          summary="What the rules would do with a sample event; nothing is sent, counted or stored",
          responses=error_responses(400, 404))
def dry_run(tenant: str, body: Annotated[DryRunRequest, Body()]) -> DryRunReport:
    # deferred: the engine, sources and action types a dry run needs add ~30 ms that other routes never pay
    from billflow.logic.dryrun import dry_run as run_dry

    return run_dry(tenant, body, get_rule_store())


# ------------------------------------------------------------------------------------------- runs
@app.get("/admin/tenants/<tenant>/executions", tags=RUNS, summary="The execution log, newest first",
         responses=error_responses(400))
def executions(
    tenant: str,
    rule: Annotated[str | None, Query(description="Only this rule's runs")] = None,
    record: Annotated[str | None, Query(description="Only this record's runs, as source:object:id")] = None,
    status: Annotated[str | None, Query(description="sent, succeeded, failed, limited...")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> ExecutionsAnswer:
    return ExecutionsAnswer(executions=admin.query_executions(get_execution_log(), tenant, rule, record, status,
                                                              limit))


@app.post("/admin/tenants/<tenant>/executions/<name>/replay", tags=RUNS,
          summary="Run a failed or limited run again with its original input (sends are not repeated)",
          responses=error_responses(400, 404, 409))
def replay(tenant: str, name: str) -> ReplayAnswer:
    # deferred: run state and Step Functions access (~5 ms) that only replays need, never a cold start
    from billflow.logic.replay import replay as start_replay

    answer = start_replay(tenant, name, get_rule_store())
    logger.info("run replayed", extra={"tenant": tenant, **answer.model_dump()})
    return answer


@app.post("/admin/tenants/<tenant>/connections/<name>/test", tags=CONNECTIONS,
          summary="Check a connection with one harmless documented read (refreshes OAuth tokens)",
          responses=error_responses(404))
def test_connection(tenant: str, name: str) -> ConnectionReport:
    # deferred: the connectors (~20 ms of imports) serve only this route, never the admin cold start
    from billflow.logic.connections import check_connection

    try:
        report = check_connection(tenant, name)
    except ConfigurationError as exc:  # no such connection (or no type): nothing to test, say which
        raise NotFound(exc.message) from None
    logger.info("connection tested", extra={"tenant": tenant, "connection": name, "ok": report.ok})
    return report


# ------------------------------------------------------------------------------------------- schedules (issue 12)
SCHEDULES = ["schedules"]


def _schedule_store() -> Any:
    # deferred: schedules' storage and calendar serve only these routes, never the admin cold start
    from billflow.storage.schedules import get_schedule_store

    return get_schedule_store()


def _scheduler_api() -> Any:
    from billflow.storage.schedules import get_scheduler_api

    return get_scheduler_api()


def _rule_ids(tenant: str, extra: list[str]) -> set[str]:
    return {r.id for r in get_rule_store().all_rules(tenant)} | set(extra)


@app.get("/admin/tenants/<tenant>/schedules", tags=SCHEDULES,
         summary="Every schedule with its next five firings (in its time zone and UTC)", responses=error_responses())
def list_schedules(tenant: str) -> SchedulesAnswer:
    from billflow.logic import schedules

    store = _schedule_store()
    return SchedulesAnswer.model_validate({"schedules": schedules.list_schedules(store, tenant, _now())})


@app.post("/admin/tenants/<tenant>/schedules/plan", tags=SCHEDULES,
          summary="What applying the schedule documents would change, and how each fires",
          responses=error_responses(400))
def plan_schedules(tenant: str, body: Annotated[SchedulesRequest, Body()]) -> SchedulePlanAnswer:
    from billflow.logic import schedules

    store = _schedule_store()
    found = schedules.parse_schedules(tenant, body.schedules, _rule_ids(tenant, body.rule_ids), _now())
    return SchedulePlanAnswer(plan=schedules.plan_schedules(store, tenant, found, body.prune, _now()))


@app.post("/admin/tenants/<tenant>/schedules/apply", tags=SCHEDULES,
          summary="Store the schedule documents and set their EventBridge Scheduler schedules",
          responses=error_responses(400))
def apply_schedules(tenant: str, body: Annotated[SchedulesRequest, Body()]) -> SchedulePlanAnswer:
    from billflow.logic import schedules

    store, scheduler = _schedule_store(), _scheduler_api()
    found = schedules.parse_schedules(tenant, body.schedules, _rule_ids(tenant, body.rule_ids), _now())
    applied = schedules.apply_schedules(store, scheduler, tenant, found, body.prune, _now())
    logger.info("schedules applied", extra={"tenant": tenant, **applied.model_dump()})
    return SchedulePlanAnswer(plan=applied)


@app.post("/admin/tenants/<tenant>/schedules", tags=SCHEDULES,
          summary="Add one schedule (a tenant has at most 10)", responses=error_responses(400))
def create_schedule(tenant: str, body: Annotated[ScheduleDocument, Body()]) -> ScheduleAnswer:
    from billflow.logic import schedules

    store, scheduler = _schedule_store(), _scheduler_api()
    found = schedules.parse_schedules(tenant, [body], _rule_ids(tenant, []), _now())[0]
    stored = schedules.create_schedule(store, scheduler, tenant, found, _now())
    logger.info("schedule created", extra={"tenant": tenant, "schedule": stored.id})
    return ScheduleAnswer.model_validate({"schedule": schedules.schedule_document(stored)})


@app.delete("/admin/tenants/<tenant>/schedules/<schedule_id>", tags=SCHEDULES, summary="Delete a schedule",
            responses=error_responses(404))
def delete_schedule(tenant: str, schedule_id: str) -> DeletedAnswer:
    from billflow.logic import schedules

    store, scheduler = _schedule_store(), _scheduler_api()
    schedules.delete_schedule(store, scheduler, tenant, schedule_id)
    return DeletedAnswer(deleted=schedule_id)


@app.post("/admin/tenants/<tenant>/schedules/<schedule_id>/run", tags=SCHEDULES,
          summary="Fire a schedule now (idempotent per firing time)", responses=error_responses(400, 404))
def run_schedule(tenant: str, schedule_id: str, body: Annotated[RunScheduleRequest, Body()]) -> FiringAnswer:
    from billflow.logic import schedules
    from billflow.models.run import parse_utc
    from billflow.storage.executions import get_executions

    store, scheduler = _schedule_store(), _scheduler_api()
    if store.get(tenant, schedule_id) is None:
        raise NotFound(f"tenant {tenant} has no schedule {schedule_id!r}")
    try:
        firing = parse_utc(body.firing) if body.firing else _now()
    except ValueError:
        raise InvalidRequest(f"firing: {body.firing!r} is not an ISO date-time such as 2026-03-01T09:00:00Z") from None
    report = schedules.fire_schedule(tenant, schedule_id, firing, _now(), manual=True, schedule_store=store,
                                     rule_store=get_rule_store(), executions=get_executions(), scheduler=scheduler)
    logger.info("schedule run by hand", extra=report.summary())
    return FiringAnswer.model_validate(report.summary())


def _now() -> datetime:
    return datetime.now(UTC)
# ------------------------------------------------------------------------------------------- sweeps (issue 11)
SWEEPS = ["sweeps"]


@app.post("/admin/tenants/<tenant>/sweeps", tags=SWEEPS,
          summary="Sweep one rule by hand: feed the CRM's matching records that have no document yet",
          responses=error_responses(400, 404))
def sweep(tenant: str, body: Annotated[SweepRequest, Body()]) -> SweepAnswer:
    # deferred: the Lambda client serves only this route
    from billflow.storage.sweeps import invoke_sweep

    answer = invoke_sweep({"kind": "rule", "tenant": tenant, **body.model_dump()})
    if answer.get("status") != 200:  # what the caller must fix, as the sweep said it
        error = answer.get("error") or {}
        refused = NotFound if answer.get("status") == 404 else InvalidRequest
        raise refused(str(error.get("message") or "the sweep was refused"), **(error.get("details") or {}))
    logger.info("sweep by hand", extra={"tenant": tenant, "rule": body.rule_id, "fed": len(answer["report"]["fed"])})
    return SweepAnswer.model_validate(answer["report"])
# ------------------------------------------------------------------------------------------- tenant settings
@app.get("/admin/tenants/<tenant>/settings", tags=SETTINGS, summary="The tenant's settings (limits, alerts, "
         "digest, time zone)", responses=error_responses(403))
def get_settings_document(tenant: str) -> SettingsDocument:
    from billflow.logic.tenant_settings import read_settings  # deferred: settings routes only

    return read_settings(get_tenant_settings_store(), tenant)


@app.put("/admin/tenants/<tenant>/settings", tags=SETTINGS, summary="Replace the tenant's settings",
         responses=error_responses(400, 403))
def put_settings_document(tenant: str, body: Annotated[SettingsDocument, Body()]) -> SettingsDocument:
    from billflow.logic.tenant_settings import write_settings  # deferred: settings routes only

    saved = write_settings(get_tenant_settings_store(), tenant, body)
    logger.info("settings saved", extra={"tenant": tenant, "limits": sorted(saved.daily_limits)})
    return saved


# ------------------------------------------------------------------------------------------- connections
@app.get("/admin/tenants/<tenant>/connections", tags=CONNECTIONS,
         summary="The tenant's connections: names, types, setting names (never their values)",
         responses=error_responses(403))
def list_connections(tenant: str) -> ConnectionsAnswer:
    from billflow.logic.connections import list_connections as listed  # deferred: connection routes only

    return ConnectionsAnswer(connections=listed(tenant))


@app.put("/admin/tenants/<tenant>/connections/<name>", tags=CONNECTIONS,
         summary="Create or update a connection (its secret); values are never answered",
         responses=error_responses(400, 403))
def put_connection(tenant: str, name: str, body: Annotated[ConnectionRequest, Body()]) -> ConnectionAnswer:
    from billflow.logic.connections import save_connection  # deferred: connection routes only

    answer = save_connection(tenant, name, body)
    logger.info("connection saved", extra={"tenant": tenant, "connection": name, "type": body.type,
                                            "keys": answer.connection.keys, "new": answer.created})
    return answer


@app.delete("/admin/tenants/<tenant>/connections/<name>", tags=CONNECTIONS, summary="Delete a connection",
            responses=error_responses(400, 403, 404))
def delete_connection(tenant: str, name: str) -> DeletedAnswer:
    from billflow.logic.connections import delete_connection as deleted  # deferred: connection routes only

    deleted(tenant, name)
    logger.info("connection deleted", extra={"tenant": tenant, "connection": name})
    return DeletedAnswer(deleted=name)


@app.get("/admin/tenants/<tenant>/connections/<name>/authorize", tags=CONNECTIONS,
         summary="Start OAuth connect: the provider's consent URL (state, PKCE where supported)",
         responses=error_responses(400, 403, 404))
def authorize_connection(tenant: str, name: str) -> AuthorizeAnswer:
    from billflow.logic.oauth_connect import CALLBACK_PATH, authorize  # deferred: OAuth connect only
    from billflow.storage.oauth_states import get_oauth_states  # deferred: as above

    event = app.current_event
    host = event.request_context.domain_name or event.headers.get("host") or "localhost"
    scheme = event.headers.get("x-forwarded-proto") or "https"
    answer = authorize(get_oauth_states(), tenant, name, f"{scheme}://{host}{CALLBACK_PATH}")
    logger.info("oauth connect started", extra={"tenant": tenant, "connection": name})
    return answer


@app.get("/oauth/callback", tags=CONNECTIONS,
         summary="The OAuth providers' redirect (no sign-in: the single-use state authorises it)",
         responses=error_responses(400), security=[{}])  # {}: no authentication (OpenAPI 3)
def oauth_callback(
    code: Annotated[str | None, Query(description="The authorization code")] = None,
    state: Annotated[str | None, Query(description="The state billflow gave the consent URL")] = None,
    error: Annotated[str | None, Query(description="The provider's refusal")] = None,
    realm_id: Annotated[str | None, Query(alias="realmId", description="QuickBooks: the company")] = None,
    accounts_server: Annotated[str | None, Query(alias="accounts-server",
                                                 description="Zoho: the user's accounts server")] = None,
) -> OAuthCallbackAnswer:
    from billflow.logic.oauth_connect import callback  # deferred: OAuth connect only
    from billflow.storage.oauth_states import get_oauth_states  # deferred: as above

    query = {"code": code, "state": state, "error": error, "realmId": realm_id, "accounts-server": accounts_server}
    answer = callback(get_oauth_states(), {k: v for k, v in query.items() if v})
    logger.info("oauth connected", extra={"tenant": answer.tenant, "connection": answer.connection})
    return answer


# ------------------------------------------------------------------------------------------- usage and run paths
@app.get("/admin/tenants/<tenant>/usage", tags=RUNS, summary="Today against the daily limits; sent, failed "
         "and limited per day", responses=error_responses(400, 403))
def usage(tenant: str, days: Annotated[int, Query(ge=1, le=400, description="Days back, today included")] = 30,
          ) -> UsageAnswer:
    from billflow.logic.usage import usage as tenant_usage  # deferred: the usage page only
    from billflow.storage.day_counters import get_counter_store  # deferred: as above

    return tenant_usage(tenant, days, settings=get_tenant_settings_store().read(tenant).settings,
                        rules=get_rule_store(), counters=get_counter_store(), log=get_execution_log())


@app.get("/admin/statemachine", tags=RUNS, summary="The state machine's definition (ASL), to draw run paths on",
         responses=error_responses())
def state_machine() -> StateMachineAnswer:
    from billflow.storage.executions import get_executions  # deferred: run pages only

    return StateMachineAnswer(definition=get_executions().definition())


@app.get("/admin/tenants/<tenant>/executions/<name>/path", tags=RUNS,
         summary="The states one run passed, waits in, retried or failed", responses=error_responses(403, 404))
def execution_path(tenant: str, name: str) -> ExecutionPathAnswer:
    from billflow.logic.run_path import execution_path as path_of_run  # deferred: run pages only
    from billflow.storage.executions import get_executions  # deferred: as above

    return path_of_run(get_executions(), tenant, name)


# ------------------------------------------------------------------------------------------- console (issue 13)
# The admin console's static files, served from this function: one origin with the API it calls (no CORS), no
# bucket or CDN to deploy, and the same route locally. The files hold no data; every answer is strict about
# where scripts may come from (none inline), framing, and sniffing.
CONSOLE_FILES = {"index.html": "text/html", "console.css": "text/css", "favicon.svg": "image/svg+xml"}
CONSOLE_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _console_file(name: str) -> Response[Any]:
    from pathlib import Path

    folder = Path(__file__).resolve().parent / "console"
    kind = CONSOLE_FILES.get(name) or ("text/javascript" if name.endswith(".js") else None)
    path = folder / name
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        return Response(404, "application/json", {"error": "NotFound", "message": f"no console file {name!r}"})
    return Response(200, f"{kind}; charset=utf-8", path.read_text(encoding="utf-8"), headers=_console_headers())


def _console_headers() -> dict[str, str]:
    """connect-src adds Cognito's domain on AWS: the page trades its sign-in code for tokens there."""
    from billflow.settings import get_settings

    auth_url = get_settings().console_auth_url
    headers = dict(CONSOLE_HEADERS)
    if auth_url:
        headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
            "connect-src 'self'", f"connect-src 'self' {auth_url}")
    return headers


@app.get("/console", include_in_schema=False)
def console_page() -> Response[Any]:
    return _console_file("index.html")


@app.get("/console/config.json", include_in_schema=False)
def console_config() -> Response[Any]:
    """How the page signs in: Cognito (AWS) or the token the local runtime printed."""
    from billflow.settings import get_settings

    settings = get_settings()
    config = ({"auth": "cognito", "auth_url": settings.console_auth_url, "client_id": settings.console_client_id,
               "api": "/console/api"} if settings.console_auth_url else {"auth": "token", "api": "/admin"})
    return Response(200, "application/json", config, headers=_console_headers())


@app.get("/console/<name>", include_in_schema=False)
def console_asset(name: str) -> Response[Any]:
    return _console_file(name)


# ------------------------------------------------------------------------------------------- errors
@app.exception_handler(BillflowError)  # type: ignore[untyped-decorator]
def domain_error(exc: BillflowError) -> Response[Any]:
    return Response(exc.http_status if exc.http_status < 500 else 500, "application/json", exc.to_body())


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def invalid_document(exc: RequestValidationError) -> Response[Any]:
    """422 as documented (HTTPValidationError), with each problem's message: admins fix rules from them."""
    if _answers_400(app.current_event.path):  # settings and connections: 400 naming each bad field
        from billflow.logic.tenant_settings import problems_of  # deferred: invalid requests only

        problems = problems_of(exc.errors())
        refusal = InvalidRequest(problems[0] if problems else "the request is not valid", problems=problems,
                                 fields=[p.split(":", 1)[0] for p in problems])
        return Response(400, "application/json", refusal.to_body())
    try:
        body = app.current_event.json_body
    except ValueError:
        body = None
    return Response(422, "application/json", admin.invalid_request_answer(exc.errors(), body))


def _answers_400(path: str) -> bool:
    parts = path.split("/")
    return len(parts) >= 5 and parts[1:3] == ["admin", "tenants"] and parts[4] in ("settings", "connections")


@logger.inject_lambda_context(clear_state=True)
@requires_settings("rules_table", "execution_log_table", "state_machine_arn")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:  # a body that is not UTF-8, nested too deep or not JSON is the caller's error: 400, before routing
        parse_event_body(event)
    except InvalidRequest as exc:
        return {"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": json.dumps(exc.to_body())}
    try:  # the console's JWT routes: /console/api/... served as /admin/..., for the tenants the user's groups name
        event = access.admit(event)
    except Forbidden as exc:
        return {"statusCode": 403, "headers": {"Content-Type": "application/json"}, "body": json.dumps(exc.to_body())}
    return app.resolve(event, context)
