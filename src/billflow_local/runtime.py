"""The local runtime's lifecycle and public API: starts the rooms below in order, runs the delivery loop.

    with LocalRuntime(repo_root, port=0, rules=Path("examples/rules"), connections=conn, echo=None) as rt:
        post(f"{rt.url}/webhooks/demo/twenty", ...)
        rt.wait_idle()
        assert rt.executions()[0]["status"] == "SUCCEEDED"

What runs where (one job per module):
- config.py: the connections and rules files, checked before anything starts.
- process.py: the process environment and billflow's per-container caches.
- moto_patches.py: every patch applied to moto, with the AWS behaviour it restores.
- provision.py: template.yaml's resources created on moto (`mock_aws` with Step Functions execution on).
- lambdas.FunctionHost: Lambda invocations (the state machine's Task states) answered in-process.
- bus.py: EventBridge (PutEvents, rule patterns, deliveries); async_invoke.py: what Lambda does when an
  asynchronously invoked function fails (retries, then the on-failure destination).
- server.py: the HTTP API. clock.py: Wait states and Retry sleeps on a virtual clock (advance_clock).
- echo.py and progress.py: the progress lines people watch.

moto is not thread-safe; billflow relies on DynamoDB's atomic conditional writes under concurrency. moto's
request handling is therefore serialised with one process-wide lock, never held while a handler runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from billflow.observability import logger
from billflow.settings import get_settings
from billflow.storage.rules import get_rule_store
from moto import mock_aws

from billflow_local import async_invoke
from billflow_local.bus import Delivery, LocalEventBus
from billflow_local.clock import VirtualClock
from billflow_local.config import LocalConfigError, TenantConfig, load_connections, load_rules
from billflow_local.echo import Echo, EchoLines
from billflow_local.lambdas import FunctionHost
from billflow_local.moto_patches import (
    faster_botocore,
    faster_moto_responses,
    faster_state_copies,
    faster_step_functions,
    quiet_moto_engine,
    serialised_moto,
    shared_engine_clients,
)
from billflow_local.process import (
    FAKE_AWS_ENVIRONMENT,
    LOCAL_ENVIRONMENT,
    UNSET_ENVIRONMENT,
    patched_environment,
    reset_billflow_caches,
    startup_objects_frozen,
)
from billflow_local.progress import ExecutionProgress, describe_bus_event, short_name, summarise
from billflow_local.provision import AsyncInvokeConfig, Provisioned, Provisioner, paged, store_tenants
from billflow_local.scheduler import Firing, LocalScheduler
from billflow_local.server import LocalApiServer
from billflow_local.template import REGION, Template

__all__ = ["LocalConfigError", "LocalRuntime", "TenantConfig", "load_connections", "load_rules"]

SCHEDULER_POLL_SECONDS = 1.0  # how often the background scheduler looks at the clock (real seconds)
FOREGROUND_GRACE_SECONDS = 1.0  # deliveries wait for the API at most this long
FOREGROUND_QUIET_SECONDS = 0.03  # the API counts as quiet once no request started for this long


class LocalRuntime:
    def __init__(
        self,
        root: Path | str,
        *,
        port: int = 3000,
        host: str = "127.0.0.1",
        rules: Path | str | None = None,
        connections: Mapping[str, Any] | Path | str | None = None,
        tenant: str = "demo",
        parameters: Mapping[str, Any] | None = None,
        echo: Echo | None = print,
        time_scale: float = 1.0,
        fast_retries: bool = False,
        log_level: str | None = None,
        delivery_workers: int = 4,
        schedules: bool = False,
        console_token: str | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.template = Template.load(self.root / "template.yaml", parameters)
        self.tenant = tenant
        self.echo = echo
        self._echo_lines = EchoLines(lambda: self.echo)
        self.log_level = log_level
        self.clock = VirtualClock(time_scale=time_scale, fast_retries=fast_retries)
        # EventBridge Scheduler (scheduler.py): the template's and the admin API's schedules fire on the clock
        # (wall time = this start + the clock's seconds); `schedules=True` also fires them in the background.
        self._wall_start = datetime.now(UTC)
        self.schedules_in_background = schedules
        self.scheduler: LocalScheduler | None = None
        self.functions = FunctionHost(self.template)
        self.server = LocalApiServer(self.template, self.functions.invoke, host=host, port=port, echo=self._say,
                                     idle=lambda: not self._busy(True, requests_of_caller=1),
                                     console_token=console_token)
        # Checked now, before anything starts: a bad file is reported with its fields, nothing half-runs.
        self.tenants = load_connections(connections)
        self.rules_path = Path(rules) if rules is not None else None
        self.initial_rules = load_rules(self.rules_path, tenant) if self.rules_path is not None else []
        self.bus = LocalEventBus(self.clock.now, self._bus_work_arrived, self._say)
        self.provisioned = Provisioned()
        self.state_machines: dict[str, str] = {}  # logical id -> ARN
        self.topic_queues: dict[str, str] = {}  # topic ARN -> local queue URL
        self._definitions: dict[str, dict[str, Any]] = {}  # state machine ARN -> ASL (substituted)
        self._notifications: list[dict[str, Any]] = []
        self._delivery_workers = max(1, delivery_workers)
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = threading.local()
        self._bus_work = threading.Event()  # the bus or a topic's queue may have something to deliver
        self._topic_work = threading.Event()  # something was published to a topic
        self._run_work = threading.Event()  # an execution may have started
        self._threads: list[threading.Thread] = []
        self._progress_passes = threading.Condition()
        self._progress_pass = 0  # passes of the progress loop completed
        self._exit_stack: ExitStack | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def console_url(self) -> str:
        """The console's address; with a token, the link that hands it to the page (in the fragment: never sent
        to a server, never in a log)."""
        token = self.server.console_token
        tenants = ",".join(sorted({self.tenant, *self.tenants}))  # the switcher's list; any tenant can be typed
        return f"{self.url}/console#" + (f"token={token}&" if token else "") + f"tenants={tenants}"

    @property
    def running(self) -> bool:
        return self._exit_stack is not None

    def __enter__(self) -> LocalRuntime:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> LocalRuntime:
        if self._exit_stack is not None:
            raise RuntimeError("the local runtime is already started")
        listening = self.server.bind()  # a taken port is said now, not after provisioning
        stack = ExitStack()
        stack.callback(listening.close)  # closed by the server once started; here when the start fails
        try:
            self._echo_lines.start()
            stack.callback(self._echo_lines.stop)  # last: every line said until the end is echoed
            stack.enter_context(patched_environment(FAKE_AWS_ENVIRONMENT, UNSET_ENVIRONMENT))
            stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
            stack.enter_context(serialised_moto(self.functions.answers, self._notice_work))
            # mock_aws replaced boto3's default session; every client from here on (billflow's, and the ones
            # moto's Step Functions engine creates per task) comes from this one and asks our hook first.
            boto3.setup_default_session(region_name=REGION)
            self._clients = threading.local()  # clients of an earlier start belong to its session
            self.functions.attach(boto3.DEFAULT_SESSION)
            stack.callback(self.functions.detach)
            self.bus.attach(boto3.DEFAULT_SESSION)
            stack.callback(self.bus.detach)
            stack.enter_context(self.clock.installed())
            stack.enter_context(faster_step_functions())
            stack.enter_context(faster_state_copies())
            stack.enter_context(faster_botocore())
            stack.enter_context(faster_moto_responses())
            stack.enter_context(shared_engine_clients())
            stack.enter_context(quiet_moto_engine(self.log_level))
            self._provision()
            self.scheduler = LocalScheduler(self.template, self.client, self.functions.invoke, self._wall_start)
            self.scheduler.provision()
            stack.enter_context(patched_environment(self._function_environment()))
            reset_billflow_caches()
            stack.callback(reset_billflow_caches)
            stack.enter_context(self._functions_log_level())
            self._load_tenants()
            if self.initial_rules:
                self.put_rules(self.initial_rules)
            self._stop.clear()
            self._pool = ThreadPoolExecutor(self._delivery_workers, thread_name_prefix="billflow-local-bus")
            stack.callback(self._pool.shutdown, wait=False, cancel_futures=True)
            stack.callback(self._join_threads, 5)
            stack.callback(self._bus_work.set)
            stack.callback(self._run_work.set)
            stack.callback(self._stop.set)  # on a failed start: the loops end before moto goes away
            self._spawn(self._drain_bus, "billflow-local-bus")
            if self.schedules_in_background:
                self._spawn(self._fire_schedules_loop, "billflow-local-scheduler")
            if self.echo is not None:
                self._spawn(self._follow_executions, "billflow-local-progress")
            stack.enter_context(startup_objects_frozen())
            self.server.start(listening)
            stack.callback(self.server.stop)
        except BaseException:
            stack.close()
            raise
        self._exit_stack = stack
        return self

    def stop(self, timeout: float = 5) -> None:
        """Stop taking work, stop running executions, let running handlers finish, then tear down.

        Nothing may outlive the mock: a handler still running after it would reach for real AWS.
        """
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._bus_work.set()
        self._run_work.set()
        self.server.stop()
        self._join_threads(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self._stop_executions(deadline)
        finally:
            stack.close()

    def _stop_executions(self, deadline: float) -> None:
        sfn = self.client("stepfunctions")
        for arn in self.state_machines.values():
            for execution in paged(sfn, "list_executions", "executions", stateMachineArn=arn,
                                    statusFilter="RUNNING"):
                sfn.stop_execution(executionArn=execution["executionArn"], error="LocalRuntimeStopped",
                                   cause="the local runtime was stopped")
        while self.functions.active and time.monotonic() < deadline:
            time.sleep(0.02)  # a handler mid-call finishes against moto, not against AWS

    def _join_threads(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._threads.clear()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _say(self, line: str) -> None:
        if self.echo is not None:
            self._echo_lines.say(line)

    # ------------------------------------------------------------------------------------- provisioning
    def _provision(self) -> None:
        """Create every resource of template.yaml the application touches (provision.py)."""
        done = Provisioner(self.template, self.client).provision()
        self.provisioned = done
        self.state_machines, self.topic_queues, self._definitions = (
            done.state_machines, done.topic_queues, done.definitions)
        self.bus.targets, self.bus.buses = done.targets, done.buses

    def _function_environment(self) -> dict[str, str]:
        """Every function's variables at once: one process hosts them all (their names do not clash)."""
        merged: dict[str, str] = {}
        for logical_id, _ in self.template.iter_functions():
            merged.update(self.template.function_environment(logical_id))
        if self.log_level:
            merged["POWERTOOLS_LOG_LEVEL"] = self.log_level.upper()
        # No Cognito here: the console signs in with the token printed at start (server.py checks it).
        console = {"CONSOLE_AUTH_URL": "", "CONSOLE_CLIENT_ID": ""}
        return {**merged, **LOCAL_ENVIRONMENT, **console}

    @contextmanager
    def _functions_log_level(self) -> Iterator[None]:
        if not self.log_level:
            yield
            return
        previous = logger.log_level
        logger.setLevel(self.log_level.upper())  # the logger may predate this runtime's environment
        try:
            yield
        finally:
            logger.setLevel(previous)

    def _load_tenants(self) -> None:
        store_tenants(self.client, get_settings().secrets_prefix, self.tenants)

    # ------------------------------------------------------------------------------------- public API
    def client(self, service: str) -> Any:
        """A boto3 client on the local stack, one per thread and service: creating one reads the environment,
        which a test may be changing at that moment, and costs milliseconds."""
        clients: dict[str, Any] = self._clients.__dict__.setdefault("by_service", {})
        if service not in clients:
            clients[service] = boto3.client(service, region_name=REGION)  # type: ignore[call-overload]
        return clients[service]

    def name_of(self, logical_id: str) -> str:
        """What !Ref gives for a template resource locally (a table's name, a topic's ARN...)."""
        return self.template.ref(logical_id)

    def webhook_urls(self) -> list[str]:
        """One URL per tenant and source configured in the connections file."""
        return [f"{self.url}/webhooks/{tenant}/{source}"
                for tenant, config in self.tenants.items() for source in config.sources]

    def put_rules(self, rules: list[Any]) -> None:
        store = get_rule_store()
        for rule in rules:
            store.put(rule if rule.tenant else rule.model_copy(update={"tenant": self.tenant}))

    def load_rules(self, path: Path | str) -> list[Any]:
        """Read rules from a YAML file or folder (default tenant: the runtime's) and store them."""
        rules = load_rules(path, self.tenant)
        self.put_rules(rules)
        return rules

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Call a function's handler in-process, as Lambda would; its exception propagates."""
        return self.functions.invoke(logical_id, event)

    def advance_clock(self, seconds: float) -> None:
        """Move the virtual clock on: Wait states, Retry backoffs and bus retries whose time has come wake up."""
        self.clock.advance(seconds)
        self._bus_work.set()

    # ------------------------------------------------------------------------------------- schedules
    def now(self) -> datetime:
        """The runtime's wall-clock time: its start plus the virtual clock's seconds (advance_clock moves it)."""
        return self._wall_start + timedelta(seconds=self.clock.now())

    def fire_schedules(self, now: datetime | None = None) -> list[Firing]:
        """Fire every EventBridge Scheduler schedule due up to `now` (default: the runtime's clock)."""
        if self.scheduler is None:
            raise RuntimeError("the local runtime is not started")
        return self.scheduler.fire_due(now or self.now())

    def _fire_schedules_loop(self) -> None:
        while not self._stop.wait(SCHEDULER_POLL_SECONDS):
            try:
                self.fire_schedules()
            except Exception as exc:  # the loop outlives one bad pass, as Scheduler outlives one bad target
                self._say(f"scheduler: {type(exc).__name__}: {exc}")

    def wait_idle(self, timeout: float = 30, *, include_waiting: bool = True) -> None:
        """Block until nothing is left to do: no request, bus event or delivery pending, no execution
        running. With include_waiting=False, executions waiting on the clock (a Wait state, a Retry
        backoff) and bus deliveries waiting for their retry count as idle: advance_clock() wakes them.
        TimeoutError says what is still busy."""
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        while True:
            busy = self._busy(include_waiting)
            quiet_checks = 0 if busy else quiet_checks + 1
            if quiet_checks >= 2:  # twice in a row: nothing was between two hands
                self._progress_caught_up()
                self._echo_lines.flush()  # and what happened has been said
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not idle after {timeout}s: {'; '.join(busy)}")
            time.sleep(0.02)

    def executions(self) -> list[dict[str, Any]]:
        """Every execution so far, oldest first: name, status, error, cause and the states visited."""
        sfn = self.client("stepfunctions")
        found = []
        for arn in self.state_machines.values():
            for summary in paged(sfn, "list_executions", "executions", stateMachineArn=arn):
                described = sfn.describe_execution(executionArn=summary["executionArn"])
                events = self._history_events(summary["executionArn"])
                found.append({
                    "name": summary["name"],
                    "arn": summary["executionArn"],
                    "status": described["status"],
                    "error": described.get("error"),
                    "cause": described.get("cause"),
                    "states": [e["stateEnteredEventDetails"]["name"] for e in events
                               if e["type"].endswith("StateEntered")],
                    "started": described["startDate"],
                    "stopped": described.get("stopDate"),
                    "input": json.loads(described.get("input") or "null"),
                    "output": json.loads(described["output"]) if described.get("output") else None,
                })
        return sorted(found, key=lambda e: e["started"])

    def history(self, name: str) -> list[dict[str, Any]]:
        """The execution's history events (as GetExecutionHistory gives them), by execution name."""
        for arn in self.state_machines.values():
            prefix = arn.replace(":stateMachine:", ":execution:")
            try:
                return self._history_events(f"{prefix}:{name}")
            except Exception as exc:  # moto answers ExecutionDoesNotExist for other state machines
                if "ExecutionDoesNotExist" not in type(exc).__name__ + str(exc):
                    raise
        raise KeyError(f"no execution named {name!r}")

    def notifications(self) -> list[dict[str, Any]]:
        """What was published to the template's topics so far: topic, subject, message, attributes."""
        self._drain_topics()
        return list(self._notifications)

    # ------------------------------------------------------------------------------------- internals
    def _history_events(self, execution_arn: str) -> list[dict[str, Any]]:
        return list(paged(self.client("stepfunctions"), "get_execution_history", "events",
                           executionArn=execution_arn))

    def _busy(self, include_waiting: bool, requests_of_caller: int = 0) -> list[str]:
        busy = []
        if self.server.in_flight > requests_of_caller:
            busy.append(f"{self.server.in_flight} HTTP request(s) in flight")
        if self.server.turns.queued:
            busy.append(f"{self.server.turns.queued} request(s) or deliveries waiting for their turn")
        pending, delayed = self.bus.pending()
        if pending:
            busy.append(f"{pending} bus event(s) pending or being delivered")
        if delayed and include_waiting:
            busy.append(f"{delayed} bus delivery(ies) waiting to be retried")
        waiting = set() if include_waiting else {w.execution for w in self.clock.waiters()}
        sfn = self.client("stepfunctions")
        for arn in self.state_machines.values():
            running = [e["name"] for e in paged(sfn, "list_executions", "executions", stateMachineArn=arn,
                                                 statusFilter="RUNNING") if e["name"] not in waiting]
            if running:
                busy.append(f"{len(running)} execution(s) running: {', '.join(running[:5])}")
        return busy

    def _bus_work_arrived(self) -> None:
        self._bus_work.set()

    def _notice_work(self, request: Any) -> None:
        """Wake the topic and progress loops when a moto request may have given them work, not polling."""
        target = request.headers.get("X-Amz-Target") or b""
        target = target.decode() if isinstance(target, bytes) else str(target)
        if target == "AWSStepFunctions.StartExecution":
            self._run_work.set()
            return
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        if b"Action=Publish" in body:  # SNS (query protocol): its SQS subscribers have a message
            self._topic_work.set()
            self._bus_work.set()

    def _drain_bus(self) -> None:
        """EventBridge's delivery to Lambda: the bus's matched events to their target functions."""
        waiting_since: float | None = None
        while not self._stop.is_set():
            # Webhooks first: Lambda would run these deliveries on other machines; here they share one
            # interpreter with the API, so they wait while requests are in flight or keep coming (no
            # request in flight is not enough: under load, the next ones are waiting for the GIL to be
            # read), at most a grace period.
            now = time.monotonic()
            quiet_left = FOREGROUND_QUIET_SECONDS - (now - self.server.last_request_at)
            if self.server.in_flight or quiet_left > 0:
                waiting_since = waiting_since or now
                grace_left = FOREGROUND_GRACE_SECONDS - (now - waiting_since)
                if grace_left > 0:
                    if self.server.in_flight:
                        self.server.quiet.wait(grace_left)  # woken when the last request is answered
                    else:
                        self._stop.wait(min(quiet_left, grace_left))
                    continue
            waiting_since = None
            self._bus_work.clear()
            with self.server.turns.turn():
                unrouted = self.bus.route()
            room = self._delivery_workers * 2 - self.bus.in_flight
            taken = self.bus.take(room) if room > 0 else []
            for delivery in taken:
                assert self._pool is not None
                try:
                    self._pool.submit(self._deliver, delivery)
                except RuntimeError:  # the pool is shut down: the runtime is stopping
                    return
            if self._topic_work.is_set():
                self._topic_work.clear()
                self._drain_topics()
            if not taken and not unrouted:
                # Woken by a PutEvents, a publish, a finished delivery or advance_clock; else when the next
                # retry is due (on the virtual clock), at most a second from now.
                due = self.bus.seconds_until_due()
                scale = self.clock.time_scale
                self._bus_work.wait(1.0 if due is None or scale <= 0 else min(1.0, due / scale))

    def _deliver(self, delivery: Delivery) -> None:
        target = delivery.target
        finished = False
        try:
            event = json.loads(delivery.body)
            try:
                with self.server.turns.turn():  # between API requests, not against them for the GIL
                    result = self.functions.invoke(target.function, event)
            except Exception as exc:
                finished = self._delivery_failed(delivery, exc)
                return
            finished = True
            self._say(f"[bus] {describe_bus_event(delivery.event)} → {target.function}: {summarise(result)}")
        except Exception as exc:  # the runtime is stopping, or moto failed: report, never kill the pool
            finished = True
            if not self._stop.is_set():
                self._say(f"[bus] delivery to {target.function} failed: {type(exc).__name__}: {exc}")
        finally:
            if finished:
                self.bus.done(delivery)
            self._bus_work.set()  # room for the next delivery

    def _delivery_failed(self, delivery: Delivery, exc: Exception) -> bool:
        """The function failed on an asynchronous invocation: Lambda retries it (async_invoke.py), then sends
        the event to the function's on-failure destination. The rule's RetryPolicy and dead-letter queue are
        not involved: EventBridge's delivery succeeded when Lambda accepted the event. True when finished."""
        target = delivery.target
        config = self.provisioned.async_invoke.get(target.function) or AsyncInvokeConfig(
            target.function, target.function_arn, 1 + async_invoke.LAMBDA_DEFAULT_ASYNC_RETRIES, 21_600)
        attempt = delivery.attempt
        age = self.clock.now() - delivery.put_at
        if async_invoke.should_retry(config, attempt, age):
            delay = 0 if self.clock.fast_retries else async_invoke.retry_delay(attempt)
            self._say(f"[lambda] {target.function} ✗ {type(exc).__name__}: {exc} — asynchronous retry "
                      f"{attempt + 1}/{config.max_attempts} in {delay:g}s")
            self.bus.retry(delivery, delay)
            return False
        condition = "RetriesExhausted" if attempt >= config.max_attempts else "EventAgeExceeded"
        where = "goes to the on-failure destination" if config.on_failure_url else \
            "is dropped (no on-failure destination)"
        self._say(f"[lambda] {target.function} ✗ {type(exc).__name__}: {exc} — attempt {attempt} was the last "
                  f"({condition}); the event {where}")
        if config.on_failure_url:
            record = async_invoke.destination_record(config, json.loads(delivery.body), exc, attempt,
                                                     condition=condition)
            self.client("sqs").send_message(QueueUrl=config.on_failure_url,
                                            MessageBody=async_invoke.destination_body(record))
        return True

    def _drain_topics(self) -> None:
        if not self.topic_queues:
            return
        sqs = self.client("sqs")
        for topic, url in self.topic_queues.items():
            try:
                messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=0).get("Messages", [])
            except Exception:
                return  # stopping
            for message in messages:
                envelope = json.loads(message["Body"])
                note = {
                    "topic": topic,
                    "subject": envelope.get("Subject"),
                    "message": envelope.get("Message"),
                    "attributes": {k: v.get("Value") for k, v in (envelope.get("MessageAttributes") or {}).items()},
                }
                with self._count_lock:
                    self._notifications.append(note)
                self._say(f"[sns] {note['subject'] or topic}: {note['message']}")
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    def _follow_executions(self) -> None:
        """Echo one line per state as executions move (for people watching; tests pass echo=None)."""
        sfn = self.client("stepfunctions")
        followed: dict[str, ExecutionProgress] = {}
        while not self._stop.is_set():
            if all(p.finished for p in followed.values()):
                self._run_work.wait(1.0)  # nothing running: sleep until an execution starts
            self._run_work.clear()
            self._stop.wait(0.1)
            try:
                for machine_arn in self.state_machines.values():
                    for summary in paged(sfn, "list_executions", "executions", stateMachineArn=machine_arn):
                        arn = summary["executionArn"]
                        progress = followed.get(arn)
                        if progress is None:
                            definition = self._definitions[machine_arn]
                            progress = followed[arn] = ExecutionProgress(summary["name"], definition)
                        if progress.finished:
                            continue
                        for event in self._history_events(arn):
                            if event["id"] > progress.last_event_id:
                                progress.last_event_id = event["id"]
                                line = progress.render(event)
                                if line:
                                    self._say(f"[{short_name(progress.name)}] {line}")
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._say(f"[progress] cannot read executions: {type(exc).__name__}: {exc}")
            with self._progress_passes:
                self._progress_pass += 1
                self._progress_passes.notify_all()

    def _progress_caught_up(self, timeout: float = 5.0) -> None:
        """Wait for a whole pass of the progress loop begun after now: every state so far has been said
        (so a demo's later sections do not print before the run's last progress lines)."""
        if self.echo is None or not any(t.name == "billflow-local-progress" for t in self._threads):
            return
        with self._progress_passes:
            target = self._progress_pass + 2  # the pass under way may have read the history before now
            self._run_work.set()
            self._progress_passes.wait_for(lambda: self._progress_pass >= target, timeout)


# ------------------------------------------------------------------------------------------- progress lines
