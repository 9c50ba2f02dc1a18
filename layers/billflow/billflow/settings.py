"""Environment, parsed once per cold start. Names match template.yaml's Globals and function variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Settings:
    stage: str
    rules_table: str
    counters_table: str
    idempotency_table: str
    execution_log_table: str
    records_table: str
    event_bus_name: str
    state_machine_arn: str
    failure_topic_arn: str
    secrets_prefix: str
    max_body_bytes: int
    signature_tolerance_seconds: int
    default_daily_limit: int
    log_retention_days: int
    secrets_cache_seconds: int


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ.get
    return Settings(
        stage=env("STAGE", "dev"),
        rules_table=env("RULES_TABLE", ""),
        counters_table=env("COUNTERS_TABLE", ""),
        idempotency_table=env("IDEMPOTENCY_TABLE", ""),
        execution_log_table=env("EXECUTION_LOG_TABLE", ""),
        records_table=env("RECORDS_TABLE", ""),
        event_bus_name=env("EVENT_BUS_NAME", ""),
        state_machine_arn=env("STATE_MACHINE_ARN", ""),
        failure_topic_arn=env("FAILURE_TOPIC_ARN", ""),
        secrets_prefix=env("SECRETS_PREFIX", "billflow/dev"),
        max_body_bytes=_int("MAX_BODY_BYTES", 256 * 1024),
        signature_tolerance_seconds=_int("SIGNATURE_TOLERANCE_SECONDS", 300),
        default_daily_limit=_int("DEFAULT_DAILY_LIMIT", 500),
        log_retention_days=_int("LOG_RETENTION_DAYS", 90),
        secrets_cache_seconds=_int("SECRETS_CACHE_SECONDS", 300),
    )
