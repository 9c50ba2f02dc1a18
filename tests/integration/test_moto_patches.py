"""Every moto patch of billflow_local (moto_patches.PATCHES) still fits the moto it patches: the pinned version,
each replaced attribute with the signature the patch's replacement takes, and, where a patch restores an AWS
behaviour, moto still behaving the way the patch works around (when moto fixes it, the patch must go)."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from typing import Any

import pytest

from billflow_local.moto_patches import ENGINE_CLIENT_USERS, PATCHES, quiet_moto_engine

PINNED_MOTO = "5.2.5"  # pyproject's local extra; a new moto means re-reading every patch below
SIGNATURES = {  # what each replacement is written against: (parameter names)
    "moto.core.botocore_stubber:BotocoreStubber.__call__": ("self", "event_name", "request", "kwargs"),
    "moto.stepfunctions.parser.backend.execution_worker:ExecutionWorker._get_evaluation_entrypoint": ("self",),
    "moto.stepfunctions.parser.asl.utils.json_path:parse": ("path", "debug"),
    "moto.stepfunctions.parser.asl.component.common.path.result_path:parse": ("string",),
    "jsonpath_ng.ext:parse": ("path", "debug"),
    "botocore.useragent:UserAgentString.to_string": ("self",),
    **{f"{module}:boto_client_for": ("region", "service", "state_credentials") for module in ENGINE_CLIENT_USERS},
    "moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function:WaitFunction._wait_interval":
        ("self", "env", "wait_seconds"),
    "moto.stepfunctions.parser.asl.component.common.retry.retrier_decl:RetrierDecl._eval_body": ("self", "env"),
    "moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp:Timestamp._get_wait_seconds":
        ("self", "env"),
}
REPLACED = [path for patch in PATCHES for path in patch.replaces if path.split(":")[0] not in ("logging", "botocore")]


def resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    found: Any = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def test_moto_is_the_version_the_patches_were_written_for() -> None:
    assert importlib.metadata.version("moto") == PINNED_MOTO


def test_every_patch_says_what_it_restores_and_every_replacement_is_checked() -> None:
    assert all(patch.restores and patch.replaces for patch in PATCHES)
    callables = [path for path in REPLACED if not path.endswith(":time")]
    assert sorted(callables) == sorted(SIGNATURES)


@pytest.mark.parametrize("path", sorted(SIGNATURES))
def test_each_replaced_attribute_still_has_the_signature_its_replacement_takes(path: str) -> None:
    assert tuple(inspect.signature(resolve(path)).parameters) == SIGNATURES[path]


def test_moto_retry_backoffs_still_sleep_through_the_module_time_the_clock_replaces() -> None:
    retrier = importlib.import_module("moto.stepfunctions.parser.asl.component.common.retry.retrier_decl")
    assert "time.sleep(" in inspect.getsource(retrier)
    assert retrier.time is importlib.import_module("time")


def test_moto_still_reads_wait_timestamps_against_local_time() -> None:
    # AWS compares a Wait state's Timestamp with UTC; moto with the machine's local time (the clock adds the
    # offset back). When moto compares with UTC itself, drop that half of clock.VirtualClock.installed.
    source = inspect.getsource(resolve(
        "moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp:Timestamp._get_wait_seconds"))
    assert "datetime.datetime.now()" in source


def test_moto_eventbridge_still_does_not_invoke_lambda_targets() -> None:
    # The reason bus.LocalEventBus answers PutEvents itself: moto's targets do not reach a Lambda function.
    events = importlib.import_module("moto.events.models")
    source = inspect.getsource(events)
    assert '"lambda"' not in source and "'lambda'" not in source


def test_the_step_functions_engine_logger_is_silenced_and_restored() -> None:
    engine = logging.getLogger("moto.stepfunctions.parser")
    before = engine.level
    with quiet_moto_engine("WARNING"):
        assert engine.level == logging.CRITICAL
    assert engine.level == before
