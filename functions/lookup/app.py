"""Lookup task: fetch what the documents need from the CRM (company, contact, line items)."""

from __future__ import annotations

from typing import Any

from billflow.logic.run import lookup
from billflow.models.run import RunState
from billflow.observability import logger


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return lookup(RunState.model_validate(event))
