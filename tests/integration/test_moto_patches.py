"""Every moto patch of billflow_local (moto_patches.PATCHES) still fits the moto it patches: the pinned version,
each replaced attribute with the signature the patch's replacement takes, and, where a patch restores an AWS
behaviour, moto still behaving the way the patch works around (when moto fixes it, the patch must go)."""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import inspect
import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from billflow_local.moto_patches import (
    ENGINE_CLIENT_USERS,
    ENGINE_STATE_COPIERS,
    PATCHES,
    copy_json,
    faster_moto_responses,
    faster_state_copies,
    quiet_moto_engine,
)

PINNED_MOTO = "5.2.5"  # pyproject's local extra; a new moto means re-reading every patch below
SIGNATURES = {  # what each replacement is written against: (parameter names)
    "moto.core.botocore_stubber:BotocoreStubber.__call__": ("self", "event_name", "request", "kwargs"),
    "moto.stepfunctions.parser.backend.execution_worker:ExecutionWorker._get_evaluation_entrypoint": ("self",),
    "moto.stepfunctions.parser.asl.utils.json_path:parse": ("path", "debug"),
    "moto.stepfunctions.parser.asl.component.common.path.result_path:parse": ("string",),
    "jsonpath_ng.ext:parse": ("path", "debug"),
    "botocore.useragent:UserAgentString.to_string": ("self",),
    "moto.core.responses:method_names_from_class": ("clazz",),
    "moto.core.serialize:AttributePicker.get_possible_keys": ("self", "context"),
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
    callables = [path for path in REPLACED if not path.endswith((":time", ":copy"))]  # modules: checked below
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


def _dynamodb_answers() -> list[Any]:
    """What moto answers a mix of DynamoDB calls (nested maps and lists, a query, an update returning
    values, a refused condition, a table description), without the requests' ids and dates."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "S"}])
        item = {"pk": {"S": "a"}, "sk": {"S": "1"}, "n": {"N": "2"}, "flag": {"BOOL": True}, "none": {"NULL": True},
                "map": {"M": {"list": {"L": [{"S": "x"}, {"N": "1"}, {"M": {"deep": {"SS": ["p", "q"]}}}]}}}}
        answers: list[Any] = [client.put_item(TableName="t", Item=item, ReturnConsumedCapacity="TOTAL")]
        answers.append(client.get_item(TableName="t", Key={"pk": {"S": "a"}, "sk": {"S": "1"}}))
        answers.append(client.query(TableName="t", KeyConditionExpression="pk = :p",
                                    ExpressionAttributeValues={":p": {"S": "a"}}))
        answers.append(client.update_item(TableName="t", Key={"pk": {"S": "a"}, "sk": {"S": "1"}},
                                          UpdateExpression="ADD n :one", ExpressionAttributeValues={":one": {"N": "1"}},
                                          ReturnValues="ALL_NEW"))
        try:
            client.put_item(TableName="t", Item=item, ConditionExpression="attribute_not_exists(pk)",
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except ClientError as exc:
            answers.append(exc.response)
        table = client.describe_table(TableName="t")["Table"]
        answers.append({k: v for k, v in table.items() if k != "CreationDateTime"})
    for answer in answers:
        answer.pop("ResponseMetadata", None)
    return answers


def test_moto_answers_the_same_with_its_response_work_done_once() -> None:
    # faster_moto_responses only saves time: every answer is the one moto gives without it, the second
    # time round (answered from what the first found) as well as the first.
    plain = _dynamodb_answers()
    with faster_moto_responses():
        patched = [_dynamodb_answers(), _dynamodb_answers()]
    assert patched == [plain, plain]
    assert _dynamodb_answers() == plain  # and moto is itself again after it


@pytest.mark.parametrize("module", ENGINE_STATE_COPIERS)
def test_the_engine_still_copies_state_data_through_its_copy_module_and_deepcopy_alone(module: str) -> None:
    # faster_state_copies replaces the module's `copy` with a namespace that has deepcopy only
    found = importlib.import_module(module)
    assert found.copy is copy
    assert set(re.findall(r"\bcopy\.(\w+)", inspect.getsource(found))) == {"deepcopy"}


def test_a_json_copy_is_equal_and_shares_nothing() -> None:
    stamp = datetime(2026, 12, 6, tzinfo=UTC)
    data = {"a": [1, 2.5, True, None, "x", {"b": {"c": []}}], "when": stamp, "pair": (1, [2])}
    copied = copy_json(data)
    assert copied == data == copy.deepcopy(data)
    assert copied["a"] is not data["a"] and copied["a"][5]["b"] is not data["a"][5]["b"]
    assert copied["pair"][1] is not data["pair"][1]  # not JSON: copy.deepcopy's copy
    assert type(copied["a"][2]) is bool


def _state_machine_run() -> tuple[Any, list[Any]]:
    """The output and history (without times) of an execution that shapes, chooses and merges JSON."""
    import boto3
    from moto import mock_aws

    definition = {"StartAt": "Shape", "States": {
        "Shape": {"Type": "Pass", "ResultPath": "$.shaped", "Next": "Pick",
                  "Parameters": {"deal.$": "$.deal", "lines.$": "$.lines", "count.$": "States.ArrayLength($.lines)",
                                 "fixed": {"list": [1, 2.5, True, None], "map": {"k": "v"}}}},
        "Pick": {"Type": "Choice", "Default": "Done",
                 "Choices": [{"Variable": "$.shaped.count", "NumericGreaterThan": 1, "Next": "Merge"}]},
        "Merge": {"Type": "Pass", "InputPath": "$.shaped", "OutputPath": "$.merged", "Next": "Done",
                  "Parameters": {"merged.$": "States.JsonMerge($.deal, $.fixed, false)",
                                 "text.$": "States.Format('deal {}', $.deal.id)"}},
        "Done": {"Type": "Pass", "Result": {"done": True}, "ResultPath": "$.status", "End": True}}}
    run_input = {"deal": {"id": "d-1", "amount": {"value": 1200.5, "currency": "EUR"}},
                 "lines": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 1}]}
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        sfn = boto3.client("stepfunctions", region_name="us-east-1")
        machine = sfn.create_state_machine(name="copies", definition=json.dumps(definition),
                                           roleArn="arn:aws:iam::123456789012:role/sfn")["stateMachineArn"]
        run = sfn.start_execution(stateMachineArn=machine, name="run", input=json.dumps(run_input))["executionArn"]
        deadline = time.monotonic() + 10
        while (described := sfn.describe_execution(executionArn=run))["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        events = sfn.get_execution_history(executionArn=run)["events"]
    assert described["status"] == "SUCCEEDED"
    return json.loads(described["output"]), [{k: v for k, v in e.items() if k != "timestamp"} for e in events]


def test_the_engine_runs_the_same_with_its_state_copies_made_as_json() -> None:
    plain = _state_machine_run()
    with faster_state_copies():
        patched = _state_machine_run()
    assert patched == plain
    assert plain[0] == {"id": "d-1", "amount": {"value": 1200.5, "currency": "EUR"},  # Merge's output: merged
                        "list": [1, 2.5, True, None], "map": {"k": "v"}, "status": {"done": True}}
    assert len(plain[1]) >= 10  # entered and exited events of four states, with their data
    assert all(importlib.import_module(module).copy is copy for module in ENGINE_STATE_COPIERS)  # restored
