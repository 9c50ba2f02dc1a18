"""Write-back task: store the created document's id on the CRM record."""

from __future__ import annotations

from typing import Any

from billflow.logic.run import write_back
from billflow.models.run import RunState
from billflow.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return write_back(RunState.model_validate(event), event["step"], event["dispatched"])
