"""A rule's error branch (issue 8 §8), and the Dispatch function's other tasks.

When a run fails or is limited, the state machine logs it, tells the failure topic, and then (RunOnFailure)
runs the rule's `on_failure` actions: notification, email_alert, field_update (on the run's record) and
webhook. Their placeholders read what every action reads plus `failure`:

    {{ failure.status }}     failed or limited
    {{ failure.reason }}     "TransientError: Stripe answered 503 ..." / "daily limit of 5 invoice sends reached"
    {{ failure.error }}      the error's name (RunFailed paths), DailyLimitReached (limited runs)
    {{ failure.execution }}  the execution's name, for `billflow replay`

Each action is sent once per execution (the idempotency key is the execution's name and the action's
index), so a retried RunOnFailure task never alerts twice; a replay that fails again is a new failure and
alerts again. One action failing does not stop the others; transient failures are retried by the state
machine (TransientError) a few times, then logged as failed like any other. Every action's outcome is
returned as an execution-log item, which the state machine writes (LogOnFailure).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from billflow.actions import get_action_type
from billflow.errors import TransientError
from billflow.models.rules import Action
from billflow.models.run import RunState
from billflow.observability import logger
from billflow.storage.execution_log import log_item

# RunOnFailure's Retry (TransientError) allows this many retries; the last attempt logs instead of raising.
ON_FAILURE_RETRIES = 2
FAILURE_STATUSES = ("failed", "limited")


class FailedRun(RunState):
    """A run on its failure path: what every action sees, plus `failure` for placeholders."""

    failure: dict[str, str] = Field(default_factory=dict)

    def context(self) -> dict[str, Any]:
        return {**super().context(), "failure": self.failure}


def run_task(event: dict[str, Any]) -> dict[str, Any]:
    """The Dispatch function's tasks other than a send: Settle and RunOnFailure."""
    task = event.get("task")
    if task == "settle":
        from billflow.logic.reservations import settle

        return settle(event["counter"], str(event["hold"]))
    if task == "on_failure":
        return run_on_failure(event["run"], str(event["execution"]), int(event.get("retry_count") or 0))
    raise ValueError(f"unknown dispatch task {task!r}; known: on_failure, settle")


def run_on_failure(run: dict[str, Any], execution: str, retry_count: int = 0) -> dict[str, Any]:
    """Run the rule's on_failure actions once each: {"log_items": [...]} for the execution log."""
    state = FailedRun.model_validate(run)
    failure = {"status": "failed", "reason": "", "error": "", **state.failure, "execution": execution}
    state = state.model_copy(update={"failure": failure})
    items: list[dict[str, Any]] = []
    retryable: list[str] = []
    for index, action in enumerate(state.rule.on_failure):
        step = f"on_failure-{index}"
        try:
            status, external_id = _send(state, action, f"{execution}:{step}")
            reason = f"{failure['status']}: {failure['reason']}"
        except TransientError as exc:
            if retry_count < ON_FAILURE_RETRIES:
                retryable.append(f"{step} ({action.type}): {exc.message}")
                continue
            status, external_id, reason = "failed", "", f"{action.type} failed: {exc.message}"
        except Exception as exc:  # the error branch must not hide the run's own failure
            status, external_id, reason = "failed", "", f"{action.type} failed: {type(exc).__name__}: {exc}"
        logger.info("on_failure action", extra={"step": step, "action_type": action.type, "status": status})
        items.append(log_item(
            tenant=state.tenant, execution=execution, rule_id=state.rule.id, record_key=state.log.record_key,
            step=step, status=status, reason=reason, external_id=external_id, action_type=action.type,
            transition=state.transition,
        ))
    if retryable:
        # The ones sent are not sent again on the retry: their idempotency records answer for them.
        raise TransientError("on_failure action(s) to retry: " + "; ".join(retryable))
    return {"log_items": items}


def _send(state: FailedRun, action: Action, key: str) -> tuple[str, str]:
    from billflow.logic.run import send_once

    request = get_action_type(action.type).render(action, state)
    result = send_once(state, action, request, key)
    return result.status, result.external_id or ""
