"""What billflow costs on AWS, per 1,000 CRM events that match no rule and per 1,000 invoices (one-action rule).

    .venv/bin/python bench/cost_model.py [--unmatched 10] [--invoices 5] [--rate 1]

Every quantity is counted from a real run on the local runtime (bench/recorded_run.py), priced with
bench/prices.json (us-east-1, with its date):
- Lambda: each handler's measured duration (median per function, warm), scaled to the CPU share Lambda gives
  its configured memory (a full vCPU at 1,769 MB, this machine's core taken as one vCPU; never scaled down),
  billed rounded up to 1 ms, at template.yaml's MemorySize, arm64; plus the request price per call.
- API Gateway HTTP API: one request per webhook (bodies under 512 KB).
- EventBridge: the entries put on the custom bus, one event per 64 KB chunk.
- Step Functions Standard: the state transitions counted in each run's GetExecutionHistory.
- DynamoDB on demand: read and write request units of every call made (billflow's, Powertools', the state
  machine's service integrations), from the items' sizes and the tables' global secondary indexes.
- Secrets Manager: billflow caches each secret per container for SECRETS_CACHE_SECONDS; at a sustained --rate
  of webhooks a second, one warm container per function refetches each secret it reads once per period.
- SNS: publishes counted.

Unmatched events are priced by kind (recorded_run.UNMATCHED_KINDS: an edit of a known deal's other fields, a
stage no rule wants, a deal seen for the first time, another object's change) and as an equal mix of the four.

Targets: at most $0.003 per 1,000 unmatched events (each kind) and $0.20 per 1,000 invoices; exit status 1
over either.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from recorded_run import UNMATCHED_KINDS, Phase, Recording, record  # noqa: E402

PRICES_FILE = HERE / "prices.json"
FULL_VCPU_MB = 1769
UNMATCHED_TARGET = 0.003
INVOICE_TARGET = 0.20
EVENT_CHUNK = 64 * 1024
EXPRESS_MIN_GB = 64 / 1024
EXPRESS_INCREMENT_S = 0.1


def load_prices() -> dict[str, Any]:
    prices: dict[str, Any] = json.loads(PRICES_FILE.read_text())
    return prices


def cpu_factor(memory_mb: int) -> float:
    return max(1.0, FULL_VCPU_MB / memory_mb)


@dataclass
class PathCost:
    """Dollars per delivery, by line, with the counted quantities behind each line."""

    name: str
    lines: dict[str, float] = field(default_factory=dict)
    quantities: dict[str, str] = field(default_factory=dict)

    def add(self, line: str, dollars: float, quantity: str) -> None:
        self.lines[line] = self.lines.get(line, 0.0) + dollars
        self.quantities[line] = quantity

    @property
    def total(self) -> float:
        return sum(self.lines.values())


def secrets_read(recording: Recording) -> dict[str, int]:
    """Distinct secrets each function reads (seen when its container was cold, in the warm-up)."""
    found: dict[str, set[str]] = {}
    for invocation in recording.warm_up.invocations:
        for call in invocation.calls:
            if call.operation == "GetSecretValue":
                found.setdefault(invocation.function, set()).add(str(call.params.get("SecretId")))
    return {function: len(ids) for function, ids in found.items()}


def price_phase(phase: Phase, recording: Recording, prices: dict[str, Any], rate: float,
                cache_seconds: float) -> PathCost:
    cost = PathCost(phase.name)
    n = phase.deliveries
    cost.add("API Gateway HTTP API", prices["http_api_request"], "1 request")
    by_function: dict[str, list[float]] = {}
    for invocation in phase.invocations:
        by_function.setdefault(invocation.function, []).append(invocation.wall_ms)
    for function, walls in sorted(by_function.items()):
        memory = recording.memory_mb[function]
        measured = statistics.median(walls)
        billed_ms = math.ceil(measured * cpu_factor(memory))
        calls = len(walls) / n
        dollars = calls * (billed_ms / 1000 * memory / 1024 * prices["lambda_arm64_gb_second"]
                           + prices["lambda_request"])
        cost.add(f"Lambda {function}", dollars,
                 f"{calls:g} x ({measured:.1f} ms measured -> {billed_ms} ms billed at {memory} MB)")
    entries = [e for c in phase.calls if c.operation == "PutEvents" for e in c.params.get("Entries", [])]
    events = sum(max(1, math.ceil(len(json.dumps(e).encode()) / EVENT_CHUNK)) for e in entries) / n
    cost.add("EventBridge custom events", events * prices["eventbridge_custom_event"], f"{events:g} events")
    transitions = phase.transitions()
    per_delivery = sum(transitions) / n
    cost.add("Step Functions Standard", per_delivery * prices["sfn_standard_transition"],
             f"{per_delivery:g} transitions (counted: {sorted(set(transitions)) or [0]} per run)")
    rru, wru = phase.request_units()
    tables = Counter(c.table for c in phase.calls if c.wru)
    cost.add("DynamoDB reads", rru / n * prices["dynamodb_on_demand_rru"], f"{rru / n:g} RRU")
    cost.add("DynamoDB writes", wru / n * prices["dynamodb_on_demand_wru"],
             f"{wru / n:g} WRU (writes a delivery: {', '.join(f'{t} {k / n:g}' for t, k in sorted(tables.items()))})")
    functions = {i.function for i in phase.invocations}
    secrets = sum(count for function, count in secrets_read(recording).items() if function in functions)
    refetches = secrets / (rate * cache_seconds)  # per delivery: one refetch per secret per cache period
    cost.add("Secrets Manager", refetches * prices["secrets_manager_api_call"],
             f"{refetches:.4f} GetSecretValue ({secrets} secrets cached {cache_seconds:g} s, at {rate:g}/s)")
    publishes = sum(1 for c in phase.calls if c.operation == "Publish") / n
    cost.add("SNS", publishes * prices["sns_publish"], f"{publishes:g} publishes")
    return cost


def express_alternative(phase: Phase, recording: Recording, prices: dict[str, Any]) -> float:
    """Dollars per run if the same run were an Express workflow: one request plus its duration at the
    64 MB minimum in 100 ms increments (the tasks' durations; Express bills the execution's wall time)."""
    tasks = [i for i in phase.invocations if i.function not in ("IngestFunction", "FilterFunction")]
    seconds = sum(i.wall_ms * cpu_factor(recording.memory_mb[i.function]) for i in tasks) / 1000 / phase.deliveries
    billed = math.ceil(seconds / EXPRESS_INCREMENT_S) * EXPRESS_INCREMENT_S
    return float(prices["sfn_express_request"] + EXPRESS_MIN_GB * billed * prices["sfn_express_gb_second"])


def report(cost: PathCost, target: float) -> bool:
    per_1000 = cost.total * 1000
    verdict = "ok" if per_1000 <= target else f"OVER by ${per_1000 - target:.5f}, {per_1000 / target:.2f}x"
    print(f"\nper 1,000 {cost.name}: ${per_1000:.5f}  (target <= ${target:g}: {verdict})")
    for line, dollars in sorted(cost.lines.items(), key=lambda kv: -kv[1]):
        print(f"  {line:<34} ${dollars * 1000:9.5f}  {100 * dollars / cost.total:5.1f}%  {cost.quantities[line]}")
    return per_1000 <= target


def build(unmatched: int, invoices: int, rate: float) -> tuple[Recording, dict[str, Any], PathCost, PathCost]:
    """The recording, the prices, and the cost of an unmatched event (the equal mix of its kinds) and of an
    invoice; the kinds' own costs are price_kinds(recording, prices, rate)."""
    recording = record(unmatched, invoices)
    prices = load_prices()
    return (recording, prices,
            price_phase(recording.unmatched, recording, prices, rate, _cache_seconds()),
            price_phase(recording.invoice, recording, prices, rate, _cache_seconds()))


def price_kinds(recording: Recording, prices: dict[str, Any], rate: float) -> dict[str, PathCost]:
    return {kind: price_phase(phase, recording, prices, rate, _cache_seconds())
            for kind, phase in recording.unmatched_kinds.items()}


def _cache_seconds() -> float:
    from billflow.settings import get_settings

    return float(get_settings().secrets_cache_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unmatched", type=int, default=10, help="webhooks of each kind that match no rule")
    parser.add_argument("--invoices", type=int, default=5, help="won deals invoiced")
    parser.add_argument("--rate", type=float, default=1.0, help="sustained webhooks a second (secret refetches)")
    args = parser.parse_args(argv)

    recording, prices, unmatched, invoice = build(args.unmatched, args.invoices, args.rate)
    kinds = price_kinds(recording, prices, args.rate)
    print(f"prices: {prices['region']}, as of {prices['as_of']} ({PRICES_FILE.name}); measured: "
          f"{args.unmatched} unmatched webhooks of each of {len(kinds)} kinds, {args.invoices} won deals, on the "
          "local runtime")
    ok = True
    for kind, cost in kinds.items():
        cost.name = f"CRM events matching no rule: {UNMATCHED_KINDS[kind]}"
        ok = report(cost, UNMATCHED_TARGET) and ok
    unmatched.name = f"CRM events matching no rule, an equal mix of the {len(kinds)} kinds"
    report(unmatched, UNMATCHED_TARGET)  # shown beside the target; each kind above is what is judged
    invoice.name = "invoices (one-action rule, webhook included)"
    ok = report(invoice, INVOICE_TARGET) and ok

    remembered = [kind for kind, cost in kinds.items() if cost.total * 1000 > UNMATCHED_TARGET
                  and any(c.wru for c in recording.unmatched_kinds[kind].calls)]
    if remembered:
        fixed = {"API Gateway HTTP API": prices["http_api_request"],
                 "EventBridge custom events": prices["eventbridge_custom_event"],
                 "two Lambda requests (ingest, filter)": 2 * prices["lambda_request"],
                 "one record-state write (1 WRU)": prices["dynamodb_on_demand_wru"]}
        floor = sum(fixed.values()) * 1000
        print(f"\nAn event billflow must remember ({', '.join(remembered)}: a watched field's change, a first "
              f"sight, kept so that out-of-order deliveries decide the same transitions) has a floor of "
              f"${floor:.6f} per 1,000 at these prices before any duration or read ("
              + ", ".join(f"{k} ${v * 1000:.6f}" for k, v in fixed.items()) + "): "
              + ("above the target whatever the handlers do; only fewer requests could meet it"
                 if floor > UNMATCHED_TARGET else f"${UNMATCHED_TARGET - floor:.6f} left for durations and reads"))

    sfn = invoice.lines["Step Functions Standard"] * 1000
    if invoice.total * 1000 > INVOICE_TARGET and sfn > 0:
        transitions = sum(recording.invoice.transitions()) / recording.invoice.deliveries
        rest = invoice.total * 1000 - sfn
        allowed = max(0.0, (INVOICE_TARGET - rest) / 1000 / prices["sfn_standard_transition"])
        express = express_alternative(recording.invoice, recording, prices) * 1000
        print(f"\nStandard transitions are ${sfn:.4f} of the ${invoice.total * 1000:.4f} per 1,000 invoices: "
              f"{transitions:g} a run, the target allows {math.floor(allowed)}. The same run as an Express "
              f"workflow would cost ${express:.4f} per 1,000 (plus one conditional DynamoDB write, "
              f"${prices['dynamodb_on_demand_wru'] * 1000:.5f}, to keep one run per transition: Express does "
              "not refuse a second execution of the same name).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
