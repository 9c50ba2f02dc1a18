"""Amazon SES: sending one email alert, its errors turned into billflow's (retry or final)."""

from __future__ import annotations

from typing import Any

from billflow.aws import client
from billflow.errors import TargetRejected, TransientError

_TRANSIENT_SES_ERRORS = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    "InternalFailure", "ServiceUnavailable", "InternalServiceErrorException",
})


def send_email(params: dict[str, Any]) -> str | None:
    """SendEmail (SES v2) with these parameters; the message id."""
    # deferred: botocore loads with the first client; a function that sends no email never needs it
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = client("sesv2").send_email(**params)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        message = err.response.get("Error", {}).get("Message", str(err))
        if code in _TRANSIENT_SES_ERRORS:
            raise TransientError(f"SES: {code}: {message}") from None
        raise TargetRejected(f"SES refused the email: {code}: {message}") from None
    except BotoCoreError as err:
        raise TransientError(f"SES unreachable: {err}") from None
    message_id = answer.get("MessageId")
    return str(message_id) if message_id is not None else None
