"""boto3 clients, created on first use and reused for the life of the execution environment."""

from __future__ import annotations

from collections.abc import Callable
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


_forgetters: list[Callable[[], None]] = []


def on_reset(forget: Callable[[], None]) -> None:
    """Have `forget` run at every reset_clients: what the container remembers of AWS's answers (the execution
    names Step Functions holds...) belongs to the endpoint its clients talked to."""
    _forgetters.append(forget)


def reset_clients() -> None:
    """Tests and the local runtime call this after switching AWS endpoints or mocks: another endpoint is
    another AWS, so what was remembered of the last one is forgotten with its clients."""
    client.cache_clear()
    for forget in _forgetters:
        forget()
