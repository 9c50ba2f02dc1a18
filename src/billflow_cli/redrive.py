"""`billflow redrive`: the filter's failed events (its on-failure queue) put back on the bus, once fixed.

Each message is Lambda's destination record; its requestPayload is the EventBridge event the filter failed on.
The event is put on the bus again, and its message deleted only after EventBridge accepted it, so an
interrupted redrive loses nothing; running it again is safe: the filter names each execution after the
record's transition, so an event that did get through once starts no second run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RECEIVE_BATCH = 10
VISIBILITY_SECONDS = 30  # a message being redriven (or skipped) is hidden from other readers this long


@dataclass
class RedriveReport:
    redriven: list[str] = field(default_factory=list)  # the original events' ids
    skipped: list[str] = field(default_factory=list)  # other tenants' events, left in the queue
    refused: list[str] = field(default_factory=list)  # not an event, or refused by EventBridge: left there


def bus_entry(event: dict[str, Any], bus: str) -> dict[str, Any]:
    """The PutEvents entry that puts an EventBridge event back on the bus as it was first put."""
    entry: dict[str, Any] = {"EventBusName": bus, "Source": event["source"], "DetailType": event["detail-type"],
                             "Detail": json.dumps(event["detail"])}
    if event.get("resources"):
        entry["Resources"] = list(event["resources"])
    if event.get("time"):
        entry["Time"] = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
    return entry


def _messages(sqs: Any, queue_url: str) -> Iterator[dict[str, Any]]:
    seen: set[str] = set()
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=RECEIVE_BATCH, WaitTimeSeconds=0,
                                    VisibilityTimeout=VISIBILITY_SECONDS).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            yield message


def redrive(sqs: Any, events: Any, queue_url: str, bus: str, tenant: str | None = None) -> RedriveReport:
    report = RedriveReport()
    for message in _messages(sqs, queue_url):
        try:
            record = json.loads(message["Body"])
            event = record["requestPayload"]
            entry = bus_entry(event, bus)
            event_id = str(event.get("id", message["MessageId"]))
        except (ValueError, KeyError, TypeError):
            report.refused.append(message["MessageId"])
            continue
        if tenant is not None and (event.get("detail") or {}).get("tenant") != tenant:
            report.skipped.append(event_id)  # visible again after the receive's visibility timeout
            continue
        answer = events.put_events(Entries=[entry])
        if answer.get("FailedEntryCount"):
            report.refused.append(event_id)
            continue
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        report.redriven.append(event_id)
    return report


def stack_outputs(stack: str, region: str | None) -> dict[str, str]:
    import boto3  # the CLI talks to the admin API over HTTP; only redrive needs AWS credentials

    answer = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack)
    return {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}
