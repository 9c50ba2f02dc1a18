"""The billflow stack on one machine: template.yaml provisioned on moto, the functions run in-process.

    with LocalRuntime(repo_root, port=0, rules=Path("examples/rules"), connections=conn, echo=None) as rt:
        post(f"{rt.url}/webhooks/demo/twenty", ...)
        rt.wait_idle()
        assert rt.executions()[0]["status"] == "SUCCEEDED"

What runs where:
- moto (`mock_aws` with Step Functions execution on) holds every table, the bus, the topic, the queues,
  the secrets and the state machine, all created from template.yaml; moto's Step Functions engine runs the
  real ASL definition.
- Lambda invocations (the state machine's Task states) are answered in-process by lambdas.FunctionHost.
- The bus: LocalEventBus answers PutEvents in-process (moto's EventBridge does not invoke Lambda targets),
  matches events against the template's rule patterns with moto's matcher and delivers them to the
  functions on a worker pool, with the rule's RetryPolicy and DeadLetterConfig (a real queue on moto).
- The HTTP API: server.LocalApiServer.
- Time: clock.VirtualClock patches moto's Wait states and Retry sleeps (advance_clock, fast_retries).

moto is not thread-safe; billflow relies on DynamoDB's atomic conditional writes under concurrency. moto's
request handling is therefore serialised with one process-wide lock, never held while a handler runs.
"""

from __future__ import annotations

import functools
import gc
import heapq
import importlib
import itertools
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from billflow_local.clock import VirtualClock
from billflow_local.lambdas import FunctionHost, RawBody, http_headers, request_id
from billflow_local.server import LocalApiServer
from billflow_local.template import (
    ACCOUNT_ID,
    EVENT_BUS,
    QUEUE,
    REGION,
    STATE_MACHINE,
    TABLE,
    TOPIC,
    Template,
)

Echo = Callable[[str], None]

FAKE_AWS_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
LOCAL_ENVIRONMENT = {"POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_TRACE_DISABLED": "true"}
# Variables that would send boto3 somewhere else than moto, or to a real account.
_UNSET_ENVIRONMENT = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE",
                      "AWS_SHARED_CREDENTIALS_FILE")
TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# One lock for all of moto: its backends are not thread-safe (a conditional update racing another would
# both succeed), while billflow counts on DynamoDB's atomic conditional writes.
MOTO_LOCK = threading.RLock()


class LocalConfigError(Exception):
    """A rules or connections file is not usable: every problem with file, field and what to fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# ------------------------------------------------------------------------------------------- configuration
class Yaml12BoolLoader(yaml.SafeLoader):
    """Safe YAML where only true/false are booleans: YAML 1.1 also reads on/off/yes/no as booleans."""


Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class TenantConfig:
    """What the connections file gives one tenant. Secret values: never printed."""

    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # source -> {"signing_secret": ...}
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"type": ..., ...}
    settings: Any = None  # billflow.models.rules.TenantSettings, when given

    def __repr__(self) -> str:
        return f"TenantConfig(sources={sorted(self.sources)}, connections={sorted(self.connections)})"


def load_connections(spec: Mapping[str, Any] | Path | str | None) -> dict[str, TenantConfig]:
    """Parse and check a connections document (a YAML file or an equivalent dict), per tenant.

    Shape: {tenants: {<tenant>: {sources: {<source>: {signing_secret}}, connections: {<name>: {type, ...}},
    settings: {daily_limits: {<action type>: n}}}}}. `${NAME}` in a string is replaced by the environment
    variable NAME, so keys can stay out of the file.
    """
    if spec is None:
        return {}
    where = "connections"
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        where = str(path)
        if not path.is_file():
            raise LocalConfigError([f"{path}: no such file; give a YAML file with a top-level 'tenants:' key"])
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=Yaml12BoolLoader)  # noqa: S506
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
            raise LocalConfigError([f"{path}{at}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    else:
        doc = spec
    problems: list[str] = []
    tenants = doc.get("tenants") if isinstance(doc, Mapping) else None
    if not isinstance(tenants, Mapping):
        raise LocalConfigError([f"{where}: tenants: missing; the file is a mapping "
                                "{tenants: {<tenant>: {sources: ..., connections: ...}}}"])
    from billflow.connectors import known_connectors
    from billflow.models.rules import TenantSettings
    from billflow.sources import known_sources
    from pydantic import ValidationError

    result: dict[str, TenantConfig] = {}
    for tenant, body in tenants.items():
        at = f"{where}: tenants.{tenant}"
        if not isinstance(tenant, str) or not TENANT_ID.match(tenant):
            problems.append(f"{at}: tenant ids are lowercase letters, digits and dashes (as in the URL)")
            continue
        if not isinstance(body, Mapping):
            problems.append(f"{at}: expected a mapping with sources, connections and settings")
            continue
        unknown = sorted(set(body) - {"sources", "connections", "settings"})
        if unknown:
            problems.append(f"{at}: unknown key(s) {', '.join(unknown)}; use sources, connections, settings")
        config = TenantConfig()
        for source, secret in (body.get("sources") or {}).items():
            here = f"{at}.sources.{source}"
            if source not in known_sources():
                problems.append(f"{here}: unknown source; known: {', '.join(known_sources())}")
                continue
            value = _expand(secret, here, problems)
            if not isinstance(value, Mapping) or not isinstance(value.get("signing_secret"), str) \
                    or not value["signing_secret"]:
                problems.append(f"{here}.signing_secret: missing; give the secret the CRM signs webhooks with")
                continue
            config.sources[source] = dict(value)
        for name, connection in (body.get("connections") or {}).items():
            here = f"{at}.connections.{name}"
            value = _expand(connection, here, problems)
            if not isinstance(value, Mapping):
                problems.append(f"{here}: expected a mapping with a type and the system's settings")
                continue
            kind = value.get("type")
            if not isinstance(kind, str) or not kind:
                problems.append(f"{here}.type: missing; one of {', '.join(known_connectors())}")
                continue
            if kind not in known_connectors():
                problems.append(f"{here}.type: unknown type {kind!r}; known: {', '.join(known_connectors())}")
                continue
            config.connections[str(name)] = dict(value)
        if body.get("settings") is not None:
            try:
                config.settings = TenantSettings.model_validate(body["settings"])
            except ValidationError as exc:
                for error in exc.errors():
                    loc = ".".join(str(p) for p in error["loc"])
                    problems.append(f"{at}.settings.{loc}: {error['msg']}")
        result[tenant] = config
    if problems:
        raise LocalConfigError(problems)
    return result


def _expand(value: Any, where: str, problems: list[str]) -> Any:
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{where}.{k}", problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}.{i}", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            problems.append(f"{where}: environment variable {name} is not set; export it or write the value")
            return ""
        return os.environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def load_rules(path: Path | str, tenant: str) -> list[Any]:
    """Rule documents from a YAML file or folder (the CLI's reader), each for its tenant or `tenant`."""
    from billflow_cli.rulesfile import RulesFileError
    from billflow_cli.rulesfile import load_rules as read_rules

    try:
        return list(read_rules(Path(path), tenant))
    except RulesFileError as exc:
        raise LocalConfigError(list(exc.problems)) from None


# ------------------------------------------------------------------------------------------- moto plumbing
@contextmanager
def serialised_moto(
    answered_elsewhere: Callable[[str, Any], bool], answered: Callable[[Any], None] = lambda request: None
) -> Iterator[None]:
    """Run every request moto answers under MOTO_LOCK (the Lambda hook answers before, outside it).

    botocore calls every before-send handler, even after one has answered: requests another handler
    already answers (`answered_elsewhere`) must not also run in moto, where they would fail, slowly.
    `answered(request)` is told of every request moto answered, after it did (outside the lock).
    """
    from moto.core.botocore_stubber import BotocoreStubber

    original = BotocoreStubber.__call__

    def locked_call(self: Any, event_name: str, request: Any, **kwargs: Any) -> Any:
        if not self.enabled or answered_elsewhere(event_name, request):
            return None
        with MOTO_LOCK:
            response = original(self, event_name, request, **kwargs)
        answered(request)
        return response

    BotocoreStubber.__call__ = locked_call  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.__call__ = original  # type: ignore[method-assign]


@contextmanager
def faster_step_functions() -> Iterator[None]:
    """Parse each state machine definition and each JSONPath once, not on every execution and state.

    moto parses the ASL (ANTLR, in pure Python) for every execution, ~100 ms of CPU, and builds a new
    JSONPath parser for every path it evaluates; together most of an execution's CPU here. A parsed
    program is a tree of components that keep per-run state in the execution's Environment (stack, heap,
    context object), never on themselves, and a parsed JSONPath is an immutable expression, so both can be
    shared by every execution. Parsing is serialised, so concurrent first executions parse only once.
    """
    execution_worker: Any = importlib.import_module("moto.stepfunctions.parser.backend.execution_worker")
    json_path: Any = importlib.import_module("moto.stepfunctions.parser.asl.utils.json_path")
    result_path: Any = importlib.import_module("moto.stepfunctions.parser.asl.component.common.path.result_path")
    worker_class = execution_worker.ExecutionWorker
    original_entrypoint = worker_class._get_evaluation_entrypoint
    original_parsers = (json_path.parse, result_path.parse)
    programs: dict[str, Any] = {}
    parse_lock = threading.Lock()

    def entrypoint(self: Any) -> Any:
        definition = self._evaluation_details.state_machine_details.definition
        with parse_lock:
            if definition not in programs:
                if len(programs) >= 32:  # definitions change rarely: a bound, not a policy
                    programs.clear()
                programs[definition] = original_entrypoint(self)
            return programs[definition]

    worker_class._get_evaluation_entrypoint = entrypoint
    json_path.parse = functools.lru_cache(maxsize=1024)(original_parsers[0])
    result_path.parse = functools.lru_cache(maxsize=1024)(original_parsers[1])
    # A bus target's InputPath, and moto's input transformer (eight JSONPaths when none is given), build a
    # new yacc parser per expression: ~2 ms each. Parsed expressions are immutable.
    jsonpath_ext: Any = importlib.import_module("jsonpath_ng.ext")
    original_ext_parse = jsonpath_ext.parse
    jsonpath_ext.parse = functools.lru_cache(maxsize=256)(original_ext_parse)
    try:
        yield
    finally:
        worker_class._get_evaluation_entrypoint = original_entrypoint
        json_path.parse, result_path.parse = original_parsers
        jsonpath_ext.parse = original_ext_parse


@contextmanager
def faster_botocore() -> Iterator[None]:
    """Build each client's User-Agent header once per set of feature ids, not on every request.

    botocore assembles the header for every request from ~16 components, sanitising each one character by
    character: ~50 µs, more than answering an in-process PutEvents. Its inputs are the client's settings,
    fixed when the client is made, and the feature ids of the request's context (part of the key), so the
    string built the first time is the string botocore would build again.
    """
    useragent: Any = importlib.import_module("botocore.useragent")
    botocore_context: Any = importlib.import_module("botocore.context")
    user_agent_class = useragent.UserAgentString
    original = user_agent_class.to_string

    def to_string(self: Any) -> str:
        built = self.__dict__.get("_billflow_local_built")
        if built is None or built[0] != id(self):  # absent, or inherited by a copy (with_client_config)
            built = self.__dict__["_billflow_local_built"] = (id(self), {})
        context = botocore_context.get_context()
        key = (frozenset(self._client_features or ()), frozenset(context.features) if context else frozenset())
        text = built[1].get(key)
        if text is None:
            text = built[1][key] = original(self)
        return text  # type: ignore[no-any-return]

    user_agent_class.to_string = to_string
    try:
        yield
    finally:
        user_agent_class.to_string = original


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Keep what start-up loaded out of the garbage collector's full collections while the runtime runs.

    By then the process holds moto's backends, botocore's service models and every module: hundreds of
    thousands of long-lived objects that each full (generation 2) collection walks, 100-150 ms during which
    no request is answered (under load, the worst latencies). gc.freeze() moves them to a permanent
    generation; collections then only walk what was made since.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def patched_environment(values: Mapping[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*values, *unset)}
    for key in unset:
        os.environ.pop(key, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _reset_billflow_caches() -> None:
    """billflow caches settings, clients and secrets per container; a new stack means a new container."""
    from billflow import aws, settings
    from billflow.storage import idempotency, secrets

    settings.get_settings.cache_clear()
    aws.reset_clients()
    secrets.reset_secret_store()
    idempotency.reset()


# ------------------------------------------------------------------------------------------- the event bus
PUT_EVENTS_EVENT = "before-call.eventbridge.PutEvents"  # botocore: before-call.<hyphenized service id>.<op>
PUT_EVENTS_PARAMS_EVENT = "before-parameter-build.eventbridge.PutEvents"
_ENTRIES_KEY = "billflow_local_entries"
PUT_EVENTS_MAX_ENTRIES = 10
PUT_EVENTS_MAX_BYTES = 256 * 1024  # the entries' size, counted as EventBridge counts it
EVENTBRIDGE_DEFAULT_RETRIES = 185  # EventBridge's default RetryPolicy
EVENTBRIDGE_DEFAULT_MAX_AGE_SECONDS = 86_400
BUS_RETRY_CAP_SECONDS = 30  # locally, a failed delivery is retried at least this often
FOREGROUND_GRACE_SECONDS = 1.0  # deliveries wait for the API at most this long
FOREGROUND_QUIET_SECONDS = 0.03  # the API counts as quiet once no request started for this long
ROUTE_BATCH = 50  # events matched per pass of the delivery loop


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
            return _error_answer(params, "ValidationException",
                                 "1 validation error detected: Value '[PutEventsRequestEntry]' at 'entries' "
                                 "failed to satisfy constraint: Member must have length less than or equal to 10")
        if sum(_entry_size(entry) for entry in entries) > PUT_EVENTS_MAX_BYTES:
            return _error_answer(params, "ValidationException",
                                 "Total size of the entries in the request is over the limit.")
        results: list[dict[str, str]] = []
        accepted: list[tuple[str, dict[str, Any], float, str]] = []
        now, received = self._now(), _now_text()
        for entry in entries:
            event = _event_envelope(entry)
            if "ErrorCode" in event:
                results.append(event)
                continue
            results.append({"EventId": event["id"]})
            bus = _bus_name(entry.get("EventBusName"))
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
        return _json_answer(params, 200, {"FailedEntryCount": failed, "Entries": results})

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


def _bus_name(name_or_arn: Any) -> str:
    text = str(name_or_arn or "default")
    return text.rsplit("event-bus/", 1)[-1] if text.startswith("arn:") else text


def _entry_size(entry: Mapping[str, Any]) -> int:
    """An entry's size as EventBridge counts it (eb-putevent-size): Time is 14 bytes, the rest UTF-8."""
    size = 14 if entry.get("Time") is not None else 0
    for key in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(key) or "").encode())
    return size + sum(len(str(r).encode()) for r in entry.get("Resources") or [] if r is not None)


def _event_envelope(entry: Mapping[str, Any]) -> dict[str, Any]:
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
    time_text = datetime.fromtimestamp(float(when), UTC).strftime(_ISO_SECONDS) if when is not None else _now_text()
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


def _now_text() -> str:
    """Now as an event's time (whole seconds, UTC), formatted once a second."""
    global _now_text_cache
    second = int(time.time())
    if _now_text_cache[0] != second:
        _now_text_cache = (second, time.strftime(_ISO_SECONDS, time.gmtime(second)))
    return _now_text_cache[1]


def _json_answer(params: Mapping[str, Any], status: int, document: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from botocore.awsrequest import AWSResponse

    answer_id = request_id()
    body = json.dumps(document).encode()
    headers = {"x-amzn-requestid": answer_id, "content-type": "application/x-amz-json-1.1",
               "content-length": str(len(body))}
    http = AWSResponse(params.get("url") or "", status, http_headers(headers), RawBody(body))
    parsed = {**document, "ResponseMetadata": {"RequestId": answer_id, "HTTPStatusCode": status,
                                               "HTTPHeaders": headers, "RetryAttempts": 0}}
    return http, parsed


def _error_answer(params: Mapping[str, Any], code: str, message: str) -> tuple[Any, dict[str, Any]]:
    http, parsed = _json_answer(params, 400, {"__type": code, "message": message})
    return http, {"Error": {"Code": code, "Message": message}, "ResponseMetadata": parsed["ResponseMetadata"]}


# ------------------------------------------------------------------------------------------- progress lines
class EchoLines:
    """Progress lines, echoed in order by one writer thread while the runtime runs.

    Echoing is a write to a terminal or pipe: a system call, after which the thread queues for the GIL
    again. On a request's thread, that wait would hold back the connection's next request, so lines are
    handed over here instead; `echo_of()` gives the echo to use (None: lines are dropped).
    """

    def __init__(self, echo_of: Callable[[], Echo | None]) -> None:
        self._echo_of = echo_of
        self._lines: deque[str] = deque()
        self._condition = threading.Condition()
        self._writing = False
        self._closing = False
        self._thread: threading.Thread | None = None

    def say(self, line: str) -> None:
        if self._thread is None:  # not running: straight through
            echo = self._echo_of()
            if echo is not None:
                echo(line)
            return
        with self._condition:
            self._lines.append(line)
            if len(self._lines) == 1:
                self._condition.notify()

    def start(self) -> None:
        self._closing = False
        self._thread = threading.Thread(target=self._write, daemon=True, name="billflow-local-echo")
        self._thread.start()

    def flush(self, timeout: float = 5) -> None:
        """Wait until every line said so far has been echoed."""
        with self._condition:
            self._condition.wait_for(lambda: not self._lines and not self._writing, timeout)

    def stop(self) -> None:
        if self._thread is None:
            return
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout=5)
        self._thread = None

    def _write(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._lines or self._closing)
                if not self._lines:
                    return  # closing, and every line is out
                batch = list(self._lines)
                self._lines.clear()
                self._writing = True
            try:
                echo = self._echo_of()
                for line in batch:
                    if echo is not None:
                        echo(line)
            except Exception:  # noqa: S110 - a broken terminal must not stop the runtime
                pass
            finally:
                with self._condition:
                    self._writing = False
                    self._condition.notify_all()


# ------------------------------------------------------------------------------------------- the runtime
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
    ) -> None:
        self.root = Path(root).resolve()
        self.template = Template.load(self.root / "template.yaml", parameters)
        self.tenant = tenant
        self.echo = echo
        self._echo_lines = EchoLines(lambda: self.echo)
        self.log_level = log_level
        self.clock = VirtualClock(time_scale=time_scale, fast_retries=fast_retries)
        self.functions = FunctionHost(self.template)
        self.server = LocalApiServer(self.template, self.functions.invoke, host=host, port=port, echo=self._say,
                                     idle=lambda: not self._busy(True, requests_of_caller=1))
        # Checked now, before anything starts: a bad file is reported with its fields, nothing half-runs.
        self.tenants = load_connections(connections)
        self.rules_path = Path(rules) if rules is not None else None
        self.initial_rules = load_rules(self.rules_path, tenant) if self.rules_path is not None else []
        self.bus = LocalEventBus(self.clock.now, self._bus_work_arrived, self._say)
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
        self._exit_stack: ExitStack | None = None
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return self.server.url

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
        import boto3
        from moto import mock_aws

        stack = ExitStack()
        try:
            self._echo_lines.start()
            stack.callback(self._echo_lines.stop)  # last: every line said until the end is echoed
            stack.enter_context(patched_environment(FAKE_AWS_ENVIRONMENT, _UNSET_ENVIRONMENT))
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
            stack.enter_context(faster_botocore())
            stack.enter_context(_quiet_moto_engine(self.log_level))
            self._provision()
            stack.enter_context(patched_environment(self._function_environment()))
            _reset_billflow_caches()
            stack.callback(_reset_billflow_caches)
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
            if self.echo is not None:
                self._spawn(self._follow_executions, "billflow-local-progress")
            stack.enter_context(startup_objects_frozen())
            self.server.start()
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
            for execution in _paged(sfn, "list_executions", "executions", stateMachineArn=arn,
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
        """Create every resource of template.yaml the application touches, with the template's settings."""
        t = self.template
        self.state_machines, self.topic_queues = {}, {}
        self.bus.targets, self.bus.buses = [], {"default"}
        for logical_id in t.resources_of_type(TABLE):
            self._create_table(logical_id)
        for logical_id in t.resources_of_type(QUEUE):
            self._create_queue(logical_id)
        for logical_id in t.resources_of_type(EVENT_BUS):
            self.client("events").create_event_bus(Name=t.physical_name(logical_id))
            self.bus.buses.add(t.physical_name(logical_id))
        for logical_id in t.resources_of_type(TOPIC):
            self._create_topic(logical_id)
        for logical_id in t.resources_of_type("AWS::SNS::Subscription"):
            props = t.resolve(t.properties(logical_id))
            self.client("sns").subscribe(TopicArn=props["TopicArn"], Protocol=props["Protocol"],
                                         Endpoint=props["Endpoint"])
        for logical_id in t.resources_of_type(STATE_MACHINE):
            self._create_state_machine(logical_id)
        for logical_id, _ in t.iter_functions():
            for event_name, props in t.function_events(logical_id, "EventBridgeRule").items():
                self._create_bus_target(logical_id, event_name, t.resolve(props))

    def _create_table(self, logical_id: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id))
        name = self.template.physical_name(logical_id)
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if props.get(index_kind):
                kwargs[index_kind] = [
                    {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection",
                                                              "ProvisionedThroughput")}
                    for index in props[index_kind]
                ]
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = props.get(
                "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
        if props.get("StreamSpecification"):
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        ddb = self.client("dynamodb")
        ddb.create_table(**kwargs)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and _truthy(ttl.get("Enabled")):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )

    def _create_queue(self, logical_id: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id))
        attributes = {key: str(props[key]) for key in (
            "MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds", "MaximumMessageSize",
            "ReceiveMessageWaitTimeSeconds") if key in props}
        for flag in ("FifoQueue", "ContentBasedDeduplication"):
            if flag in props:
                attributes[flag] = "true" if _truthy(props[flag]) else "false"
        if props.get("RedrivePolicy"):
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        self.client("sqs").create_queue(QueueName=self.template.physical_name(logical_id),
                                        Attributes=attributes)

    def _create_topic(self, logical_id: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id))
        attributes = {"DisplayName": str(props["DisplayName"])} if props.get("DisplayName") else {}
        arn = self.client("sns").create_topic(Name=self.template.physical_name(logical_id),
                                              Attributes=attributes)["TopicArn"]
        # A local-only subscriber, so what the state machine publishes can be shown and asserted.
        queue = f"{self.template.stack_name}-local-{logical_id}"
        url = self.client("sqs").create_queue(QueueName=queue)["QueueUrl"]
        queue_arn = self._queue_arn(url)
        self.client("sns").subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        self.topic_queues[arn] = url

    def _create_state_machine(self, logical_id: str) -> None:
        t = self.template
        props = t.properties(logical_id)
        if "DefinitionUri" in props:
            uri = t.resolve(props["DefinitionUri"])
            if not isinstance(uri, str):
                raise ValueError(f"{logical_id}: DefinitionUri must be a local file for the local runtime")
            text = (t.root / uri).read_text(encoding="utf-8")
        else:
            text = json.dumps(t.resolve(props["Definition"]))
        substitutions = {k: str(v) for k, v in t.resolve(props.get("DefinitionSubstitutions") or {}).items()}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            return substitutions.get(name, match.group(0))  # as SAM: other ${...} are left alone

        definition = re.sub(r"\$\{([A-Za-z0-9_]+)\}", substitute, text)
        arn = self.client("stepfunctions").create_state_machine(
            name=t.physical_name(logical_id),
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/{t.stack_name}-{logical_id}Role",
            type=str(t.resolve(props.get("Type", "STANDARD"))),
        )["stateMachineArn"]
        self.state_machines[logical_id] = arn
        self._definitions[arn] = json.loads(definition)

    def _create_bus_target(self, function: str, event_name: str, props: dict[str, Any]) -> None:
        from moto.events.models import EventPattern

        stack = self.template.stack_name
        bus = _bus_name(props.get("EventBusName"))
        rule = props.get("RuleName") or f"{stack}-{function}-{event_name}"[:64]
        pattern = json.dumps(props["Pattern"])
        state = str(props.get("State", "ENABLED"))
        # The rule exists in moto too (events.list_rules shows it), without targets: the bus here delivers.
        rule_arn = self.client("events").put_rule(Name=rule, EventBusName=bus, EventPattern=pattern,
                                                  State=state)["RuleArn"]
        retry = props.get("RetryPolicy") or {}
        dead_letter = props.get("DeadLetterConfig") or {}
        if dead_letter and not dead_letter.get("Arn"):
            raise ValueError(f"{function}.Events.{event_name}.DeadLetterConfig: give the queue's Arn; "
                             "SAM-created dead-letter queues (Type: SQS) are not supported locally")
        dead_letter_url = None
        if dead_letter.get("Arn"):
            queue_name = str(dead_letter["Arn"]).rsplit(":", 1)[-1]
            dead_letter_url = self.client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"]
        self.bus.targets.append(BusTarget(
            function=function, function_arn=self.template.get_att(function, "Arn"), event_name=event_name,
            rule_name=rule, rule_arn=rule_arn, bus=bus,
            pattern=EventPattern.load(pattern), enabled=state == "ENABLED",
            max_attempts=int(retry.get("MaximumRetryAttempts", EVENTBRIDGE_DEFAULT_RETRIES)) + 1,
            max_age_seconds=float(retry.get("MaximumEventAgeInSeconds", EVENTBRIDGE_DEFAULT_MAX_AGE_SECONDS)),
            dead_letter_arn=dead_letter.get("Arn"), dead_letter_url=dead_letter_url,
            input={k: props[k] for k in ("Input", "InputPath", "InputTransformer") if k in props},
        ))

    def _queue_arn(self, url: str) -> str:
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def _function_environment(self) -> dict[str, str]:
        """Every function's variables at once: one process hosts them all (their names do not clash)."""
        merged: dict[str, str] = {}
        for logical_id, _ in self.template.iter_functions():
            merged.update(self.template.function_environment(logical_id))
        if self.log_level:
            merged["POWERTOOLS_LOG_LEVEL"] = self.log_level.upper()
        return {**merged, **LOCAL_ENVIRONMENT}

    @contextmanager
    def _functions_log_level(self) -> Iterator[None]:
        if not self.log_level:
            yield
            return
        from billflow.observability import logger

        previous = logger.log_level
        logger.setLevel(self.log_level.upper())  # the logger may predate this runtime's environment
        try:
            yield
        finally:
            logger.setLevel(previous)

    def _load_tenants(self) -> None:
        from billflow.settings import get_settings
        from billflow.storage.rules import get_rule_store

        prefix = get_settings().secrets_prefix.rstrip("/")
        secrets = self.client("secretsmanager")
        for tenant, config in self.tenants.items():
            for source, secret in config.sources.items():
                secrets.create_secret(Name=f"{prefix}/{tenant}/source/{source}", SecretString=json.dumps(secret))
            for name, connection in config.connections.items():
                secrets.create_secret(Name=f"{prefix}/{tenant}/connection/{name}",
                                      SecretString=json.dumps(connection))
            if config.settings is not None:
                get_rule_store().put_tenant_settings(tenant, config.settings)

    # ------------------------------------------------------------------------------------- public API
    def client(self, service: str) -> Any:
        """A boto3 client on the local stack, one per thread and service: creating one reads the environment,
        which a test may be changing at that moment, and costs milliseconds."""
        import boto3

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
        from billflow.storage.rules import get_rule_store

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
            for summary in _paged(sfn, "list_executions", "executions", stateMachineArn=arn):
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
        return list(_paged(self.client("stepfunctions"), "get_execution_history", "events",
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
            running = [e["name"] for e in _paged(sfn, "list_executions", "executions", stateMachineArn=arn,
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
            self._say(f"[bus] {_describe_bus_event(delivery.event)} → {target.function}: {_summarise(result)}")
        except Exception as exc:  # the runtime is stopping, or moto failed: report, never kill the pool
            finished = True
            if not self._stop.is_set():
                self._say(f"[bus] delivery to {target.function} failed: {type(exc).__name__}: {exc}")
        finally:
            if finished:
                self.bus.done(delivery)
            self._bus_work.set()  # room for the next delivery

    def _delivery_failed(self, delivery: Delivery, exc: Exception) -> bool:
        """EventBridge's RetryPolicy: retry with backoff, or after the last attempt (or once the event is too
        old) the rule's dead-letter queue. True when the delivery is finished (not retried)."""
        target = delivery.target
        attempt = delivery.attempt
        delay = 0 if self.clock.fast_retries else min(2 ** (attempt - 1), BUS_RETRY_CAP_SECONDS)
        too_old = self.clock.now() + delay - delivery.put_at > target.max_age_seconds
        if attempt < target.max_attempts and not too_old:
            self._say(f"[bus] {target.function} ✗ {type(exc).__name__}: {exc} — retry "
                      f"{attempt + 1}/{target.max_attempts} in {delay}s")
            self.bus.retry(delivery, delay)
            return False
        why = "was the last" if attempt >= target.max_attempts else "is the last: the event is too old"
        where = "goes to the dead-letter queue" if target.dead_letter_url else "is dropped (no dead-letter queue)"
        self._say(f"[bus] {target.function} ✗ {type(exc).__name__}: {exc} — attempt {attempt} {why}; "
                  f"the event {where}")
        if target.dead_letter_url:
            condition = "MaximumRetryAttempts" if attempt >= target.max_attempts else "MaximumEventAgeInSeconds"
            # EventBridge's dead-letter message: the event, with what failed in its attributes. EventBridge
            # has its own error codes; locally the failure is the function's exception, named by its class.
            attributes = {"RULE_ARN": target.rule_arn, "TARGET_ARN": target.function_arn,
                          "ERROR_CODE": type(exc).__name__, "ERROR_MESSAGE": str(exc)[:1000] or "-",
                          "EXHAUSTED_RETRY_CONDITION": condition, "RETRY_ATTEMPTS": str(attempt - 1)}
            self.client("sqs").send_message(
                QueueUrl=target.dead_letter_url, MessageBody=json.dumps(delivery.event),
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
            )
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
        followed: dict[str, _Progress] = {}
        while not self._stop.is_set():
            if all(p.finished for p in followed.values()):
                self._run_work.wait(1.0)  # nothing running: sleep until an execution starts
            self._run_work.clear()
            self._stop.wait(0.1)
            try:
                for machine_arn in self.state_machines.values():
                    for summary in _paged(sfn, "list_executions", "executions", stateMachineArn=machine_arn):
                        arn = summary["executionArn"]
                        progress = followed.get(arn)
                        if progress is None:
                            progress = followed[arn] = _Progress(summary["name"], self._definitions[machine_arn])
                        if progress.finished:
                            continue
                        for event in self._history_events(arn):
                            if event["id"] > progress.last_event_id:
                                progress.last_event_id = event["id"]
                                line = progress.render(event)
                                if line:
                                    self._say(f"[{_short_name(progress.name)}] {line}")
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._say(f"[progress] cannot read executions: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------------------- progress lines
class _Progress:
    """Turns one execution's history events into short lines: `Dispatch ✗ TransientError (retrying)`."""

    _FAILURES = {"LambdaFunctionFailed": "lambdaFunctionFailedEventDetails",
                 "LambdaFunctionTimedOut": "lambdaFunctionTimedOutEventDetails",
                 "LambdaFunctionStartFailed": "lambdaFunctionStartFailedEventDetails",
                 "LambdaFunctionScheduleFailed": "lambdaFunctionScheduleFailedEventDetails",
                 "TaskFailed": "taskFailedEventDetails", "TaskTimedOut": "taskTimedOutEventDetails",
                 "TaskSubmitFailed": "taskSubmitFailedEventDetails"}

    def __init__(self, name: str, definition: dict[str, Any]) -> None:
        self.name = name
        self.states = _all_states(definition)
        self.last_event_id = 0
        self.finished = False
        self.state = ""
        self.failed_in_state = False
        self.attempts: dict[int, int] = {}  # retrier index -> failures matched, in the current state

    def render(self, event: dict[str, Any]) -> str | None:
        kind = event["type"]
        if kind == "ExecutionStarted":
            return "▶ started"
        if kind.endswith("StateEntered"):
            self.state = event["stateEnteredEventDetails"]["name"]
            self.failed_in_state = False
            self.attempts = {}
            if kind == "WaitStateEntered":
                return f"{self.state} ⏳ {self._wait_for(event['stateEnteredEventDetails'].get('input'))}"
            return None
        if kind.endswith("StateExited"):
            if kind in ("TaskStateExited", "WaitStateExited") and not self.failed_in_state:
                return f"{event['stateExitedEventDetails']['name']} ✓"
            return None
        if kind in self._FAILURES:
            details = event.get(self._FAILURES[kind]) or {}
            error = details.get("error") or ("States.Timeout" if "TimedOut" in kind else "States.TaskFailed")
            self.failed_in_state = True
            return f"{self.state} ✗ {error}{self._outcome(error)}"
        if kind == "ExecutionSucceeded":
            self.finished = True
            return "→ SUCCEEDED"
        if kind in ("ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"):
            self.finished = True
            details = event.get("executionFailedEventDetails") or {}
            status = {"ExecutionFailed": "FAILED", "ExecutionAborted": "ABORTED"}.get(kind, "TIMED_OUT")
            return f"→ {status} {details.get('error') or ''}".rstrip()
        return None

    def _wait_for(self, state_input: str | None) -> str:
        """How long a Wait state waits: its Seconds, or its SecondsPath read from the state's input."""
        state = self.states.get(self.state) or {}
        for key in ("Seconds", "Timestamp"):
            if key in state:
                return f"{state[key]}s" if key == "Seconds" else f"until {state[key]}"
        path = state.get("SecondsPath") or state.get("TimestampPath")
        value: Any = json.loads(state_input or "null")
        for part in str(path or "").removeprefix("$").strip(".").split("."):
            value = value.get(part) if isinstance(value, dict) and part else value
        if value is None or path is None:
            return "waiting"
        return f"{value}s" if "SecondsPath" in state else f"until {value}"

    def _outcome(self, error: str) -> str:
        """What the state machine does next with this error, from the state's own Retry and Catch."""
        state = self.states.get(self.state) or {}
        for index, retrier in enumerate(state.get("Retry") or []):
            if _error_matches(error, retrier.get("ErrorEquals") or []):
                self.attempts[index] = self.attempts.get(index, 0) + 1
                if self.attempts[index] <= int(retrier.get("MaxAttempts", 3)):
                    return " (retrying)"
                break  # the first matching retrier decides; exhausted, the Catchers get it
        for catcher in state.get("Catch") or []:
            if _error_matches(error, catcher.get("ErrorEquals") or []):
                return f" (caught → {catcher.get('Next')})"
        return ""


def _error_matches(error: str, names: list[str]) -> bool:
    if error in names or "States.ALL" in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


def _all_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    states: dict[str, dict[str, Any]] = {}
    for name, state in (definition.get("States") or {}).items():
        states[name] = state
        for branch in state.get("Branches") or []:
            states.update(_all_states(branch))
        for key in ("Iterator", "ItemProcessor"):
            if isinstance(state.get(key), dict):
                states.update(_all_states(state[key]))
    return states


_EXECUTION_KEY = re.compile(r"^(.*-[0-9a-f]{4})[0-9a-f]{36}(-r\d+)?$")


def _short_name(name: str) -> str:
    """won-to-stripe-3f2a… for won-to-stripe-3f2a<36 more hex digits>: enough to tell runs apart."""
    found = _EXECUTION_KEY.match(name)
    return f"{found.group(1)}…{found.group(2) or ''}" if found else name


def _describe_bus_event(event: Any) -> str:
    if not isinstance(event, dict):
        return "event"
    detail = event.get("detail")
    if not isinstance(detail, dict):
        detail = {}
    parts = [str(event.get("detail-type", "event"))]
    if detail.get("tenant"):
        parts.append(f"{detail['tenant']}/{detail.get('source', '?')}/{detail.get('object', '?')}"
                     f" {detail.get('action', '')} {detail.get('record_id', '')}".rstrip())
    return " ".join(parts)


def _summarise(result: Any) -> str:
    if isinstance(result, dict) and "started" in result:
        started = result.get("started") or []
        duplicates = result.get("duplicates") or []
        not_matched = result.get("not_matched") or {}
        text = f"{len(started)} started, {len(duplicates)} duplicate(s), {len(not_matched)} not matched"
        reasons = "; ".join(f"{rule}: {reason}" for rule, reason in list(not_matched.items())[:3])
        return f"{text} ({reasons})" if reasons else text
    return "✓"


def _paged(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        page = getattr(client, operation)(**kwargs, **({"nextToken": token} if token else {}))
        yield from page.get(key, [])
        token = page.get("nextToken")
        if not token:
            return


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


@contextmanager
def _quiet_moto_engine(log_level: str | None) -> Iterator[None]:
    """moto's engine logs every caught task failure as an error; the progress lines already say it."""
    engine = logging.getLogger("moto.stepfunctions.parser")
    previous = engine.level
    if (log_level or "").upper() != "DEBUG":
        engine.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        engine.setLevel(previous)
