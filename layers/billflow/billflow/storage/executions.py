"""Step Functions executions of the billflow state machine: one per run, named after its transition, so
Step Functions itself refuses a second run of one transition."""

from __future__ import annotations

import json
import time
from typing import Any

from billflow.aws import client
from billflow.models.run import RunState
from billflow.observability import logger
from billflow.recent import Recent
from billflow.settings import get_settings
from billflow.storage import shared


def execution_arn(state_machine_arn: str, name: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


# A name Step Functions holds stays taken for 90 days after its execution closes: a name this container saw
# taken (started, or refused as existing) within the hour is refused again without asking. A CRM that retries
# a delivery ten times then costs one StartExecution and one tenant-settings read, not ten.
TAKEN_NAMES_SECONDS = 3600.0
TAKEN_NAMES_KEPT = 10_000


class Executions:
    def __init__(self, state_machine_arn: str) -> None:
        self.state_machine_arn = state_machine_arn
        self._taken: Recent[str, float] = Recent(TAKEN_NAMES_KEPT)  # name -> when seen taken (monotonic)

    def arn(self, name: str) -> str:
        return execution_arn(self.state_machine_arn, name)

    def taken(self, name: str) -> bool:
        """True if this container saw Step Functions hold an execution of that name within the hour: starting
        it again can only be refused."""
        seen = self._taken.get(name)
        return seen is not None and time.monotonic() - seen < TAKEN_NAMES_SECONDS

    def start(self, name: str, document: dict[str, Any]) -> bool:
        """True if started; False if Step Functions already has an execution of that name."""
        if self.taken(name):
            return False
        sfn = client("stepfunctions")
        try:
            sfn.start_execution(stateMachineArn=self.state_machine_arn, name=name, input=json.dumps(document))
            started = True
        except sfn.exceptions.ExecutionAlreadyExists:
            started = False
        self._taken.put(name, time.monotonic())  # taken either way
        return started

    def start_run(self, state: RunState) -> bool:
        """Start the run under its execution name; False if that transition already has one (a duplicate)."""
        name = state.execution_name
        if not self.start(name, state.model_dump(mode="json")):
            logger.info("duplicate transition refused by Step Functions", extra={"execution": name})
            return False
        logger.info("execution started", extra={"execution": name, "rule": state.rule.id})
        return True

    def describe(self, name: str) -> dict[str, Any] | None:
        """DescribeExecution of the named run (status, input, error), or None when there is none."""
        sfn = client("stepfunctions")
        try:
            answer: dict[str, Any] = sfn.describe_execution(executionArn=self.arn(name))
        except sfn.exceptions.ExecutionDoesNotExist:
            return None
        return answer

    def history(self, name: str, most: int = 5000) -> list[dict[str, Any]] | None:
        """GetExecutionHistory of the named run, oldest first (at most `most` events); None when there is
        no such run."""
        sfn = client("stepfunctions")
        events: list[dict[str, Any]] = []
        paging: dict[str, Any] = {}
        while len(events) < most:
            try:
                page = sfn.get_execution_history(executionArn=self.arn(name), maxResults=1000,
                                                 includeExecutionData=False, **paging)
            except sfn.exceptions.ExecutionDoesNotExist:
                return None
            events.extend(page.get("events", []))
            if not page.get("nextToken"):
                break
            paging = {"nextToken": page["nextToken"]}
        return events[:most]

    def definition(self) -> dict[str, Any]:
        """The state machine's ASL document (DescribeStateMachine)."""
        described = client("stepfunctions").describe_state_machine(stateMachineArn=self.state_machine_arn)
        document: dict[str, Any] = json.loads(described["definition"])
        return document


def get_executions() -> Executions:
    return shared(Executions, get_settings().required("state_machine_arn"))
