"""boto3 clients, created on first use and reused for the life of the execution environment."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    import boto3  # deferred: a handler that never touches AWS does not pay for it

    return boto3.client(service)  # type: ignore[call-overload]


def reset_clients() -> None:
    """Tests and the local runtime call this after switching AWS endpoints or mocks."""
    client.cache_clear()
