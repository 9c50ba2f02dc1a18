"""Notifications out: an event on the billflow bus and a message on the notifications topic (SNS)."""

from __future__ import annotations

from typing import Any

from billflow.aws import client
from billflow.errors import ConfigurationError, TransientError

# Errors a retry cannot fix: the topic or bus is missing, or the function may not use it.
_FINAL_ERRORS = frozenset({"NotFound", "NotFoundException", "ResourceNotFoundException", "InvalidParameter",
                           "AuthorizationError", "AccessDeniedException"})


def publish_notification(event: dict[str, Any], sns: dict[str, Any]) -> tuple[str | None, str | None]:
    """PutEvents with `event`, then Publish with `sns`: the event id and the SNS message id."""
    # deferred: botocore loads with the first client; a function that sends no notification never needs it
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        put = client("events").put_events(**event)
        if put.get("FailedEntryCount"):
            failure = (put.get("Entries") or [{}])[0]
            raise TransientError(f"the event bus refused the notification: {failure.get('ErrorCode')}: "
                                 f"{failure.get('ErrorMessage')}")
        published = client("sns").publish(**sns)
    except ClientError as err:
        error = err.response.get("Error", {})
        code = error.get("Code", "")
        if code in _FINAL_ERRORS:
            raise ConfigurationError(f"notification: {code}: {error.get('Message', err)}") from None
        raise TransientError(f"notification: {code}: {error.get('Message', err)}") from None
    except BotoCoreError as err:
        raise TransientError(f"notification: {err}") from None
    return (put.get("Entries") or [{}])[0].get("EventId"), published.get("MessageId")
