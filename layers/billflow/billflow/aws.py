"""boto3 clients, created on first use and reused for the life of the execution environment."""

from __future__ import annotations

from functools import cache
from typing import Any

# Client-side parameter validation walks every request against the service model (~60 µs a PutEvents, a
# sixth of a webhook's CPU). The bus's entries are built by billflow itself (storage/bus.py), never from a
# caller's input, and EventBridge validates them again on its side: the ingest path skips the first check.
UNVALIDATED_SERVICES = frozenset({"events"})


@cache
def client(service: str) -> Any:
    import boto3  # deferred: a handler that never touches AWS does not pay for it

    if service in UNVALIDATED_SERVICES:
        from botocore.config import Config

        return boto3.client(service, config=Config(parameter_validation=False))  # type: ignore[call-overload]
    return boto3.client(service)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Tests and the local runtime call this after switching AWS endpoints or mocks."""
    client.cache_clear()
