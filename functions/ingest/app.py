"""POST /webhooks/{tenant}/{source}: verify the signature, validate, publish on the bus, answer 202."""

from __future__ import annotations

import base64
import json
from typing import Any

from billflow.errors import BillflowError, InvalidRequest, TransientError
from billflow.logic.ingest import WebhookDelivery, accept_delivery
from billflow.observability import logger
from billflow.settings import requires_settings


@logger.inject_lambda_context(clear_state=True)
@requires_settings("event_bus_name")
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    try:
        batch = accept_delivery(_delivery(event))
    except TransientError as exc:
        logger.warning("webhook not accepted, retryable", extra={"reason": exc.message})
        return _answer(503, exc.to_body(), {"Retry-After": "5"})
    except BillflowError as exc:
        logger.info("webhook refused", extra={"status": exc.http_status, "reason": exc.message})
        return _answer(exc.http_status, exc.to_body())
    events = batch.events
    logger.info("webhook accepted", extra={"events": [e.event_id for e in events]})
    body: dict[str, Any] = {"accepted": len(events), "event_ids": [e.event_id for e in events]}
    if batch.skipped:
        # 2xx all the same: the CRM would resend the whole batch, valid events included, for nothing.
        skipped = [{"index": s.index, "event_id": s.event_id, "reason": s.reason} for s in batch.skipped]
        logger.warning("webhook events skipped", extra={"skipped": skipped})
        body["skipped"] = skipped
    return _answer(202, body)


def _delivery(event: dict[str, Any]) -> WebhookDelivery:
    params = event.get("pathParameters") or {}
    raw = event.get("body") or ""
    try:
        body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    except ValueError:
        raise InvalidRequest("body is not valid base64") from None
    http = (event.get("requestContext") or {}).get("http") or {}
    domain = (event.get("requestContext") or {}).get("domainName", "localhost")
    query = event.get("rawQueryString") or ""
    url = f"https://{domain}{event.get('rawPath', '')}" + (f"?{query}" if query else "")
    return WebhookDelivery(
        tenant=params.get("tenant", ""),
        source=params.get("source", ""),
        method=http.get("method", "POST"),
        url=url,
        headers={k.lower(): v for k, v in (event.get("headers") or {}).items()},
        body=body,
    )


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body),
    }
