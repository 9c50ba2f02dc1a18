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
- The bus: moto's EventBridge matches events against the template's own rule pattern but does not invoke
  Lambda targets; each rule gets a local-only SQS queue as its target, drained here into the function.
- The HTTP API: server.LocalApiServer.
- Time: clock.VirtualClock patches moto's Wait states and Retry sleeps (advance_clock, fast_retries).

moto is not thread-safe; billflow relies on DynamoDB's atomic conditional writes under concurrency. moto's
request handling is therefore serialised with one process-wide lock, never held while a handler runs.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from billflow_local.clock import VirtualClock
from billflow_local.lambdas import FunctionHost
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
# Requests after which a local queue may hold something to deliver.
_ENQUEUEING_TARGETS = frozenset({"AWSEvents.PutEvents", "AmazonSQS.SendMessage", "AmazonSQS.SendMessageBatch",
                                 "AmazonSQS.ChangeMessageVisibility"})
EVENTBRIDGE_DEFAULT_RETRIES = 185  # EventBridge's default MaximumRetryAttempts
BUS_RETRY_CAP_SECONDS = 30  # locally, a failed delivery is retried at least this often
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
    # moto's EventBridge builds each target's input through eight JSONPaths, each with a new yacc parser:
    # ~18 ms of CPU per PutEvents entry, most of an ingest here. Parsed expressions are immutable.
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


# ------------------------------------------------------------------------------------------- bus delivery
FOREGROUND_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class BusTarget:
    """A template EventBridgeRule event: its rule on the bus and the local queue standing in for Lambda."""

    function: str
    event_name: str
    rule_name: str
    queue_url: str
    max_receives: int


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
        self.log_level = log_level
        self.clock = VirtualClock(time_scale=time_scale, fast_retries=fast_retries)
        self.functions = FunctionHost(self.template)
        self.server = LocalApiServer(self.template, self.functions.invoke, host=host, port=port, echo=echo,
                                     idle=lambda: not self._busy(True, requests_of_caller=1))
        # Checked now, before anything starts: a bad file is reported with its fields, nothing half-runs.
        self.tenants = load_connections(connections)
        self.rules_path = Path(rules) if rules is not None else None
        self.initial_rules = load_rules(self.rules_path, tenant) if self.rules_path is not None else []
        self.bus_targets: list[BusTarget] = []
        self.state_machines: dict[str, str] = {}  # logical id -> ARN
        self.topic_queues: dict[str, str] = {}  # topic ARN -> local queue URL
        self._definitions: dict[str, dict[str, Any]] = {}  # state machine ARN -> ASL (substituted)
        self._notifications: list[dict[str, Any]] = []
        self._delivery_workers = max(1, delivery_workers)
        self._deliveries_in_flight = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        self._clients = threading.local()
        self._bus_work = threading.Event()  # something may have landed in a local queue
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
            stack.enter_context(patched_environment(FAKE_AWS_ENVIRONMENT, _UNSET_ENVIRONMENT))
            stack.enter_context(mock_aws(config={"stepfunctions": {"execute_state_machine": True}}))
            stack.enter_context(serialised_moto(self.functions.answers, self._notice_work))
            # mock_aws replaced boto3's default session; every client from here on (billflow's, and the ones
            # moto's Step Functions engine creates per task) comes from this one and asks our hook first.
            boto3.setup_default_session(region_name=REGION)
            self._clients = threading.local()  # clients of an earlier start belong to its session
            self.functions.attach(boto3.DEFAULT_SESSION)
            stack.callback(self.functions.detach)
            stack.enter_context(self.clock.installed())
            stack.enter_context(faster_step_functions())
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
            self.echo(line)

    # ------------------------------------------------------------------------------------- provisioning
    def _provision(self) -> None:
        """Create every resource of template.yaml the application touches, with the template's settings."""
        t = self.template
        self.bus_targets, self.state_machines, self.topic_queues = [], {}, {}
        for logical_id in t.resources_of_type(TABLE):
            self._create_table(logical_id)
        for logical_id in t.resources_of_type(QUEUE):
            self._create_queue(logical_id)
        for logical_id in t.resources_of_type(EVENT_BUS):
            self.client("events").create_event_bus(Name=t.physical_name(logical_id))
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
        stack = self.template.stack_name
        bus = str(props.get("EventBusName") or "default")
        rule = props.get("RuleName") or f"{stack}-{function}-{event_name}"[:64]
        events = self.client("events")
        events.put_rule(Name=rule, EventBusName=bus, EventPattern=json.dumps(props["Pattern"]),
                        State=str(props.get("State", "ENABLED")))
        retries = int((props.get("RetryPolicy") or {}).get("MaximumRetryAttempts",
                                                            EVENTBRIDGE_DEFAULT_RETRIES))
        attributes = {"VisibilityTimeout": "30"}
        dead_letter = (props.get("DeadLetterConfig") or {}).get("Arn")
        if dead_letter:
            # After the retries, EventBridge sends the event to the rule's dead-letter queue; SQS's redrive
            # does the same here, into the template's own queue.
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dead_letter, "maxReceiveCount": retries + 1})
        queue = f"{stack}-local-{function}-{event_name}"[:80]
        url = self.client("sqs").create_queue(QueueName=queue, Attributes=attributes)["QueueUrl"]
        target: dict[str, Any] = {"Id": f"{function}-{event_name}"[:64], "Arn": self._queue_arn(url)}
        for key in ("Input", "InputPath", "InputTransformer"):
            if key in props:
                target[key] = props[key]
        events.put_targets(Rule=rule, EventBusName=bus, Targets=[target])
        self.bus_targets.append(BusTarget(function, event_name, rule, url, retries + 1))

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
        """Move the virtual clock on: Wait states and Retry backoffs whose time has come wake up."""
        self.clock.advance(seconds)

    def wait_idle(self, timeout: float = 30, *, include_waiting: bool = True) -> None:
        """Block until nothing is left to do: no request, bus event or delivery pending, no execution
        running. With include_waiting=False, executions waiting on the clock (a Wait state, a Retry
        backoff) count as idle: advance_clock() wakes them. TimeoutError says what is still busy."""
        deadline = time.monotonic() + timeout
        quiet_checks = 0
        while True:
            busy = self._busy(include_waiting)
            quiet_checks = 0 if busy else quiet_checks + 1
            if quiet_checks >= 2:  # twice in a row: nothing was between two hands
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
        if self._deliveries_in_flight:
            busy.append(f"{self._deliveries_in_flight} bus delivery(ies) running")
        sqs = self.client("sqs")
        for target in self.bus_targets:
            attrs = sqs.get_queue_attributes(QueueUrl=target.queue_url, AttributeNames=[
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed"])["Attributes"]
            pending = sum(int(v) for v in attrs.values())
            if pending:
                busy.append(f"{pending} bus event(s) for {target.function} pending")
        waiting = set() if include_waiting else {w.execution for w in self.clock.waiters()}
        sfn = self.client("stepfunctions")
        for arn in self.state_machines.values():
            running = [e["name"] for e in _paged(sfn, "list_executions", "executions", stateMachineArn=arn,
                                                 statusFilter="RUNNING") if e["name"] not in waiting]
            if running:
                busy.append(f"{len(running)} execution(s) running: {', '.join(running[:5])}")
        return busy

    def _notice_work(self, request: Any) -> None:
        """Wake the bus and progress loops when a request may have given them work, instead of polling."""
        target = request.headers.get("X-Amz-Target") or b""
        target = target.decode() if isinstance(target, bytes) else str(target)
        body = request.body if isinstance(request.body, bytes) else str(request.body or "").encode()
        if target in _ENQUEUEING_TARGETS or b"Action=Publish" in body:
            self._bus_work.set()
        elif target == "AWSStepFunctions.StartExecution":
            self._run_work.set()

    def _drain_bus(self) -> None:
        """EventBridge's delivery to Lambda: take the rule's queued events to the target function."""
        sqs = self.client("sqs")
        waiting_since: float | None = None
        while not self._stop.is_set():
            # Webhooks first: Lambda would run these deliveries on other machines; here they share one
            # interpreter with the API, so they wait while requests are in flight (at most a grace period).
            if self.server.in_flight:
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since < FOREGROUND_GRACE_SECONDS:
                    time.sleep(0.002)
                    continue
            waiting_since = None
            self._bus_work.clear()
            received = 0
            for target in self.bus_targets:
                room = self._delivery_workers * 2 - self._deliveries_in_flight
                if room <= 0:
                    break
                try:
                    # No long poll: moto would hold the global lock while it waits.
                    messages = sqs.receive_message(
                        QueueUrl=target.queue_url, MaxNumberOfMessages=min(10, room), WaitTimeSeconds=0,
                        AttributeNames=["ApproximateReceiveCount"],
                    ).get("Messages", [])
                except Exception as exc:
                    if self._stop.is_set():
                        return
                    self._say(f"[bus] cannot read {target.function}'s queue: {exc}")
                    messages = []
                for message in messages:
                    received += 1
                    with self._count_lock:
                        self._deliveries_in_flight += 1
                    assert self._pool is not None
                    try:
                        self._pool.submit(self._deliver, target, message)
                    except RuntimeError:  # the pool is shut down: the runtime is stopping
                        return
            self._drain_topics()
            if not received:
                # Woken by a PutEvents, a publish or a retried delivery; the timeout catches messages
                # whose visibility timeout ran out (a failed delivery coming back), at most a second late.
                self._bus_work.wait(1.0)

    def _deliver(self, target: BusTarget, message: dict[str, Any]) -> None:
        sqs = self.client("sqs")
        try:
            event = json.loads(message["Body"])
            try:
                result = self.functions.invoke(target.function, event)
            except Exception as exc:
                attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
                if attempt >= target.max_receives:
                    self._say(f"[bus] {target.function} ✗ {type(exc).__name__}: {exc} — attempt {attempt} "
                              f"was the last; the event goes to the dead-letter queue")
                    delay = 0
                else:
                    delay = 0 if self.clock.fast_retries else min(2 ** (attempt - 1), BUS_RETRY_CAP_SECONDS)
                    self._say(f"[bus] {target.function} ✗ {type(exc).__name__}: {exc} — retry "
                              f"{attempt + 1}/{target.max_receives} in {delay}s")
                # Left on the queue: it comes back after the delay, like EventBridge's retry policy.
                sqs.change_message_visibility(QueueUrl=target.queue_url,
                                              ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=delay)
                return
            sqs.delete_message(QueueUrl=target.queue_url, ReceiptHandle=message["ReceiptHandle"])
            self._say(f"[bus] {_describe_bus_event(event)} → {target.function}: {_summarise(result)}")
        except Exception as exc:  # the runtime is stopping, or moto failed: report, never kill the pool
            if not self._stop.is_set():
                self._say(f"[bus] delivery to {target.function} failed: {type(exc).__name__}: {exc}")
        finally:
            with self._count_lock:
                self._deliveries_in_flight -= 1

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
