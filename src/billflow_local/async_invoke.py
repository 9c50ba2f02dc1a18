"""Lambda's asynchronous invocation, as EventBridge and Scheduler use it: a handler's exception is retried
(twice by default, after about 1 and 2 minutes), then the event goes to the function's on-failure destination
(EventInvokeConfig) as Lambda's destination record, or is dropped when there is none.

The rule's RetryPolicy and dead-letter queue are not involved: on AWS they cover only EventBridge failing to
hand the event to Lambda, which accepts it at once for an asynchronous invocation.
"""

from __future__ import annotations

import json
import traceback
from datetime import UTC, datetime
from typing import Any

from billflow_local.lambdas import request_id
from billflow_local.provision import LAMBDA_DEFAULT_ASYNC_RETRIES, AsyncInvokeConfig

__all__ = ["LAMBDA_DEFAULT_ASYNC_RETRIES", "destination_body", "destination_record", "retry_delay", "should_retry"]

# Lambda's documented backoff between asynchronous attempts: about a minute, then about two.
RETRY_DELAYS_SECONDS = (60.0, 120.0)


def retry_delay(attempt: int) -> float:
    """Seconds Lambda waits after failed attempt `attempt` (1-based) before the next one."""
    return RETRY_DELAYS_SECONDS[min(attempt, len(RETRY_DELAYS_SECONDS)) - 1]


def should_retry(config: AsyncInvokeConfig, attempt: int, age_seconds: float) -> bool:
    """After failed attempt `attempt`: is there another one (attempts left, and the event not too old)?"""
    return attempt < config.max_attempts and age_seconds + retry_delay(attempt) <= config.max_age_seconds


def destination_record(config: AsyncInvokeConfig, payload: Any, exc: BaseException, attempts: int,
                       *, condition: str = "RetriesExhausted") -> dict[str, Any]:
    """The message an on-failure destination receives, in Lambda's shape (requestContext, requestPayload,
    responseContext, responsePayload)."""
    stack = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "requestContext": {
            "requestId": request_id(),
            "functionArn": f"{config.function_arn}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": str(exc), "errorType": type(exc).__name__,
                            "requestId": "", "stackTrace": [line.rstrip("\n") for line in stack[-5:]]},
    }


def destination_body(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str)
