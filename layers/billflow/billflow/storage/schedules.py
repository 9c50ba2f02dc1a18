"""Recurring schedules: their documents in the rules table, and their EventBridge Scheduler schedules (one
schedule group per tenant, one Scheduler schedule per billflow schedule, targeting the scheduler function)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billflow.aws import client
from billflow.errors import ConfigurationError
from billflow.models.schedules import Schedule
from billflow.settings import get_settings
from billflow.storage import shared

SCHEDULE_SK_PREFIX = "schedule#"
GROUP_NAME = re.compile(r"[^0-9A-Za-z_.-]")
MAX_GROUP_NAME = 64
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"  # Scheduler's context attribute: the firing's time


def schedules_pk(tenant: str) -> str:
    return f"{tenant}#_schedules"


class ScheduleStore:
    """Schedule documents per tenant, in the rules table (one partition per tenant: at most ten items)."""

    def __init__(self, table: str) -> None:
        self._table = table

    def all(self, tenant: str) -> list[Schedule]:
        ddb = client("dynamodb")
        items: list[dict[str, Any]] = []
        paging: dict[str, Any] = {}
        while True:
            page = ddb.query(TableName=self._table, ConsistentRead=True,
                             KeyConditionExpression="pk = :pk AND begins_with(sk, :s)",
                             ExpressionAttributeValues={":pk": {"S": schedules_pk(tenant)},
                                                        ":s": {"S": SCHEDULE_SK_PREFIX}}, **paging)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                break
            paging = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        return sorted((Schedule.model_validate_json(i["document"]["S"]) for i in items), key=lambda s: s.id)

    def get(self, tenant: str, schedule_id: str) -> Schedule | None:
        item = client("dynamodb").get_item(
            TableName=self._table, ConsistentRead=True,
            Key={"pk": {"S": schedules_pk(tenant)}, "sk": {"S": f"{SCHEDULE_SK_PREFIX}{schedule_id}"}},
        ).get("Item")
        return Schedule.model_validate_json(item["document"]["S"]) if item else None

    def put(self, schedule: Schedule) -> None:
        client("dynamodb").put_item(TableName=self._table, Item={
            "pk": {"S": schedules_pk(schedule.tenant)},
            "sk": {"S": f"{SCHEDULE_SK_PREFIX}{schedule.id}"},
            "tenant": {"S": schedule.tenant},
            "document": {"S": schedule.model_dump_json()},
        })

    def delete(self, tenant: str, schedule_id: str) -> None:
        client("dynamodb").delete_item(
            TableName=self._table,
            Key={"pk": {"S": schedules_pk(tenant)}, "sk": {"S": f"{SCHEDULE_SK_PREFIX}{schedule_id}"}},
        )


def get_schedule_store() -> ScheduleStore:
    return shared(ScheduleStore, get_settings().required("rules_table"))


# ------------------------------------------------------------------------------------------- Scheduler
@dataclass(frozen=True)
class SchedulerSchedule:
    """What billflow sets on an EventBridge Scheduler schedule."""

    expression: str
    timezone: str
    start: datetime | None = None
    end: datetime | None = None


def group_name(prefix: str, tenant: str) -> str:
    """The tenant's schedule group: `<stack>-<tenant>`, hashed when longer than Scheduler allows."""
    name = GROUP_NAME.sub("-", f"{prefix}-{tenant}")
    if len(name) <= MAX_GROUP_NAME:
        return name
    digest = hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return f"{name[:MAX_GROUP_NAME - 17]}-{digest}"


def firing_input(tenant: str, schedule_id: str) -> str:
    """The scheduler function's input: which schedule, and Scheduler's own firing time (idempotency)."""
    return json.dumps({"kind": "schedule", "tenant": tenant, "schedule": schedule_id, "time": SCHEDULED_TIME})


class SchedulerApi:
    """EventBridge Scheduler schedules of billflow's schedules (flexible window off; the target is the
    scheduler function, invoked with the schedules role)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def group(self, tenant: str) -> str:
        return group_name(self._prefix, tenant)

    def ensure_group(self, tenant: str) -> str:
        """The tenant's group, created on first use (CreateScheduleGroup refuses an existing name)."""
        scheduler = client("scheduler")
        name = self.group(tenant)
        try:
            scheduler.get_schedule_group(Name=name)
        except scheduler.exceptions.ResourceNotFoundException:
            scheduler.create_schedule_group(Name=name, Tags=[{"Key": "billflow:tenant", "Value": tenant[:256]}])
        return name

    def put(self, tenant: str, schedule_id: str, spec: SchedulerSchedule, description: str = "") -> None:
        """Create or replace the Scheduler schedule of a billflow schedule. The target is the scheduler
        function; a re-arm from the function itself (which cannot name its own ARN in the template) keeps the
        target the schedule already has."""
        settings = get_settings()
        scheduler = client("scheduler")
        existing = self.get(tenant, schedule_id)
        target_arn = settings.scheduler_function_arn or ((existing or {}).get("Target") or {}).get("Arn")
        if not target_arn:
            raise ConfigurationError("SCHEDULER_FUNCTION_ARN is not set: cannot create a Scheduler schedule")
        params: dict[str, Any] = {
            "Name": schedule_id, "GroupName": self.group(tenant) if existing else self.ensure_group(tenant),
            "ScheduleExpression": spec.expression, "ScheduleExpressionTimezone": spec.timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"}, "State": "ENABLED", "Description": description[:512],
            "Target": {
                "Arn": target_arn,
                "RoleArn": settings.required("schedules_role_arn"),
                "Input": firing_input(tenant, schedule_id),
                "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
            },
        }
        if spec.start is not None:
            params["StartDate"] = spec.start
        if spec.end is not None:
            params["EndDate"] = spec.end
        if existing:
            scheduler.update_schedule(**params)
        else:
            scheduler.create_schedule(**params)

    def get(self, tenant: str, schedule_id: str) -> dict[str, Any] | None:
        scheduler = client("scheduler")
        try:
            found: dict[str, Any] = scheduler.get_schedule(Name=schedule_id, GroupName=self.group(tenant))
        except scheduler.exceptions.ResourceNotFoundException:
            return None
        return found

    def delete(self, tenant: str, schedule_id: str) -> None:
        scheduler = client("scheduler")
        # already gone: what delete wanted
        with contextlib.suppress(scheduler.exceptions.ResourceNotFoundException):
            scheduler.delete_schedule(Name=schedule_id, GroupName=self.group(tenant))


def get_scheduler_api() -> SchedulerApi:
    return shared(SchedulerApi, get_settings().required("schedule_group_prefix"))
