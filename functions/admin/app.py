"""Admin API (IAM-authorised in AWS): rules as code and the execution log, for the CLI and tools."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import BadRequestError
from billflow.errors import BillflowError
from billflow.logic.admin import apply_rules, parse_rules, plan_rules
from billflow.observability import logger
from billflow.storage.execution_log import get_execution_log
from billflow.storage.keys import record_pk
from billflow.storage.rules import get_rule_store, rule_document

app = APIGatewayHttpResolver()


@app.get("/admin/tenants/<tenant>/rules")
def list_rules(tenant: str) -> dict[str, Any]:
    return {"rules": [rule_document(r) for r in get_rule_store().all_rules(tenant)]}


@app.post("/admin/tenants/<tenant>/rules/plan")
def plan(tenant: str) -> dict[str, Any]:
    body = _body()
    rules = parse_rules(tenant, body.get("rules") or [])
    return {"plan": plan_rules(get_rule_store(), tenant, rules, bool(body.get("prune"))).as_dict()}


@app.post("/admin/tenants/<tenant>/rules/apply")
def apply(tenant: str) -> dict[str, Any]:
    body = _body()
    rules = parse_rules(tenant, body.get("rules") or [])
    applied = apply_rules(get_rule_store(), tenant, rules, bool(body.get("prune")))
    logger.info("rules applied", extra={"tenant": tenant, **applied.as_dict()})
    return {"applied": applied.as_dict()}


@app.get("/admin/tenants/<tenant>/executions")
def executions(tenant: str) -> dict[str, Any]:
    log = get_execution_log()
    query = app.current_event.query_string_parameters or {}
    limit = min(int(query.get("limit", "20")), 200)
    if rule := query.get("rule"):
        items = log.by_rule(tenant, rule, limit)
    elif record := query.get("record"):
        source, _, rest = record.partition(":")
        object_name, _, record_id = rest.partition(":")
        items = log.by_record(record_pk(tenant, source, object_name, record_id), limit)
    elif status := query.get("status"):
        items = log.by_status(tenant, status, limit)
    else:
        items = log.recent(tenant, limit)
    return {"executions": items}


@app.exception_handler(BillflowError)
def domain_error(exc: BillflowError) -> Response[Any]:
    return Response(exc.http_status if exc.http_status < 500 else 500, "application/json", exc.to_body())


def _body() -> dict[str, Any]:
    try:
        body = app.current_event.json_body
    except ValueError:
        raise BadRequestError("body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequestError("body must be a JSON object")
    return body


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
