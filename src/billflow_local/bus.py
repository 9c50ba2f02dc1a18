"""EventBridge for the template's rules, in this process: PutEvents answered, events matched by the rules'
patterns and queued as deliveries for the runtime's workers, with the rule's RetryPolicy for delivery."""

from __future__ import annotations

import heapq
import importlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.awsrequest import AWSResponse

from billflow_local.echo import Echo
from billflow_local.lambdas import RawBody, http_headers, request_id
from billflow_local.template import ACCOUNT_ID, REGION

ROUTE_BATCH = 50  # events matched per pass of the delivery loop
PUT_EVENTS_EVENT = "before-call.eventbridge.PutEvents"  # botocore: before-call.<hyphenized service id>.<op>
PUT_EVENTS_PARAMS_EVENT = "before-parameter-build.eventbridge.PutEvents"
_ENTRIES_KEY = "billflow_local_entries"
PUT_EVENTS_MAX_ENTRIES = 10
PUT_EVENTS_MAX_BYTES = 256 * 1024  # the entries' size, counted as EventBridge counts it
EVENTBRIDGE_DEFAULT_RETRIES = 185  # EventBridge's default RetryPolicy
EVENTBRIDGE_DEFAULT_MAX_AGE_SECONDS = 86_400
BUS_RETRY_CAP_SECONDS = 30  # locally, a failed delivery is retried at least this often


@dataclass(frozen=True)
class BusTarget:
    """A template EventBridgeRule event: its rule (bus, pattern, state), its function and retry policy."""

    function: str  # logical id
    function_arn: str
    event_name: str
    rule_name: str
    rule_arn: str
    bus: str
    pattern: Any  # moto.events.models.EventPattern: moto's (EventBridge's) matching semantics
    enabled: bool
    max_attempts: int  # 1 + RetryPolicy.MaximumRetryAttempts
    max_age_seconds: float  # RetryPolicy.MaximumEventAgeInSeconds
    dead_letter_arn: str | None = None
    dead_letter_url: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)  # Input, InputPath or InputTransformer

    def payload(self, event: dict[str, Any], ingestion_time: str | None = None) -> Any:
        """What the function is invoked with: the event, or what the target's input settings make of it."""
        if "Input" in self.input:
            return json.loads(self.input["Input"])
        if "InputPath" in self.input:
            jsonpath_ext: Any = importlib.import_module("jsonpath_ng.ext")
            found = jsonpath_ext.parse(self.input["InputPath"]).find(event)
            return found[0].value if found else None
        if "InputTransformer" in self.input:
            from moto.events.utils import EventTemplateParser

            transformer = self.input["InputTransformer"]
            # <aws.events.event.ingestion-time>: when the bus received the event (moto reads it from here).
            received = {**event, "ingestion-time": ingestion_time or event["time"]}
            return EventTemplateParser.parse(input_template=transformer.get("InputTemplate"),
                                             input_paths_map=transformer.get("InputPathsMap") or {},
                                             event=received)  # type: ignore[arg-type]
        return event


@dataclass
class Delivery:
    """One matched event on its way to one target; `attempt` is the attempt it is about to make."""

    target: BusTarget
    event: dict[str, Any]  # the EventBridge event (what a dead-letter queue receives)
    body: str  # the function's input as JSON: every attempt gets a fresh copy, as Lambda's would
    put_at: float  # virtual clock: the event's age counts from its PutEvents
    attempt: int = 1
    due: float = 0.0  # virtual clock: when a retry may run


class LocalEventBus:
    """EventBridge for the template's rules, in this process.

    PutEvents is answered at botocore's `before-call` stage: nothing is signed, sent or handed to moto.
    Accepted events are matched (in the background, as EventBridge does after answering) against every
    template rule of their bus with the rule's own Pattern, by moto's EventPattern; each match waits in
    memory until the runtime delivers it. Entries EventBridge refuses get its error entries; events for a
    bus that does not exist are accepted and dropped, as EventBridge does.
    """

    def __init__(self, now: Callable[[], float], on_work: Callable[[], None], echo: Echo | None) -> None:
        self.targets: list[BusTarget] = []
        self.buses: set[str] = {"default"}
        self._now = now
        self._on_work = on_work
        self._echo = echo
        self._lock = threading.Lock()
        self._incoming: deque[tuple[str, dict[str, Any], float, str]] = deque()  # bus, event, put_at, received
        self._routing = 0  # taken from _incoming, not yet matched
        self._ready: deque[Delivery] = deque()
        self._delayed: list[tuple[float, int, Delivery]] = []  # heap on due
        self._order = itertools.count()
        self.in_flight = 0  # taken by the runtime, not yet finished
        self.accepted = 0  # events accepted so far
        self._session: Any = None

    # --------------------------------------------------------------------------------- PutEvents
    def keep_entries(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """`before-parameter-build.eventbridge.PutEvents`: the caller's entries, for answer_put_events (the
        same request context reaches both), so the serialised body need not be parsed back."""
        entries = params.get("Entries")
        if isinstance(entries, list) and all(isinstance(e, dict) and e.get("Time") is None for e in entries):
            context[_ENTRIES_KEY] = entries  # else (a Time given in any form): read from the body

    def answer_put_events(self, params: dict[str, Any], context: dict[str, Any] | None = None,
                          **_: Any) -> tuple[Any, dict[str, Any]]:
        """The `before-call.eventbridge.PutEvents` handler: (http response, parsed response), as botocore
        would have made them from EventBridge's answer."""
        entries = (context or {}).get(_ENTRIES_KEY)
        if entries is None:
            entries = json.loads(params.get("body") or b"{}").get("Entries") or []
        if len(entries) > PUT_EVENTS_MAX_ENTRIES:
            return error_answer(params, "ValidationException",
                                 "1 validation error detected: Value '[PutEventsRequestEntry]' at 'entries' "
                                 "failed to satisfy constraint: Member must have length less than or equal to 10")
        if sum(entry_size(entry) for entry in entries) > PUT_EVENTS_MAX_BYTES:
            return error_answer(params, "ValidationException",
                                 "Total size of the entries in the request is over the limit.")
        results: list[dict[str, str]] = []
        accepted: list[tuple[str, dict[str, Any], float, str]] = []
        now, received = self._now(), now_text()
        for entry in entries:
            event = event_envelope(entry)
            if "ErrorCode" in event:
                results.append(event)
                continue
            results.append({"EventId": event["id"]})
            bus = bus_name(entry.get("EventBusName"))
            if bus in self.buses:
                accepted.append((bus, event, now, received))
            elif self._echo is not None:
                self._echo(f"[bus] PutEvents to {bus!r}, which does not exist: accepted and dropped, "
                           "as EventBridge does")
        if accepted:
            with self._lock:
                self._incoming.extend(accepted)
                self.accepted += len(accepted)
            self._on_work()
        failed = sum(1 for r in results if "ErrorCode" in r)
        return json_answer(params, 200, {"FailedEntryCount": failed, "Entries": results})

    def attach(self, session: Any) -> None:
        """Answer PutEvents made through clients of this boto3 session (created from now on)."""
        session.events.register(PUT_EVENTS_PARAMS_EVENT, self.keep_entries, unique_id="billflow-local-bus-entries")
        session.events.register(PUT_EVENTS_EVENT, self.answer_put_events, unique_id="billflow-local-bus")
        self._session = session

    def detach(self) -> None:
        if self._session is not None:
            self._session.events.unregister(PUT_EVENTS_PARAMS_EVENT, unique_id="billflow-local-bus-entries")
            self._session.events.unregister(PUT_EVENTS_EVENT, unique_id="billflow-local-bus")
            self._session = None

    # --------------------------------------------------------------------------------- deliveries
    def route(self, limit: int = ROUTE_BATCH) -> int:
        """Match up to `limit` accepted events against the rules (a bounded pause for the requests that
        share the interpreter); every match becomes a delivery. Returns how many events are left."""
        with self._lock:
            batch = [self._incoming.popleft() for _ in range(min(limit, len(self._incoming)))]
            self._routing += len(batch)
        deliveries = []
        try:
            for bus, event, put_at, received in batch:
                for target in self.targets:
                    if target.bus == bus and target.enabled and target.pattern.matches_event(event):
                        body = json.dumps(target.payload(event, received))
                        deliveries.append(Delivery(target, event, body, put_at))
        finally:
            with self._lock:
                self._ready.extend(deliveries)
                self._routing -= len(batch)
        return len(self._incoming)

    def take(self, limit: int) -> list[Delivery]:
        """Up to `limit` deliveries that are due, oldest first; each must be finished with done() or retry()."""
        now = self._now()
        with self._lock:
            while self._delayed and self._delayed[0][0] <= now:
                self._ready.append(heapq.heappop(self._delayed)[2])
            taken = [self._ready.popleft() for _ in range(min(limit, len(self._ready)))]
            self.in_flight += len(taken)
            return taken

    def done(self, delivery: Delivery) -> None:
        with self._lock:
            self.in_flight -= 1

    def retry(self, delivery: Delivery, delay: float) -> None:
        delivery.attempt += 1
        delivery.due = self._now() + delay
        with self._lock:
            heapq.heappush(self._delayed, (delivery.due, next(self._order), delivery))
            self.in_flight -= 1

    def seconds_until_due(self) -> float | None:
        """Virtual seconds until the next delayed delivery is due (None: nothing delayed)."""
        with self._lock:
            return max(0.0, self._delayed[0][0] - self._now()) if self._delayed else None

    def pending(self) -> tuple[int, int]:
        """(events and deliveries waiting or running, deliveries delayed for a retry)."""
        with self._lock:
            return len(self._incoming) + self._routing + len(self._ready) + self.in_flight, len(self._delayed)


def bus_name(name_or_arn: Any) -> str:
    text = str(name_or_arn or "default")
    return text.rsplit("event-bus/", 1)[-1] if text.startswith("arn:") else text


def entry_size(entry: Mapping[str, Any]) -> int:
    """An entry's size as EventBridge counts it (eb-putevent-size): Time is 14 bytes, the rest UTF-8."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(key) or "").encode())
    return size + sum(len(str(r).encode()) for r in entry.get("Resources") or [] if r is not None)


def event_envelope(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The event as EventBridge hands it to a Lambda target, or EventBridge's error entry for the entry."""
    for key in ("Source", "DetailType", "Detail"):
        if not entry.get(key):
            return {"ErrorCode": "InvalidArgument",
                    "ErrorMessage": f"Parameter {key} is not valid. Reason: {key} is a required argument."}
    try:
        detail = json.loads(entry["Detail"])
    except ValueError:
        detail = None
    if not isinstance(detail, dict):  # the detail must be a JSON object
        return {"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed."}
    when = entry.get("Time")  # as serialised: epoch seconds
    time_text = datetime.fromtimestamp(float(when), UTC).strftime(_ISO_SECONDS) if when is not None else now_text()
    return {
        "version": "0",
        "id": request_id(),
        "detail-type": entry["DetailType"],
        "source": entry["Source"],
        "account": ACCOUNT_ID,
        "time": time_text,
        "region": REGION,
        "resources": list(entry.get("Resources") or []),
        "detail": detail,
    }


_ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
_now_text_cache: tuple[int, str] = (0, "")


def now_text() -> str:
    """Now as an event's time (whole seconds, UTC), formatted once a second."""
    global _now_text_cache
    second = int(time.time())
    if _now_text_cache[0] != second:
        _now_text_cache = (second, time.strftime(_ISO_SECONDS, time.gmtime(second)))
    return _now_text_cache[1]


def json_answer(params: Mapping[str, Any], status: int, document: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    answer_id = request_id()
    body = json.dumps(document).encode()
    headers = {"x-amzn-requestid": answer_id, "content-type": "application/x-amz-json-1.1",
               "content-length": str(len(body))}
    http = AWSResponse(params.get("url") or "", status, http_headers(headers), RawBody(body))
    parsed = {**document, "ResponseMetadata": {"RequestId": answer_id, "HTTPStatusCode": status,
                                               "HTTPHeaders": headers, "RetryAttempts": 0}}
    return http, parsed


def error_answer(params: Mapping[str, Any], code: str, message: str) -> tuple[Any, dict[str, Any]]:
    http, parsed = json_answer(params, 400, {"__type": code, "message": message})
    return http, {"Error": {"Code": code, "Message": message}, "ResponseMetadata": parsed["ResponseMetadata"]}


