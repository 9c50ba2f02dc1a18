"""One action of a run in one task (the Dispatch state): send, settle the day's counter, write back, log, plan.

Each Step Functions Standard state entered is a billed transition ($25 per million). One action used to
take eight (Dispatch, two Choices, Commit, a Choice, WriteBack, LogAction, Advance) plus NextAction and
HasAction to find the next; here the Dispatch task does them with the same DynamoDB semantics, so an
invoice run takes 7 transitions: Lookup, NextAction, HasAction, CountDaily (the reservation stays a
service integration: the limit's race is decided by one conditional update there), Dispatch, HasAction,
LogSuccess.

Order and failure semantics, as the state machine had them:
- the send is idempotent (storage/idempotency.py): a retried task never sends twice;
- Retry-After: the task answers {"dispatched": {"retry_after", ...}} and the state machine waits
  (WaitRetryAfter, RenewHold) and calls it again, as before;
- sent: Commit (`REMOVE hold ADD sent 1` if the hold is there; else CommitLate: count it anyway);
  skipped: Release (`REMOVE hold ADD count -1` if the hold is there). A failing counter write after the send
  is logged and the run goes on, as the state machine's Catch did;
- after the commit nothing may fail the task, or its retry would count the send a second time: if the
  write-back, the log write or the planning fails, the task answers the run with `dispatched` set and the
  state machine takes its old path for the rest of this action (NeedsWriteBack, WriteBack with its
  retries and Catch, LogAction, Advance, NextAction).
The one window left is the function dying between the commit and its answer (a timeout): the retried task
commits late and counts the send twice, erring on the side of the limit, as CommitLate always did.
"""

from __future__ import annotations

from typing import Any

from billflow.logic.run import dispatch, plan_next, write_back
from billflow.models.run import RunState
from billflow.observability import logger
from billflow.storage.day_counters import get_counter_store, hold_name
from billflow.storage.execution_log import get_execution_log

# The run's own fields: what Advance carried forward (task results under other keys are dropped).
RUN_FIELDS = ("tenant", "execution_key", "execution_name", "transition", "rule", "actions", "event",
              "daily_limits", "default_daily_limit", "log", "lookup", "dry_run", "results", "blocks", "timed",
              "waited", "recheck", "refresh_record", "held", "trigger_at", "usage_alert")


def run_action_step(run: dict[str, Any], execution: str) -> dict[str, Any]:
    """The Dispatch state's task: the run as the state machine carries it on (ResultPath "$")."""
    state = RunState.model_validate(run)
    step = run["step"]
    dispatched = dispatch(state, step, run.get("dispatched"), run.get("counted"))
    if "retry_after" in dispatched:
        return {**run, "dispatched": dispatched}
    sent = dispatched["outcome"].get("status") != "skipped"
    _settle_counter(step, hold_name(execution, step["index"]), sent)
    try:
        written = write_back(state, step, dispatched) if sent and step.get("write_back") else None
        get_execution_log().write(dispatched["log_item"])
        carried = {key: run[key] for key in RUN_FIELDS if key in run}
        carried["results"] = dispatched["results"]
        following = plan_next(RunState.model_validate(carried))
    except Exception as exc:
        logger.warning("finishing the action in the state machine", extra={"reason": f"{type(exc).__name__}: {exc}"})
        return {**run, "dispatched": {**dispatched, "settled": True}}
    if written:
        logger.info("written back", extra={"fields": sorted(written)})
    return {**carried, "step": following}


def _settle_counter(step: dict[str, Any], hold: str, sent: bool) -> None:
    counter = (step.get("counter") or {}).get("pk")
    if not counter:
        return
    outcome = get_counter_store().settle(counter, hold, sent)
    if outcome == "late":
        logger.warning("send counted after its hold lapsed", extra={"counter": counter})
    elif outcome.startswith("failed"):  # the send happened: the run goes on (the old Catch did too)
        logger.error("daily counter not settled", extra={"counter": counter, "reason": outcome})
