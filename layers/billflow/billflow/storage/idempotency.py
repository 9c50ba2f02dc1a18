"""Powertools idempotency on the idempotency table: a send runs once per key; repeats get its answer."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from billflow.aws import client
from billflow.models.documents import DispatchResult
from billflow.settings import get_settings

RECORD_TTL_SECONDS = 7 * 86400


# The Powertools idempotency utility is imported on first send (deferred: cold start; it loads boto3 and
# jmespath, which the lookup, format and write-back functions never need).
@cache
def _persistence() -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer  # deferred: see above

    table = get_settings().required("idempotency_table")
    return DynamoDBPersistenceLayer(table_name=table, boto3_client=client("dynamodb"))


@cache
def _config() -> Any:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig  # deferred: cold start

    return IdempotencyConfig(event_key_jmespath="key", expires_after_seconds=RECORD_TTL_SECONDS)


def register_lambda_context(context: Any) -> None:
    """Lets an in-progress record expire with the invocation, so a timed-out send can be retried."""
    _config().register_lambda_context(context)


@cache
def _idempotent_send() -> Callable[..., dict[str, Any]]:
    from aws_lambda_powertools.utilities.idempotency import idempotent_function  # deferred: cold start

    config = _config()

    @idempotent_function(  # type: ignore[untyped-decorator]
        data_keyword_argument="request", persistence_store=_persistence(), config=config
    )
    def send(request: dict[str, str], run: Callable[[], DispatchResult]) -> dict[str, Any]:
        return run().model_dump(mode="json")

    sender: Callable[..., dict[str, Any]] = send
    return sender


def once(key: str, run: Callable[[], DispatchResult]) -> DispatchResult:
    answer = _idempotent_send()(request={"key": key}, run=run)
    return DispatchResult.model_validate(answer)


def reset() -> None:
    _persistence.cache_clear()
    _config.cache_clear()
    _idempotent_send.cache_clear()
