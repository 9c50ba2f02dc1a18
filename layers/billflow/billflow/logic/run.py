"""The tasks of one execution: lookup, format (the next action), dispatch and write-back.

Each takes the execution's state document and returns what the state machine stores at that task's
ResultPath. The state machine owns order, retries, waits, limits and logging; these own the content.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billflow.actions import get_action_type
from billflow.connectors import get_crm
from billflow.errors import TransientError
from billflow.logic.workflow import RunState
from billflow.models.documents import DispatchResult
from billflow.models.rules import DOCUMENT_ACTIONS, Action
from billflow.storage import keys
from billflow.storage.execution_log import log_item
from billflow.storage.secrets import Connection, get_secret_store

COUNTER_TTL_SECONDS = 3 * 86400
MAX_RETRY_AFTER_ROUNDS = 5
GENERIC_SOURCES = frozenset({"generic"})


def crm_connection(state: RunState) -> Connection:
    """The CRM a rule's source talks back to is the tenant's connection named after the source."""
    return get_secret_store().connection(state.tenant, state.event.source)


def lookup(state: RunState) -> dict[str, Any]:
    if state.event.source in GENERIC_SOURCES:
        return {}
    connection = crm_connection(state)
    return get_crm(connection.type).lookup(connection, state.event.object, state.event.record)


def plan_next(state: RunState, now: datetime | None = None) -> dict[str, Any]:
    """The next action to run, with its rendered request and its daily-limit counter; or done."""
    index = len(state.results)
    execution = state.execution_name
    if index >= len(state.actions):
        last_id = next((r.get("external_id") for r in reversed(state.results) if r.get("external_id")), "")
        return {
            "done": True,
            "log_item": _log(state, execution, "run", "succeeded", f"{index} action(s) done", last_id or ""),
        }
    action = state.actions[index]
    now = now or datetime.now(UTC)
    limit = state.daily_limits.get(action.limit_key, state.default_daily_limit)
    step: dict[str, Any] = {
        "done": False,
        "index": index,
        "action_type": action.type,
        "action": action.model_dump(mode="json"),
        "request": render_request(action, state),
        "counter": {
            "pk": keys.counter_pk(state.tenant, action.limit_key, now.strftime("%Y-%m-%d")),
            "limit": str(limit),
            "expires_at": str(int(now.timestamp()) + COUNTER_TTL_SECONDS),
        },
    }
    if action.write_back_field and action.type in DOCUMENT_ACTIONS:
        step["write_back"] = {"field": action.write_back_field}
    return step


def render_request(action: Action, state: RunState) -> dict[str, Any]:
    return get_action_type(action.type).render(action, state)


def dispatch(state: RunState, step: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """Send one action. A TransientError with Retry-After becomes a wait in the state machine."""
    action = Action.model_validate(step["action"])
    key = f"{state.execution_key}:{step['index']}"
    attempt = int((previous or {}).get("attempt", 0)) + 1
    try:
        result = send_once(state, action, step["request"], key)
    except TransientError as exc:
        if exc.retry_after_seconds is None or attempt >= MAX_RETRY_AFTER_ROUNDS:
            raise
        return {"retry_after": max(1, int(exc.retry_after_seconds + 0.999)), "attempt": attempt,
                "reason": exc.message}
    outcome = {"index": step["index"], "action_type": action.type, **result.model_dump(mode="json")}
    execution = state.execution_name
    return {
        "outcome": outcome,
        "results": [*state.results, outcome],
        "log_item": _log(state, execution, f"action-{step['index']}", result.status, "",
                         result.external_id or "", action.type),
    }


def send_once(state: RunState, action: Action, request: dict[str, Any], key: str) -> DispatchResult:
    """The send, made idempotent by its key: a retried task returns the first answer, sends nothing."""
    from billflow.storage.idempotency import once

    return once(key, lambda: get_action_type(action.type).send(action, request, state, key))


def write_back(state: RunState, step: dict[str, Any], dispatched: dict[str, Any]) -> dict[str, Any]:
    """Store the created document's id on the CRM record (and the matched customer on the company)."""
    field = step["write_back"]["field"]
    outcome = dispatched["outcome"]
    connection = crm_connection(state)
    crm = get_crm(connection.type)
    crm.update_record(connection, state.event.object, state.event.record_id, {field: outcome["external_id"]})
    written = {field: outcome["external_id"]}
    customer_field = (step["action"].get("options") or {}).get("customer_id_field")
    company = state.lookup.get("company") or {}
    customer_id = (outcome.get("details") or {}).get("customer_id")
    if customer_field and customer_id and company.get("id") and company.get(customer_field) != customer_id:
        crm.update_record(connection, "company", company["id"], {customer_field: customer_id})
        written[f"company.{customer_field}"] = customer_id
    return written


def _log(
    state: RunState, execution: str, step: str, status: str, reason: str, external_id: str,
    action_type: str = "",
) -> dict[str, Any]:
    return log_item(
        tenant=state.tenant, execution=execution or state.execution_key, rule_id=state.rule.id,
        record_key=state.log.record_key, step=step, status=status, reason=reason,
        external_id=external_id, action_type=action_type, transition=state.transition,
    )

