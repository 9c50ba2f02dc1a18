"""Domain errors. Their class names are the error names Step Functions sees (Retry/Catch match on them)."""

from __future__ import annotations

from typing import Any


class BillflowError(Exception):
    """Base of every error billflow raises on purpose."""

    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(BillflowError):
    """The caller sent something billflow cannot accept (HTTP 400)."""

    http_status = 400


class Unauthorized(BillflowError):
    """Missing, wrong or stale signature (HTTP 401). Never says which part was wrong beyond that."""

    http_status = 401


class Forbidden(BillflowError):
    """Signed in, but not allowed this tenant (HTTP 403): the user's groups do not name it."""

    http_status = 403


class NotFound(BillflowError):
    http_status = 404


class PayloadTooLarge(BillflowError):
    http_status = 413


class ConfigurationError(BillflowError):
    """A rule, connection or secret is missing or malformed: final, fix the configuration."""


class TransientError(BillflowError):
    """Worth retrying: the state machine retries it with backoff (name used in statemachine Retry)."""

    def __init__(self, message: str, retry_after_seconds: float | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_seconds = retry_after_seconds


class TargetRejected(BillflowError):
    """The target answered with a final 4xx: logged with the target's own message, never retried."""


class CustomerNotFound(TargetRejected):
    """Strict customer matching found no customer: no unwanted customers are created."""


class AmbiguousCustomer(TargetRejected):
    """Several customers match the same lookup and none is stored on the CRM record: nothing is guessed."""


class ProductNotFound(TargetRejected):
    """A line item matched no product and the connection may not create products."""


class AuthorizationRevoked(TargetRejected):
    """The OAuth grant was revoked: the tenant must reconnect; retrying cannot help."""
