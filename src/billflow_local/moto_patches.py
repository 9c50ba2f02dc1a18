"""Every patch billflow_local applies to moto (and to the libraries moto drives), in one list.

Each entry says what it changes, the AWS behaviour it restores (or that it only saves time and changes no
behaviour), and the moto or botocore attribute it replaces; tests/integration/test_moto_patches.py fails when
moto changes under one of them (the attribute is gone, or the behaviour the patch works around changed).
The virtual clock's patches (Wait states, Retry backoffs) live with the clock in clock.py and are listed here.
"""

from __future__ import annotations

import copy
import functools
import importlib
import logging
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from moto.core.botocore_stubber import BotocoreStubber


@dataclass(frozen=True)
class MotoPatch:
    name: str  # the context manager applying it
    replaces: tuple[str, ...]  # module:attribute paths it replaces while applied
    restores: str  # the AWS behaviour it restores, or "none: speed only"



# One lock for all of moto: its backends are not thread-safe (a conditional update racing another would
# both succeed), while billflow counts on DynamoDB's atomic conditional writes.
MOTO_LOCK = threading.RLock()


@contextmanager
def serialised_moto(
    answered_elsewhere: Callable[[str, Any], bool], answered: Callable[[Any], None] = lambda request: None
) -> Iterator[None]:
    """Run every request moto answers under MOTO_LOCK (the Lambda hook answers before, outside it).

    botocore calls every before-send handler, even after one has answered: requests another handler
    already answers (`answered_elsewhere`) must not also run in moto, where they would fail, slowly.
    `answered(request)` is told of every request moto answered, after it did (outside the lock).
    """
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
def faster_moto_responses() -> Iterator[None]:
    """Work moto repeats on every request, done once: the action names of a response class, and the
    attribute names a response member may be read from.

    For each request moto lists the methods of the service's response class with inspect.getmembers (~60 µs,
    a tenth of a DynamoDB GetItem here), and for each member of each response asks six alias providers which
    attribute names to try (a third of its serialiser's time). Classes do not gain methods while running, and
    the names depend only on the picker, the class of the object read, the member's name and its shape
    (with the parent moto sets on it): the names found the first time are the names moto would find again.
    """
    responses: Any = importlib.import_module("moto.core.responses")
    serialize: Any = importlib.import_module("moto.core.serialize")
    original_names = responses.method_names_from_class
    picker_class = serialize.AttributePicker
    original_keys = picker_class.get_possible_keys
    keys_found: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def get_possible_keys(self: Any, context: Any) -> Any:
        shape = context.shape
        key = (type(self), tuple(self.alias_providers), type(context.obj), context.key, shape,
               getattr(shape, "parent", None))
        found = keys_found.get(key)
        if found is None:
            if len(keys_found) >= 8192:  # shapes are the service models' own, so this holds; a bound all the same
                keys_found.clear()
            # the subclass's own get_possible_keys (XFormed) calls this one through super(): the original here
            found = keys_found[key] = tuple(original_keys(self, context))
        return found

    responses.method_names_from_class = functools.lru_cache(maxsize=512)(original_names)
    picker_class.get_possible_keys = get_possible_keys
    try:
        yield
    finally:
        responses.method_names_from_class = original_names
        picker_class.get_possible_keys = original_keys
        keys_found.clear()


# The modules of moto's engine that copy state data (a state's input, result, parameters, the values its
# paths and intrinsic functions produce, the history events' details) with copy.deepcopy.
ENGINE_STATE_COPIERS = (
    "moto.stepfunctions.parser.asl.eval.states",
    "moto.stepfunctions.parser.asl.eval.event.event_manager",
    "moto.stepfunctions.parser.asl.component.state.exec.execute_state",
    "moto.stepfunctions.parser.asl.component.common.string.string_expression",
    "moto.stepfunctions.parser.asl.component.common.path.result_path",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service",
)


def copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, strings, numbers, booleans, null): ~2.5x faster than
    copy.deepcopy, which keeps a memo for shared and cyclic references JSON cannot have. Anything else (a
    datetime in a history event) is copied by copy.deepcopy."""
    kind = type(value)
    if kind is dict:
        return {key: copy_json(item) for key, item in value.items()}
    if kind is list:
        return [copy_json(item) for item in value]
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    return copy.deepcopy(value)


@contextmanager
def faster_state_copies() -> Iterator[None]:
    """moto's engine copies a state's data (JSON) with copy.deepcopy several times per state (its input on
    entering, for InputPath, for ResultPath, for each history event's details): a tenth of the local runtime's
    CPU under load. Those modules get copy_json for it, which makes the same copies.
    """
    modules: list[Any] = [importlib.import_module(name) for name in ENGINE_STATE_COPIERS]
    originals = [module.copy for module in modules]
    json_copier = types.SimpleNamespace(deepcopy=copy_json)
    for module in modules:
        module.copy = json_copier
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.copy = original


# Every module of moto's engine that imported boto_client_for by name (the Task states billflow's ASL uses).
ENGINE_CLIENT_USERS = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_dynamodb",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_sns",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_events",
)


@contextmanager
def shared_engine_clients() -> Iterator[None]:
    """One boto3 client per (region, service) for moto's Step Functions engine, not a new one per Task.

    moto's engine builds a client for every Lambda and service-integration task it runs (boto_client_for):
    loading the service model and wiring its event hooks, ~5 ms of CPU, the largest part of the engine's own
    time per state. botocore clients are thread-safe, and the engine's are all built the same way (fixed
    credentials and config; moto 5.2.5 ignores a task's state_credentials) from the one default session the
    runtime sets up, so one per region and service answers as a new one would.
    """
    modules: list[Any] = [importlib.import_module(name) for name in ENGINE_CLIENT_USERS]
    original = modules[0].boto_client_for
    clients: dict[tuple[str, str, bool], Any] = {}
    lock = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        from moto.core.models import botocore_stubber

        key = (region, service, bool(botocore_stubber.enabled))
        with lock:
            if key not in clients:
                clients[key] = original(region, service)
            return clients[key]

    for module in modules:
        module.boto_client_for = boto_client_for
    try:
        yield
    finally:
        for module in modules:
            module.boto_client_for = original
        clients.clear()


@contextmanager
def quiet_moto_engine(log_level: str | None) -> Iterator[None]:
    """moto's engine logs every caught task failure as an error; the progress lines already say it."""
    engine = logging.getLogger("moto.stepfunctions.parser")
    previous = engine.level
    if (log_level or "").upper() != "DEBUG":
        engine.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        engine.setLevel(previous)


PATCHES: tuple[MotoPatch, ...] = (
    MotoPatch("serialised_moto", ("moto.core.botocore_stubber:BotocoreStubber.__call__",),
              "DynamoDB's atomic conditional writes under concurrency: moto's backends are not thread-safe, "
              "so two racing conditional updates could both succeed; AWS lets exactly one through"),
    MotoPatch("faster_step_functions",
              ("moto.stepfunctions.parser.backend.execution_worker:ExecutionWorker._get_evaluation_entrypoint",
               "moto.stepfunctions.parser.asl.utils.json_path:parse",
               "moto.stepfunctions.parser.asl.component.common.path.result_path:parse",
               "jsonpath_ng.ext:parse"),
              "none: speed only (each definition and JSONPath parsed once; the parsed forms are immutable)"),
    MotoPatch("faster_state_copies", tuple(f"{name}:copy" for name in ENGINE_STATE_COPIERS),
              "none: speed only (the engine's copies of state data, JSON, made by a JSON copy instead of "
              "copy.deepcopy: the same values)"),
    MotoPatch("shared_engine_clients",
              tuple(f"{name}:boto_client_for" for name in ENGINE_CLIENT_USERS),
              "none: speed only (moto's engine reuses one thread-safe client per region and service instead of "
              "building an identical one for every Task state)"),
    MotoPatch("faster_botocore", ("botocore.useragent:UserAgentString.to_string",),
              "none: speed only (the User-Agent header is built once per client and feature set)"),
    MotoPatch("faster_moto_responses",
              ("moto.core.responses:method_names_from_class",
               "moto.core.serialize:AttributePicker.get_possible_keys"),
              "none: speed only (a response class's action names, and the attribute names each response member "
              "is read from, found once)"),
    MotoPatch("quiet_moto_engine", ("logging:moto.stepfunctions.parser",),
              "Step Functions does not log a caught task failure as an error; the execution history says it"),
    MotoPatch("clock.VirtualClock.installed",
              ("moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function:WaitFunction"
               "._wait_interval",
               "moto.stepfunctions.parser.asl.component.common.retry.retrier_decl:RetrierDecl._eval_body",
               "moto.stepfunctions.parser.asl.component.common.retry.retrier_decl:time"),
              "none: Wait states and Retry backoffs wait as long as on AWS, on a clock a test can advance "
              "(advance_clock) instead of sleeping through a 30-day Wait"),
    MotoPatch("clock.VirtualClock.installed (timestamps)",
              ("moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp:Timestamp"
               "._get_wait_seconds",),
              "a Wait state's Timestamp is UTC: moto subtracts local wall time from it, waiting hours too long "
              "or too short on a machine not on UTC"),
    MotoPatch("lambdas.FunctionHost.attach (a botocore hook, not a replacement)",
              ("botocore:before-send.lambda.Invoke",),
              "Lambda Invoke runs the template's handler code in-process (moto's Lambda needs Docker)"),
    MotoPatch("bus.LocalEventBus.attach (a botocore hook, not a replacement)",
              ("botocore:before-call.eventbridge.PutEvents",),
              "a rule's Lambda targets are invoked, asynchronously, with the rule's input settings (moto's "
              "EventBridge does not invoke Lambda targets)"),
)
