"""Dispatch task: send the planned action once (idempotency key per transition and action)."""

from __future__ import annotations

from typing import Any

from billflow.logic.run import dispatch
from billflow.logic.workflow import RunState
from billflow.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return dispatch(RunState.model_validate(event), event["step"], event.get("dispatched"))
