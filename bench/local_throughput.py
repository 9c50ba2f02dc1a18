"""Local runtime throughput: invoices a second under load, one webhook's latency, and where the CPU goes.

    .venv/bin/python bench/local_throughput.py [--deals 100] [--copies 10] [--clients 32] [--singles 10]

The stack a user runs (LocalRuntime from template.yaml, the real ASL on moto's Step Functions engine, the
handlers in-process) with the Stripe and Twenty stand-ins, the one-action rule of the cost model (a won
opportunity becomes a Stripe invoice, its id written back to Twenty).

- single: one won deal at a time (after a warm-up), from the POST to its invoice at the Stripe stand-in:
  the p50 of --singles. Target: within 1 s.
- load: --deals distinct won deals, each delivered --copies times (the same signed webhook, as a CRM
  retrying), shuffled, posted by --clients concurrent clients. Throughput: invoices at the stand-in a
  second, from the first POST to the last invoice (and over the middle 80%, the sustained rate). Each deal
  must be invoiced exactly once. Target: at least 10 a second.
- split: the runtime process's CPU during the load, by what was running (exclusive of what it called): the
  handlers' own code, DynamoDB calls (botocore + moto's backend), other AWS calls (EventBridge, Step
  Functions API, Secrets Manager, Lambda Invoke plumbing), moto's Step Functions engine (its execution
  threads), and the rest (HTTP server, bus). Python runs one thread at a time (GIL), so CPU seconds per
  invoice bound the rate: 1 / (engine CPU per invoice) is the most moto's engine alone would allow.

The stand-ins (Stripe, Twenty) and the load's clients run in processes of their own, as Stripe and the CRM
are not in the process of the runtime a user starts: they no longer take the runtime's GIL. Their CPU is
printed beside the split.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import queue
import random
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from recorded_run import (  # noqa: E402
    ONE_ACTION_RULE,
    ROOT,
    SIGNING_SECRET,
    TENANT,
    start_standins,
    tenant_connections,
)

THROUGHPUT_TARGET = 10.0
LATENCY_TARGET_S = 1.0
CATEGORIES = ("handlers", "dynamodb", "other AWS calls", "Step Functions engine", "bus deliveries",
              "HTTP API server", "rest")
# The category of a thread's own code, by the module of what it runs (ThreadCpu.kind).
THREAD_CATEGORIES = {"moto": "Step Functions engine", "concurrent": "bus deliveries", "uvicorn": "HTTP API server"}


class CpuSplit:
    """Thread CPU time by category, exclusive: entering a nested category pauses the one it interrupts."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counting = False
        self._local = threading.local()

    @contextmanager
    def inside(self, category: str) -> Iterator[None]:
        stack: list[list[Any]] = self._local.__dict__.setdefault("stack", [])
        now = time.thread_time()
        if stack:
            self._add(stack[-1][0], now - stack[-1][1])
        stack.append([category, now])
        try:
            yield
        finally:
            now = time.thread_time()
            top = stack.pop()
            self._add(top[0], now - top[1])
            if stack:
                stack[-1][1] = now

    def _add(self, category: str, seconds: float) -> None:
        if self.counting:
            self.seconds[category] += seconds  # a float add under the GIL: no lock needed for a tally

    @contextmanager
    def installed(self) -> Iterator[None]:
        from botocore.client import BaseClient

        from billflow_local.lambdas import FunctionHost

        split = self
        originals: list[tuple[Any, str, Any]] = []

        def wrap(owner: Any, name: str, category: Callable[..., str]) -> None:
            original = getattr(owner, name)
            originals.append((owner, name, original))

            def wrapped(*args: Any, **kwargs: Any) -> Any:
                with split.inside(category(*args)):
                    return original(*args, **kwargs)

            setattr(owner, name, wrapped)

        wrap(FunctionHost, "invoke", lambda *a: "handlers")
        wrap(BaseClient, "_make_api_call",
             lambda client, *a: "dynamodb" if client.meta.service_model.service_name == "dynamodb"
             else "other AWS calls")
        try:
            yield
        finally:
            for owner, name, original in reversed(originals):
                setattr(owner, name, original)


class ThreadCpu:
    """CPU seconds by kind of thread (its target's name) during a window: threads alive at both ends read
    through their CPU clocks; threads that start or end inside it add their own time when they end."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counting = False
        self._start: dict[threading.Thread, tuple[str, float]] = {}

    @staticmethod
    def kind(thread: threading.Thread) -> str:
        target = getattr(thread, "_target", None)
        name = getattr(target, "__qualname__", None) or type(thread).__name__
        module = getattr(target, "__module__", "") or type(thread).__module__
        return f"{module.split('.')[0]}:{name}"

    @staticmethod
    def _clock(thread: threading.Thread) -> float | None:
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))
        except (OSError, ValueError, OverflowError):
            return None

    def begin(self) -> None:
        self._start = {}
        for thread in threading.enumerate():
            value = self._clock(thread)
            if value is not None:
                self._start[thread] = (self.kind(thread), value)
        self.counting = True

    def end(self) -> None:
        self.counting = False
        for thread in threading.enumerate():
            value = self._clock(thread)
            if value is None:
                continue
            kind, before = self._start.get(thread, (self.kind(thread), 0.0))  # 0: born inside
            self.seconds[kind] += value - before

    @contextmanager
    def installed(self, split: CpuSplit) -> Iterator[None]:
        original = threading.Thread.run
        tally = self

        def run(thread: threading.Thread) -> None:
            kind = tally.kind(thread)  # before run() drops its target
            try:
                with split.inside(THREAD_CATEGORIES.get(kind.split(":")[0], "rest")):
                    original(thread)
            finally:
                if tally.counting:  # ended inside the window: its time since the window began (or since birth)
                    kind, before = tally._start.get(thread, (kind, 0.0))
                    tally.seconds[kind] += time.thread_time() - before

        threading.Thread.run = run  # type: ignore[method-assign]
        try:
            yield
        finally:
            threading.Thread.run = original  # type: ignore[method-assign]


def _serve_standins(pipe: Any) -> None:
    """The child process of the stand-ins: Stripe and Twenty on 127.0.0.1, driven over `pipe`."""
    stripe, twenty = start_standins()
    pipe.send({"stripe": {"url": stripe.url, "api_key": stripe.api_key}, "twenty": twenty.connection_settings()})

    def invoices() -> int:
        return len(stripe.invoices)

    def arrivals(before: int, count: int, timeout: float) -> list[float]:
        """When each of the `count` invoices after the first `before` arrived (perf_counter: CLOCK_MONOTONIC,
        one clock for every process of the machine); polled every 2 ms, here, not in the runtime's process."""
        found, deadline = [], time.perf_counter() + timeout
        while len(found) < count:
            seen = invoices() - before
            while len(found) < min(seen, count):
                found.append(time.perf_counter())
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(found)} of {count} invoices within {timeout:g} s")
            time.sleep(0.002)
        return found

    commands: dict[str, Callable[..., Any]] = {
        "add_record": twenty.add_record, "invoices": invoices, "arrivals": arrivals, "cpu": time.process_time}
    try:
        while True:
            command, args = pipe.recv()
            if command == "stop":
                break
            try:
                pipe.send(("ok", commands[command](*args)))
            except Exception as exc:
                pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        stripe.stop()
        twenty.stop()
        pipe.send(("ok", None))


class StandIns:
    """The Stripe and Twenty stand-ins in a process of their own (spawned: the runtime's threads are not
    forked with it), driven over a pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve_standins, args=(child,), daemon=True)
        self._process.start()
        self.settings: dict[str, Any] = self._pipe.recv()
        self._lock = threading.Lock()

    def call(self, command: str, *args: Any) -> Any:
        with self._lock:
            self._pipe.send((command, args))
            status, value = self._pipe.recv()
        if status != "ok":
            raise RuntimeError(f"stand-ins: {value}")
        return value

    def stop(self) -> None:
        self.call("stop")
        self._process.join(10)


class Stack:
    def __init__(self) -> None:
        from billflow.models.rules import Rule

        from billflow_local.runtime import LocalRuntime

        self.standins = StandIns()
        stripe = self.standins.settings["stripe"]
        # A self-hosted Twenty with its API_RATE_LIMITING raised: this measures billflow, not Twenty Cloud's 100
        # calls a minute per API key, which alone would hold one workspace to about 100 invoices a minute
        # (Lookup searches the company's people once a run; runs past it wait: WaitForCrm).
        twenty = {**self.standins.settings["twenty"], "rate_limit_per_minute": 100_000}
        connections = tenant_connections(twenty, stripe["url"], stripe["api_key"])
        self.runtime = LocalRuntime(ROOT, port=0, connections=connections, tenant=TENANT, echo=None,
                                    fast_retries=True, log_level="WARNING")
        self.runtime.start()
        self.runtime.put_rules([Rule.model_validate({**ONE_ACTION_RULE, "tenant": TENANT})])
        self.port = int(self.runtime.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.runtime.stop()
        self.standins.stop()

    def won_deal(self) -> tuple[str, bytes]:
        """A new opportunity in the Twenty stand-in and the webhook saying it was won (unsigned body)."""
        import json

        from tests.fakes.signing import twenty_event

        event = twenty_event("opportunity-won")
        event["record"]["id"] = str(uuid.uuid4())
        self.standins.call("add_record", "opportunity", dict(event["record"]))
        return event["record"]["id"], json.dumps(event).encode()

    def invoices(self) -> int:
        return int(self.standins.call("invoices"))


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    """One signed delivery of a Twenty webhook; anything but 202 raises."""
    from tests.fakes.signing import twenty_headers

    headers = {"Content-Type": "application/json", **twenty_headers(SIGNING_SECRET, body)}
    conn.request("POST", f"/webhooks/{TENANT}/twenty", body=body, headers=headers)
    answer = conn.getresponse()
    answer.read()
    if answer.status != 202:
        raise AssertionError(f"webhook answered {answer.status}")


def single_latencies(stack: Stack, count: int) -> list[float]:
    """POST to invoice at the stand-in, one deal at a time."""
    found = []
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
    for _ in range(count):
        _, body = stack.won_deal()
        before = stack.invoices()
        started = time.perf_counter()
        post(conn, body)
        [arrived] = stack.standins.call("arrivals", before, 1, 30.0)
        found.append(arrived - started)
        stack.runtime.wait_idle(30)  # its write-back and log done: the next one starts on a quiet stack
    conn.close()
    return found


def _post_deliveries(port: int, deliveries: list[bytes], clients: int, ready: Any, go: Any, results: Any) -> None:
    """The load's clients, in a process of their own: `clients` threads posting `deliveries` in order, each
    on its own connection, from when `go` is set. Puts (errors, when the last was answered, its CPU)."""
    import tests.fakes.signing  # noqa: F401 - once, before the threads: their first imports of it would race

    work: queue.Queue[bytes] = queue.Queue()
    for body in deliveries:
        work.put(body)
    errors: list[str] = []
    answered_at: list[float] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        go.wait()
        while True:
            try:
                body = work.get_nowait()
            except queue.Empty:
                break
            try:
                post(conn, body)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        answered_at.append(time.perf_counter())
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    cpu = time.process_time()
    ready.set()
    for thread in threads:
        thread.join()
    results.put((errors, max(answered_at, default=0.0), time.process_time() - cpu))


def load(stack: Stack, deals: int, copies: int, clients: int, split: CpuSplit, threads_cpu: ThreadCpu
         ) -> dict[str, Any]:
    bodies = [stack.won_deal()[1] for _ in range(deals)]
    deliveries = [body for body in bodies for _ in range(copies)]
    random.Random(10).shuffle(deliveries)
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Event(), context.Event(), context.Queue()
    posting = context.Process(target=_post_deliveries, args=(stack.port, deliveries, clients, ready, go, results),
                              daemon=True)
    posting.start()
    if not ready.wait(60):
        raise TimeoutError("the load's clients did not start")
    before = stack.invoices()
    standins_cpu = stack.standins.call("cpu")
    cpu_before = time.process_time()
    split.counting = True
    threads_cpu.begin()
    started = time.perf_counter()
    go.set()
    arrived = stack.standins.call("arrivals", before, deals, 600.0)
    split.counting = False
    threads_cpu.end()
    cpu = time.process_time() - cpu_before
    standins_cpu = stack.standins.call("cpu") - standins_cpu
    errors, last_answered, clients_cpu = results.get(timeout=120)
    posting.join(10)
    arrivals = [t - started for t in arrived]
    answered = last_answered - started if last_answered else 0.0
    stack.runtime.wait_idle(120)
    low, high = arrivals[deals // 10], arrivals[deals - 1 - deals // 10]
    quarters = [arrivals[min(deals - 1, deals * q // 4)] for q in range(5)]
    return {"seconds": arrivals[-1], "rate": deals / arrivals[-1],
            "sustained": (deals - 1 - 2 * (deals // 10)) / (high - low) if high > low else float("nan"),
            "errors": errors, "cpu": cpu, "answered": answered, "quarters": quarters,
            "invoiced": stack.invoices() - before, "standins_cpu": standins_cpu, "clients_cpu": clients_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--singles", type=int, default=10)
    args = parser.parse_args(argv)

    split, threads_cpu = CpuSplit(), ThreadCpu()
    with split.installed(), threads_cpu.installed(split):
        stack = Stack()
        try:
            single_latencies(stack, 2)  # warm-up: every handler imported, every cache filled
            singles = single_latencies(stack, args.singles)
            result = load(stack, args.deals, args.copies, args.clients, split, threads_cpu)
            executions = stack.runtime.executions()
        finally:
            stack.stop()

    p50 = statistics.median(singles)
    print(f"one webhook to its invoice at the Stripe stand-in: p50 {p50 * 1000:.0f} ms, "
          f"max {max(singles) * 1000:.0f} ms over {len(singles)} (target p50 <= {LATENCY_TARGET_S:g} s: "
          f"{'ok' if p50 <= LATENCY_TARGET_S else 'OVER'})")
    print(f"load: {args.deals} won deals x {args.copies} deliveries, shuffled, {args.clients} clients: "
          f"{result['invoiced']} invoices in {result['seconds']:.1f} s = {result['rate']:.1f} invoices/s "
          f"(middle 80%: {result['sustained']:.1f}/s; target >= {THROUGHPUT_TARGET:g}/s: "
          f"{'ok' if result['rate'] >= THROUGHPUT_TARGET else 'OVER'}); webhook errors: {len(result['errors'])}")
    print(f"  every webhook answered {result['answered']:.1f} s after the first POST; invoices 1, 25%, 50%, 75%, "
          f"100% at " + ", ".join(f"{t:.1f}" for t in result["quarters"]) + " s")
    succeeded = sum(1 for e in executions if e["status"] == "SUCCEEDED")
    print(f"  executions: {len(executions)} ({succeeded} succeeded); each deal invoiced once: "
          f"{result['invoiced'] == args.deals}")
    total = result["cpu"]
    counted = sum(split.seconds.values())
    seconds = dict(split.seconds)
    seconds["rest"] = seconds.get("rest", 0.0) + max(0.0, total - counted)
    print(f"  runtime process CPU during the load: {total:.1f} s = {total / args.deals * 1000:.0f} ms per invoice "
          f"(one core's worth at most is usable: the GIL), by what ran (exclusive):")
    for category in CATEGORIES:
        value = seconds.get(category, 0.0)
        print(f"    {category:<24}{value:7.2f} s  {100 * value / total:5.1f}%  "
              f"{value / args.deals * 1000:6.1f} ms/invoice")
    print(f"  outside the runtime's process (not in its GIL): stand-ins {result['standins_cpu']:.2f} s "
          f"({result['standins_cpu'] / args.deals * 1000:.1f} ms/invoice), load clients {result['clients_cpu']:.2f} s "
          f"({result['clients_cpu'] / args.deals * 1000:.1f} ms/invoice, signing and posting "
          f"{args.copies} deliveries each)")
    print("  the same CPU by thread (what each kind of thread spent, all its calls included):")
    for kind, value in sorted(threads_cpu.seconds.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {kind[:48]:<48}{value:7.2f} s  {100 * value / total:5.1f}%")
    engine = seconds.get("Step Functions engine", 0.0) / args.deals
    if engine:
        print(f"  moto's Step Functions engine alone: {engine * 1000:.0f} ms CPU per invoice run, a ceiling of "
              f"{1 / engine:.0f} invoices/s on one core before anything else runs")
    if result["errors"]:
        print("  first errors: " + "; ".join(result["errors"][:3]))
    ok = (p50 <= LATENCY_TARGET_S and result["rate"] >= THROUGHPUT_TARGET and not result["errors"]
          and result["invoiced"] == args.deals)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
