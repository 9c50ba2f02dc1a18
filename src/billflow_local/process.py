"""The process the functions share locally: its environment variables, billflow's per-container caches, and
the garbage collector's view of what start-up loaded."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from billflow import aws, settings
from billflow.logic import filter as event_filter
from billflow.storage import idempotency, secrets

from billflow_local.template import REGION

FAKE_AWS_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# The stand-ins listen on 127.0.0.1: the local runtime says so explicitly (never the default).
LOCAL_ENVIRONMENT = {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true",
                     "ALLOW_LOOPBACK_TARGETS": "true"}
# Variables that would send boto3 somewhere else than moto, or to a real account.
UNSET_ENVIRONMENT = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                      "AWS_SHARED_CREDENTIALS_FILE")


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Keep what start-up loaded out of the garbage collector's full collections while the runtime runs.

    By then the process holds moto's backends, botocore's service models and every module: hundreds of
    thousands of long-lived objects that each full (generation 2) collection walks, 100-150 ms during which
    no request is answered (under load, the worst latencies). gc.freeze() moves them to a permanent
    generation; collections then only walk what was made since.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def patched_environment(values: Mapping[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*values, *unset)}
    for key in unset:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def reset_billflow_caches() -> None:
    """billflow caches settings, clients, secrets and the filter's routed deliveries per container; a new stack
    means a new container."""
    settings.get_settings.cache_clear()
    aws.reset_clients()
    secrets.reset_secret_store()
    idempotency.reset()
    event_filter.routed_deliveries.clear()

