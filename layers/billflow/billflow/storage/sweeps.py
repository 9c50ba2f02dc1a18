"""The sweep function, invoked synchronously by the admin API (a sweep by hand runs where its permissions are:
the CRM connections' secrets, the records table, Step Functions)."""

from __future__ import annotations

import json
from typing import Any

from billflow.aws import client
from billflow.errors import TransientError
from billflow.settings import get_settings


def invoke_sweep(request: dict[str, Any]) -> dict[str, Any]:
    """The sweep function's answer to {"kind": "rule", ...}; TransientError when it failed unexpectedly."""
    answer = client("lambda").invoke(
        FunctionName=get_settings().required("sweep_function_name"), InvocationType="RequestResponse",
        Payload=json.dumps(request).encode(),
    )
    payload = answer["Payload"].read()
    document = json.loads(payload) if payload else {}
    if answer.get("FunctionError"):
        message = document.get("errorMessage") if isinstance(document, dict) else None
        raise TransientError(f"the sweep failed: {message or answer['FunctionError']}")
    if not isinstance(document, dict):
        raise TransientError("the sweep answered something that is not a JSON object")
    return document
