"""Format task: pick the run's next action and build its request, or say the run is done."""

from __future__ import annotations

from typing import Any

from billflow.logic.run import plan_next
from billflow.logic.workflow import RunState
from billflow.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return plan_next(RunState.model_validate(event))
