"""A real run of billflow on the local runtime, recorded for the cost model and the cold-start benchmark.

What is recorded, per phase (CRM events that match no rule, of each kind in UNMATCHED_KINDS; won deals invoiced
by a one-action rule):
- every handler call: function, event, wall time, thread CPU time, the AWS calls it made;
- every AWS API call made by anyone (billflow's clients, Powertools', moto's Step Functions engine for the
  state machine's service integrations), by class-level instrumentation of botocore's BaseClient, with
  DynamoDB read and write request units computed from the items' sizes (DynamoDB's rules: writes in 1 KB
  units per item and per global secondary index the item is in, reads in 4 KB units, halved when eventually
  consistent; a refused conditional write still costs its write units);
- every execution's history (GetExecutionHistory), to count its state transitions.

The stack is the one a user runs: LocalRuntime from template.yaml, with local stand-ins for Twenty and
Stripe (tests/fakes), signed Twenty webhooks posted over HTTP.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "layers" / "billflow", ROOT / "src", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

TENANT = "acme"
SIGNING_SECRET = "bench-twenty-signing-secret"  # noqa: S105 - a local benchmark's own stand-in
WRITE_OPS = {"PutItem", "UpdateItem", "DeleteItem"}
READ_OPS = {"GetItem", "Query", "Scan"}

# The one-action rule priced per invoice: a won opportunity becomes a Stripe invoice, its id written back.
ONE_ACTION_RULE: dict[str, Any] = {
    "id": "won-to-stripe", "name": "Invoice won opportunities in Stripe", "source": "twenty",
    "object": "opportunity", "active": True, "order": 10,
    "trigger": {"type": "event", "on": "edited", "when": "every_edit"},
    "criteria": [{"field": "stage", "comparator": "changed_to", "value": "CUSTOMER"},
                 {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0}],
    "pattern": "1 AND 2",
    "actions": [{"type": "stripe.invoice", "connection": "stripe-main", "write_back_field": "invoiceId",
                 "options": {"days_until_due": 30, "description": "{{ record.name }}"}}],
}


def start_standins() -> tuple[Any, Any]:
    """The Stripe and Twenty stand-ins the one-action rule invoices against, started: Twenty with the sample
    workspace and the opportunity's write-back field (invoiceId)."""
    from tests.fakes.stripe_server import FakeStripe
    from tests.fakes.twenty_server import FakeTwenty, load_sample_workspace

    stripe = FakeStripe().start()
    twenty = FakeTwenty(custom_fields={"opportunity": {"invoiceId": {"type": "string"}}}).start()
    twenty.seed(load_sample_workspace())
    return stripe, twenty


def tenant_connections(twenty: dict[str, Any], stripe_url: str, stripe_key: str) -> dict[str, Any]:
    """The local runtime's connections for TENANT: Twenty's webhook source, the Twenty and Stripe connections
    (`twenty`: the stand-in's connection settings) and a daily invoice limit no benchmark reaches."""
    return {"tenants": {TENANT: {
        "sources": {"twenty": {"signing_secret": SIGNING_SECRET}},
        "connections": {"twenty": twenty,
                        "stripe-main": {"type": "stripe", "base_url": stripe_url, "api_key": stripe_key}},
        "settings": {"daily_limits": {"invoice": 100_000}},
    }}}


# The CRM events that match no rule, by kind: what each costs differs by what billflow must remember of it.
UNMATCHED_KINDS: dict[str, str] = {
    "edit": "an edit of a known opportunity that changes no field a rule reads (Twenty: closeDate)",
    "stage": "a known opportunity moved to a stage no rule wants (its stage must be remembered)",
    "new": "a new opportunity, seen for the first time (its fields must be remembered)",
    "other": "a change of an object no rule is about (Twenty: person.updated)",
}


@dataclass
class AwsCall:
    service: str
    operation: str
    params: dict[str, Any]
    rru: float = 0.0
    wru: float = 0.0
    table: str = ""
    failed: str = ""
    read_bytes: int = 0
    read_items: int = 0


@dataclass
class Invocation:
    function: str
    event: Any
    wall_ms: float
    cpu_ms: float
    calls: list[AwsCall] = field(default_factory=list)


@dataclass
class Phase:
    name: str
    deliveries: int = 0
    invocations: list[Invocation] = field(default_factory=list)
    calls: list[AwsCall] = field(default_factory=list)
    histories: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def per_delivery(self, count: float) -> float:
        return count / self.deliveries if self.deliveries else 0.0

    def call_counts(self) -> Counter[tuple[str, str]]:
        return Counter((c.service, c.operation) for c in self.calls)

    def request_units(self) -> tuple[float, float]:
        return sum(c.rru for c in self.calls), sum(c.wru for c in self.calls)

    def transitions(self) -> list[int]:
        return [state_transitions(h) for h in self.histories.values()]

    @classmethod
    def together(cls, name: str, phases: list[Phase]) -> Phase:
        """The phases as one: an equal share of each."""
        return cls(name, sum(p.deliveries for p in phases), [i for p in phases for i in p.invocations],
                   [c for p in phases for c in p.calls], {k: h for p in phases for k, h in p.histories.items()})


def state_transitions(history: list[dict[str, Any]]) -> int:
    """Billed state transitions of one execution: one per state entered, plus one per retried attempt (a
    Task scheduled again without entering its state again)."""
    entered = sum(1 for e in history if e["type"].endswith("StateEntered"))
    scheduled = sum(1 for e in history if e["type"] in ("LambdaFunctionScheduled", "TaskScheduled"))
    task_states = sum(1 for e in history if e["type"] == "TaskStateEntered")
    return entered + max(0, scheduled - task_states)


# ------------------------------------------------------------------------------------- instrumentation
class Recorder:
    """Class-level hooks on botocore's client and the local runtime's FunctionHost, on while `installed`."""

    def __init__(self) -> None:
        self.phase = Phase("warm-up")
        self.first_invocations: dict[str, Invocation] = {}  # each function's cold call, with its AWS calls
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[None]:
        from botocore.client import BaseClient

        from billflow_local.lambdas import FunctionHost

        original_call, original_invoke = BaseClient._make_api_call, FunctionHost.invoke
        recorder = self

        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            return recorder._api_call(original_call, client, operation, params)

        def invoke(host: Any, function: str, event: Any, handler: Any = None) -> Any:
            return recorder._invoke(original_invoke, host, function, event, handler)

        BaseClient._make_api_call = make_api_call  # type: ignore[method-assign]
        FunctionHost.invoke = invoke  # type: ignore[method-assign]
        try:
            yield
        finally:
            BaseClient._make_api_call = original_call  # type: ignore[method-assign]
            FunctionHost.invoke = original_invoke  # type: ignore[method-assign]

    def _invoke(self, original: Any, host: Any, function: str, event: Any, handler: Any) -> Any:
        spec = host.spec_for(function)
        name = spec.logical_id if spec is not None else function
        outer = getattr(self._local, "invocation", None)
        invocation = Invocation(name, copy.deepcopy(event), 0.0, 0.0)
        self._local.invocation = invocation
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return original(host, function, event, handler)
        finally:
            invocation.wall_ms = (time.perf_counter() - wall) * 1000
            invocation.cpu_ms = (time.thread_time() - cpu) * 1000
            self._local.invocation = outer
            with self._lock:
                self.phase.invocations.append(invocation)
                self.first_invocations.setdefault(name, invocation)

    def _api_call(self, original: Any, client: Any, operation: str, params: dict[str, Any]) -> Any:
        service = client.meta.service_model.service_name
        call = AwsCall(service, operation, copy.deepcopy(params))
        before = _item_sizes(operation, params) if service == "dynamodb" else {}
        try:
            result = original(client, operation, params)
        except Exception as exc:
            call.failed = type(exc).__name__
            raise
        else:
            if service == "dynamodb":
                _count_reads(call, operation, params, result)
            return result
        finally:
            if service == "dynamodb" and operation in WRITE_OPS:
                _count_writes(call, operation, params, before)
            invocation = getattr(self._local, "invocation", None)
            if invocation is not None or not _bookkeeping(service, operation):
                with self._lock:
                    self.phase.calls.append(call)
                    if invocation is not None:
                        invocation.calls.append(call)


def _bookkeeping(service: str, operation: str) -> bool:
    """Calls outside any handler that AWS would not bill billflow for: the local runtime watching its
    executions and local queues, and the state machine's Lambda calls (priced as invocations)."""
    return service in ("sqs", "lambda") or (
        service == "stepfunctions" and operation.startswith(("List", "Describe", "GetExecutionHistory")))


def _moto_table(name: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    from billflow_local.template import ACCOUNT_ID, REGION

    return dynamodb_backends[ACCOUNT_ID][REGION].get_table(name)


def _stored_item(table: Any, key: dict[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_value = key.get(table.hash_key_attr)
    range_value = key.get(table.range_key_attr) if table.range_key_attr else None
    if hash_value is None:
        return None
    try:
        return table.get_item(DynamoType(hash_value), DynamoType(range_value) if range_value else None)
    except Exception:  # a key moto cannot read costs what a missing item costs
        return None


def _item_sizes(operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """The stored item a write will replace (its size and GSI keys), read from moto before the call."""
    if operation not in WRITE_OPS:
        return {}
    table = _moto_table(params["TableName"])
    key = params.get("Key") or {a: params["Item"][a] for a in (table.hash_key_attr, table.range_key_attr)
                                if a and a in params.get("Item", {})}
    item = _stored_item(table, key)
    return {"key": key, "size": item.size() if item else 0, "attrs": set(item.attrs) if item else set()}


def _count_writes(call: AwsCall, operation: str, params: dict[str, Any], before: dict[str, Any]) -> None:
    table = _moto_table(params["TableName"])
    after = _stored_item(table, before.get("key", {}))
    size = max(before.get("size", 0), after.size() if after else 0)
    units = max(1, math.ceil(size / 1024))
    attrs = before.get("attrs", set()) | (set(after.attrs) if after else set())
    indexed = sum(1 for index in table.global_indexes
                  if all(k["AttributeName"] in attrs for k in index.schema))
    call.table = params["TableName"]
    call.wru = units * (1 + indexed) if not call.failed else units


def _typed_size(value: dict[str, Any]) -> int:
    from moto.dynamodb.models.dynamo_type import DynamoType

    return sum(len(k.encode()) + DynamoType(v).size() for k, v in value.items())


def _count_reads(call: AwsCall, operation: str, params: dict[str, Any], result: dict[str, Any]) -> None:
    if operation not in READ_OPS:
        return
    call.table = params.get("TableName", "")
    consistent = bool(params.get("ConsistentRead")) and not params.get("IndexName")
    items = [result["Item"]] if result.get("Item") else list(result.get("Items") or [])
    size = sum(_typed_size(item) for item in items)
    call.read_bytes, call.read_items = size, len(items)
    call.rru = max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


# ------------------------------------------------------------------------------------- the run
@dataclass
class Recording:
    warm_up: Phase
    unmatched: Phase  # every kind of unmatched_kinds, an equal share of each
    invoice: Phase
    ingest_event: dict[str, Any]
    admin_event: dict[str, Any]
    memory_mb: dict[str, int]
    table_names: dict[str, str]
    target_calls: dict[str, float]  # HTTP requests to each stand-in per invoice (Stripe, the CRM)
    first_invocations: dict[str, Invocation]  # every function's first (cold) call in the run
    unmatched_kinds: dict[str, Phase]  # by UNMATCHED_KINDS


def record(unmatched: int = 10, invoices: int = 5,
           while_running: Callable[[Recording, Any], None] | None = None) -> Recording:
    """Post `unmatched` webhooks of each kind that matches no rule, then `invoices` won deals, one at a time
    (each handler's duration is then its own, not a queue's), after a warm-up of one of each (cold handlers
    excluded); then one admin API call, one scheduler run and one due sweep. `while_running(recording,
    runtime)` runs before the stack stops."""
    from billflow.models.rules import Rule

    from billflow_local.runtime import LocalRuntime

    stripe, twenty = start_standins()
    connections = tenant_connections(twenty.connection_settings(), stripe.url, stripe.api_key)
    recorder = Recorder()
    runtime = None
    try:
        with recorder.installed():  # first: the runtime's server binds FunctionHost.invoke when built
            runtime = LocalRuntime(ROOT, port=0, connections=connections, tenant=TENANT, echo=None,
                                   fast_retries=True, log_level="WARNING")
            runtime.start()
            runtime.put_rules([Rule.model_validate({**ONE_ACTION_RULE, "tenant": TENANT})])
            stack = _Stack(runtime, twenty)
            warm_up = recorder.phase
            stack.deliver("opportunity-stage-proposal")  # warm-up: every handler loaded once
            stack.deliver("opportunity-won")
            known = [stack.deliver("opportunity-stage-proposal") for _ in range(unmatched)]  # seen before
            kinds: dict[str, Phase] = {}
            for kind in UNMATCHED_KINDS:
                recorder.phase = kinds[kind] = Phase(f"unmatched: {kind}")
                for i in range(unmatched):
                    stack.deliver_unmatched(kind, known[i])
                    kinds[kind].deliveries += 1
            unmatched_phase = Phase.together("unmatched", list(kinds.values()))
            recorder.phase = invoice_phase = Phase("invoice")
            stack.won_records.clear()
            before = {"stripe": len(stripe.requests), "twenty": len(twenty.requests)}
            for _ in range(invoices):
                stack.deliver("opportunity-won")
                invoice_phase.deliveries += 1
            target_calls = {"stripe": (len(stripe.requests) - before["stripe"]) / invoices,
                            "twenty": (len(twenty.requests) - before["twenty"]) / invoices}
            recorder.phase = Phase("admin")
            _get(f"{runtime.url}/admin/tenants/{TENANT}/rules")
            admin_phase = recorder.phase
            recorder.phase = Phase("scheduler")
            runtime.invoke("SchedulerFunction", scheduled_event())
            recorder.phase = Phase("sweep")
            runtime.invoke("SweepFunction", {"kind": "due", "time": scheduled_event()["time"]})  # its schedule's input
        for execution in runtime.executions():
            record_id = ((execution["input"] or {}).get("event") or {}).get("record_id")
            if record_id in stack.won_records:
                invoice_phase.histories[execution["name"]] = runtime.history(execution["name"])
        if len(stripe.invoices) != invoices + 1:
            raise AssertionError(f"expected {invoices + 1} Stripe invoices, the stand-in holds {len(stripe.invoices)}")
        unstarted = [i for i in unmatched_phase.invocations if i.function == "FilterFunction"]
        if (len(unstarted) != unmatched_phase.deliveries
                or any(c.operation == "StartExecution" for c in unmatched_phase.calls)):
            raise AssertionError("the unmatched events should reach the filter and start nothing")
        memory = {spec.logical_id: spec.memory_mb for spec in runtime.functions.specs.values()}
        tables = {logical_id: runtime.name_of(logical_id)
                  for logical_id in runtime.template.resources_of_type("AWS::DynamoDB::Table")}
        ingest_event = next(i.event for i in invoice_phase.invocations if i.function == "IngestFunction")
        admin_event = next(i.event for i in admin_phase.invocations if i.function == "AdminFunction")
        recording = Recording(warm_up, unmatched_phase, invoice_phase, ingest_event, admin_event, memory, tables,
                              target_calls, dict(recorder.first_invocations), kinds)
        if while_running is not None:
            while_running(recording, runtime)
        return recording
    finally:
        if runtime is not None:
            runtime.stop()
        stripe.stop()
        twenty.stop()


class _Stack:
    def __init__(self, runtime: Any, twenty: Any) -> None:
        self.runtime, self.twenty = runtime, twenty
        self.won_records: set[str] = set()

    def deliver(self, sample: str) -> dict[str, Any]:
        """A new opportunity in the Twenty stand-in and Twenty's webhook `sample` about it; the record."""
        from tests.fakes.signing import twenty_event

        event = twenty_event(sample)
        record = event["record"]
        record["id"] = str(uuid.uuid4())
        self.twenty.add_record("opportunity", dict(record))
        self._post(event)
        if sample == "opportunity-won":
            self.won_records.add(record["id"])
        return dict(record)

    def deliver_unmatched(self, kind: str, known: dict[str, Any]) -> None:
        """A webhook of that kind (UNMATCHED_KINDS); `known`: an opportunity delivered before."""
        from tests.fakes.signing import twenty_event

        if kind == "new":
            self.deliver("opportunity-stage-proposal")
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if kind == "other":
            person = twenty_event("person-updated")
            person["record"].update(jobTitle=f"Buyer {uuid.uuid4().hex[:6]}", updatedAt=now)
            self._post({**person, "eventDate": now})
            return
        changed = {"edit": {"closeDate": now[:10] + "T00:00:00.000Z"}, "stage": {"stage": "MEETING"}}[kind]
        known.update(changed, updatedAt=now)
        event = {**twenty_event("opportunity-stage-proposal"), "eventDate": now, "record": dict(known),
                 "updatedFields": sorted(changed)}
        self._post(event)

    def _post(self, event: dict[str, Any]) -> None:
        from tests.fakes.signing import signed_twenty_delivery

        headers, body = signed_twenty_delivery(SIGNING_SECRET, event)
        request = urllib.request.Request(f"{self.runtime.url}/webhooks/{TENANT}/twenty", data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(request, timeout=30) as resp:
            if resp.status != 202:
                raise AssertionError(f"webhook answered {resp.status}")
        self.runtime.wait_idle(60)


def scheduled_event() -> dict[str, Any]:
    """What an EventBridge schedule delivers to its target, fired now."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": now, "region": "us-east-1", "resources": [], "detail": {}}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def summary_by_function(phase: Phase) -> dict[str, list[Invocation]]:
    found: dict[str, list[Invocation]] = defaultdict(list)
    for invocation in phase.invocations:
        found[invocation.function].append(invocation)
    return dict(found)


if __name__ == "__main__":
    rec = record(5, 2)
    for phase in (*rec.unmatched_kinds.values(), rec.invoice):
        print(phase.name, phase.deliveries, dict(phase.call_counts()), phase.request_units(), phase.transitions())
        for name, calls in summary_by_function(phase).items():
            print(f"  {name}: {len(calls)} calls, wall {[round(c.wall_ms, 1) for c in calls]}")
            for c in calls[0].calls:
                print(f"      {c.service} {c.operation} {c.table} rru={c.rru} wru={c.wru} {c.failed}")
        outside = [c for c in phase.calls if not any(c in i.calls for i in phase.invocations)]
        for c in outside[:8]:
            print(f"    outside: {c.service} {c.operation} {c.table} rru={c.rru} wru={c.wru} {c.failed}")
