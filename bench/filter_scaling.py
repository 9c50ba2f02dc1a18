"""Filter cost per event with 10 stored rules and with 10,000, in the same run: it follows the rules of the
event's source and object, not every rule stored.

    .venv/bin/python bench/filter_scaling.py [--rules 10000] [--events 300]

What is timed: billflow.logic.filter.route_event, the whole of the filter function's work for one CRM
event (read the object's rules, read and write the record's state, evaluate every rule), against moto
DynamoDB. Each event is a new opportunity whose stage changed; the 10 rules of its object watch the stage
but none matches, so no execution is started (starting one is a single Step Functions call, the same with
10 or 10,000 rules). Two rules tables are timed side by side, event after event, so drift hits both alike:
one holding only the 10 rules of the event's object, one holding those 10 and 9,990 rules of other tenants,
sources and objects.

moto answers a Query by sorting and scanning every item of the table; DynamoDB reads only the queried
partition. Left as is, the figures would time moto's emulation, so the timed rounds run with moto's Query
reading the queried partition only (`partition_reads` below). The rule items each event reads (the Query's
ScannedCount, what DynamoDB bills) are counted to show it, and a few events are also timed with moto's own
Query, for reference.

Exit status 1 if the 10,000-rule time exceeds the 10-rule time by more than --max-ratio (default 2).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "layers" / "billflow"), str(ROOT / "src")]

TENANT, SOURCE, OBJECT = "acme", "twenty", "opportunity"
OBJECT_RULES = 10
OTHER_SOURCES = ("twenty", "hubspot", "generic")
OTHER_OBJECTS = ("opportunity", "company", "person", "deal", "quote", "note", "task")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=10_000, help="rules stored in the large table")
    parser.add_argument("--events", type=int, default=300, help="timed events per table")
    parser.add_argument("--reference-events", type=int, default=10, help="events timed with moto's own Query")
    parser.add_argument("--max-ratio", type=float, default=2.0)
    parser.add_argument("--object-rules", type=int, default=1000,
                        help="active rules on the event's own object (0: skip that case)")
    args = parser.parse_args(argv)
    if args.rules < OBJECT_RULES:
        parser.error(f"--rules must be at least {OBJECT_RULES}")

    os.environ.update({
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true", "STATE_MACHINE_ARN": "",
    })
    from moto import mock_aws

    with mock_aws():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from billflow import aws, settings
    from billflow.storage.records import RecordStateStore
    from billflow.storage.rules import RuleStore

    small, large, records = _create_tables()
    settings.get_settings.cache_clear()
    aws.reset_clients()
    small_store, large_store = RuleStore(small), RuleStore(large)
    record_store = RecordStateStore(records)

    started = time.perf_counter()
    for rule in _object_rules():
        small_store.put(rule)
        large_store.put(rule)
    for rule in _other_rules(args.rules - OBJECT_RULES):
        large_store.put(rule)
    print(f"stored {OBJECT_RULES} and {args.rules} rules in {time.perf_counter() - started:.1f} s; "
          f"{OBJECT_RULES} of them on {TENANT}/{SOURCE}/{OBJECT}, the event's object")

    scanned = _ScanCounter()
    with partition_reads(), scanned.installed():
        for _ in range(20):  # warm-up: imports, clients, caches
            _route(small_store, record_store)
            _route(large_store, record_store)
        scanned.reset()
        small_ms, large_ms = _interleaved(args.events, lambda: _route(small_store, record_store),
                                          lambda: _route(large_store, record_store))
        reads = scanned.per_table()
    with scanned.installed():
        scanned.reset()
        raw_small, raw_large = _interleaved(args.reference_events, lambda: _route(small_store, record_store),
                                            lambda: _route(large_store, record_store))
        raw_reads = scanned.per_table()

    median_small, median_large = statistics.median(small_ms), statistics.median(large_ms)
    ratio = median_large / median_small
    print(f"route_event (no execution started), median of {args.events} events per table:")
    print(f"  rule items read per event: {OBJECT_RULES} rules {reads.get(small, 0) / args.events:g}, "
          f"{args.rules} rules {reads.get(large, 0) / args.events:g}")
    print(f"  p90: {OBJECT_RULES} rules {_p90(small_ms):.2f} ms, {args.rules} rules {_p90(large_ms):.2f} ms")
    print(f"  for reference, moto's own Query (sorts and scans the whole table; DynamoDB does not): "
          f"{OBJECT_RULES} rules {statistics.median(raw_small):.2f} ms, "
          f"{args.rules} rules {statistics.median(raw_large):.2f} ms, rule items read per event "
          f"{raw_reads.get(small, 0) / args.reference_events:g} and "
          f"{raw_reads.get(large, 0) / args.reference_events:g}")
    print(f"filter per event: {OBJECT_RULES} rules {median_small:.1f} ms, {args.rules} rules "
          f"{median_large:.1f} ms, ratio {ratio:.2f}")
    failed = ratio > args.max_ratio
    if failed:
        print(f"FAIL: the filter's cost grows with every stored rule (ratio above {args.max_ratio})",
              file=sys.stderr)
    if args.object_rules:
        failed = _same_object(args, small_store, record_store) or failed
    return 1 if failed else 0


def _same_object(args: argparse.Namespace, small_store: Any, record_store: Any) -> bool:
    """The event's own object holding --object-rules active rules, of which the 10 above watch the stage
    (the field the event changed) and the rest watch other fields, against those 10 alone."""
    from billflow.storage.rules import RuleStore

    crowded = RuleStore(_create_rules_table("bench-rules-crowded"))
    for rule in _object_rules():
        crowded.put(rule)
    for n in range(args.object_rules - OBJECT_RULES):
        crowded.put(_rule(f"field-{n}", TENANT, SOURCE, OBJECT, OBJECT_RULES + n, "CUSTOMER",
                          field=f"customField{n % 50}"))
    with partition_reads():
        for _ in range(10):
            _route(small_store, record_store)
            _route(crowded, record_store, considered=args.object_rules)
        alone, crowd = _interleaved(args.events // 2, lambda: _route(small_store, record_store),
                                    lambda: _route(crowded, record_store, considered=args.object_rules))
    ratio = statistics.median(crowd) / statistics.median(alone)
    print(f"same object: {OBJECT_RULES} rules watching the changed field alone {statistics.median(alone):.1f} ms, "
          f"among {args.object_rules} active rules of the object {statistics.median(crowd):.1f} ms, "
          f"ratio {ratio:.2f} (target <= {args.max_ratio})")
    if ratio > args.max_ratio:
        print("FAIL: rules of the event's object that watch fields it did not change still cost", file=sys.stderr)
        return True
    return False


# ------------------------------------------------------------------------------------------- the work
def _route(rule_store: Any, record_store: Any, considered: int = OBJECT_RULES) -> None:
    from billflow.logic.filter import route_event

    outcome = route_event(_event(), rule_store, record_store)
    if outcome.rules_considered != considered or outcome.started or outcome.duplicates:
        raise AssertionError(f"the benchmark's event should meet {OBJECT_RULES} rules and start nothing: "
                             f"{outcome.summary()}")


def _event() -> Any:
    from billflow.models.events import CrmEvent

    record_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    return CrmEvent(
        event_id=f"bench-{record_id}", tenant=TENANT, source=SOURCE, object=OBJECT, action="updated",
        record_id=record_id, changed_fields=["stage"], occurred_at=now, received_at=now,
        record={"id": record_id, "name": "Bench deal", "stage": "PROPOSAL",
                "amount": {"amountMicros": 12_500_000_000, "currencyCode": "USD"}},
    )


def _object_rules() -> Iterator[Any]:
    """The event's object's rules: each watches the stage, none matches the event's stage."""
    for n in range(OBJECT_RULES):
        yield _rule(f"stage-{n}", TENANT, SOURCE, OBJECT, n, f"WON_{n}")


def _other_rules(count: int) -> Iterator[Any]:
    """Rules of other tenants, sources and objects (and of the same tenant's other objects)."""
    combos = [(f"tenant-{t:03d}", s, o) for t in range(200) for s in OTHER_SOURCES for o in OTHER_OBJECTS]
    combos = [c for c in combos if c != (TENANT, SOURCE, OBJECT)]
    combos += [(TENANT, s, o) for s in OTHER_SOURCES for o in OTHER_OBJECTS if (s, o) != (SOURCE, OBJECT)]
    for n in range(count):
        tenant, source, object_name = combos[n % len(combos)]
        yield _rule(f"other-{n}", tenant, source, object_name, n, "CUSTOMER")


def _rule(rule_id: str, tenant: str, source: str, object_name: str, order: int, stage: str,
          field: str = "stage") -> Any:
    from billflow.models.rules import Rule

    return Rule.model_validate({
        "id": rule_id, "tenant": tenant, "source": source, "object": object_name, "order": order,
        "trigger": {"type": "event", "on": "edited"},
        "criteria": [{"field": field, "comparator": "changed_to", "value": stage},
                     {"field": "amount.amountMicros", "comparator": "greater_than", "value": 0}],
        "pattern": "1 AND 2",
        "actions": [{"type": "webhook", "connection": "hook"}],
    })


def _interleaved(count: int, first: Callable[[], None], second: Callable[[], None]) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(count):
        for run, times in ((first, a), (second, b)):
            started = time.perf_counter()
            run()
            times.append((time.perf_counter() - started) * 1000)
    return a, b


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9) - 1]


# ------------------------------------------------------------------------------------------- plumbing
def _create_tables() -> tuple[str, str, str]:
    """Two rules tables and the records table, with template.yaml's own key schemas and indexes."""
    import boto3

    from billflow_local.template import Template

    template = Template.load(ROOT / "template.yaml")
    ddb = boto3.client("dynamodb")
    names = {"small": "bench-rules-10", "large": "bench-rules-many", "records": "bench-records"}
    for name, logical_id in ((names["small"], "RulesTable"), (names["large"], "RulesTable"),
                             (names["records"], "RecordsTable")):
        props = template.resolve(template.properties(logical_id))
        kwargs: dict[str, Any] = {k: props[k] for k in ("AttributeDefinitions", "KeySchema")}
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
                for index in props["GlobalSecondaryIndexes"]
            ]
        ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **kwargs)
    return names["small"], names["large"], names["records"]


def _create_rules_table(name: str) -> str:
    import boto3

    from billflow_local.template import Template

    template = Template.load(ROOT / "template.yaml")
    props = template.resolve(template.properties("RulesTable"))
    kwargs: dict[str, Any] = {k: props[k] for k in ("AttributeDefinitions", "KeySchema")}
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = [
            {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
            for index in props["GlobalSecondaryIndexes"]
        ]
    boto3.client("dynamodb").create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **kwargs)
    return name


@contextmanager
def partition_reads() -> Iterator[None]:
    """moto's Query on a table's key reads the queried partition only, as DynamoDB does."""
    from moto.dynamodb.models.table import Table

    original = Table.query

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None or not self.range_key_attr:
            return original(self, hash_key, *args, **kwargs)
        partition = list(self.items.get(hash_key, {}).values())
        self.all_items = lambda: sorted(partition, key=lambda item: item.range_key)
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query  # type: ignore[method-assign]
    try:
        yield
    finally:
        Table.query = original  # type: ignore[method-assign]


class _ScanCounter:
    """Items each DynamoDB Query read (ScannedCount), per table, from billflow's own client."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def reset(self) -> None:
        self.counts.clear()

    def per_table(self) -> dict[str, int]:
        return dict(self.counts)

    def _after_query(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        table = getattr(self, "_table", "")
        self.counts[table] = self.counts.get(table, 0) + int(parsed.get("ScannedCount", 0))

    def _before_query(self, params: dict[str, Any], **_: Any) -> None:
        self._table = params.get("TableName", "")

    @contextmanager
    def installed(self) -> Iterator[None]:
        from billflow.aws import client

        events = client("dynamodb").meta.events
        events.register("provide-client-params.dynamodb.Query", self._before_query)
        events.register("after-call.dynamodb.Query", self._after_query)
        try:
            yield
        finally:
            events.unregister("provide-client-params.dynamodb.Query", self._before_query)
            events.unregister("after-call.dynamodb.Query", self._after_query)


if __name__ == "__main__":
    sys.exit(main())
