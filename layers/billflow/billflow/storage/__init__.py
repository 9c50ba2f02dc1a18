"""Data access: the only modules that call AWS (DynamoDB, Secrets Manager, EventBridge, Step Functions, SNS,
SES), one per table or service, each behind a small class whose getter shares one instance per table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from billflow import aws

Store = TypeVar("Store")
_stores: dict[tuple[Callable[[str], Any], str], Any] = {}
aws.on_reset(_stores.clear)  # a store may remember what AWS answered it: new clients, new stores


def shared(kind: Callable[[str], Store], name: str) -> Store:
    """The one `kind` store of the table (or state machine) `name` in this container."""
    store = _stores.get((kind, name))
    if store is None:
        store = _stores[(kind, name)] = kind(name)
    return cast(Store, store)
