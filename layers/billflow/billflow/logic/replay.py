"""Replaying a failed or limited run from the execution log.

The run's original input is read back from Step Functions (DescribeExecution) and started again under the
name `<original>-r<N>`, N the first number not used yet (a replay of a replay counts on from the same
original). The input keeps its execution key, so every send carries the idempotency key it carried the
first time: a send that already happened returns its first answer and is not repeated (the Powertools
idempotency record, and the target's own key such as Stripe's Idempotency-Key). Only the tenant's current
daily limits are refreshed, so raising a limit lets a limited run through.
"""

from __future__ import annotations

import json
import re
import time

from billflow.errors import InvalidRequest, NotFound
from billflow.logic.admin import Conflict
from billflow.models.admin import ReplayAnswer
from billflow.models.run import RunState
from billflow.settings import get_settings
from billflow.storage.executions import Executions, get_executions
from billflow.storage.rules import RuleStore

REPLAYABLE = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
EXECUTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_REPLAY_SUFFIX = re.compile(r"-r(\d+)$")
MAX_REPLAYS = 99


def original_name(name: str) -> str:
    """The first run's name: a replay's name is the original's plus -r<N>."""
    return _REPLAY_SUFFIX.sub("", name)


def replay(tenant: str, name: str, rule_store: RuleStore, executions: Executions | None = None) -> ReplayAnswer:
    if not EXECUTION_NAME.match(name):
        raise InvalidRequest(f"{name!r} is not an execution name (as `billflow log` shows them)")
    executions = executions or get_executions()
    described = executions.describe(name)
    run = json.loads(described.get("input") or "{}") if described else {}
    if described is None or run.get("tenant") != tenant:
        # Another tenant's run is as unknown as a missing one.
        raise NotFound(f"tenant {tenant} has no run named {name}")
    status = str(described["status"])
    if status in ("RUNNING", "PENDING_REDRIVE"):
        raise Conflict(f"run {name} is still going ({status}); replay it once it has failed")
    if status not in REPLAYABLE:
        raise InvalidRequest(f"run {name} {status.lower()}; only failed or limited runs are replayed")

    settings = get_settings()
    base = original_name(name)
    # Through the model: a run started by an older state machine gets every field the current one carries.
    run = RunState.model_validate(run).model_dump(mode="json")
    tenant_settings = rule_store.tenant_settings(tenant)  # the limits as they are now, not at the first run
    run["daily_limits"] = tenant_settings.daily_limits
    run["default_daily_limit"] = settings.default_daily_limit if tenant_settings.default_daily_limit is None \
        else tenant_settings.default_daily_limit
    if isinstance(run.get("log"), dict):
        run["log"]["expires_at"] = str(int(time.time()) + settings.log_retention_days * 86400)
    for attempt in range(1, MAX_REPLAYS + 1):
        new_name = f"{base}-r{attempt}"
        if len(new_name) > 80:
            raise InvalidRequest(f"run {name}: no room for a replay suffix in an 80-character name")
        if executions.describe(new_name) is not None:
            continue
        run["execution_name"] = new_name
        if not executions.start(new_name, run):
            continue  # another replay took this number a moment ago
        return ReplayAnswer(execution=new_name, replay_of=name, original_status=status,
                            original_error=described.get("error"), execution_arn=executions.arn(new_name))
    raise Conflict(f"run {base} was replayed {MAX_REPLAYS} times already")
