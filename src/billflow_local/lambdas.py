"""The template's functions, run in this process as Lambda would run them.

Each function's handler module (functions/<CodeUri>/app.py) is loaded once under its own module name, and
called with a Lambda-like context. Calls made through the Lambda API (Step Functions' Task states call
`lambda.Invoke`) are answered by a botocore `before-send.lambda.Invoke` handler, before moto's own stubber
sees them: a result becomes the JSON payload, an exception a function error shaped exactly as Lambda
reports it, so the state machine's Retry and Catch match on the exception's class name.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from billflow_local.template import FUNCTION, Template

Handler = Callable[[Any, Any], Any]
INVOKE_EVENT = "before-send.lambda.Invoke"


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # module.attribute, as in the template (app.handler)
    memory_mb: int
    timeout_seconds: int

    @classmethod
    def from_template(cls, template: Template, logical_id: str) -> FunctionSpec:
        code_uri = template.resolve(template.function_setting(logical_id, "CodeUri"))
        if not isinstance(code_uri, str):
            raise ValueError(f"{logical_id}: CodeUri must be a local folder for the local runtime")
        return cls(
            logical_id=logical_id,
            name=template.physical_name(logical_id),
            arn=template.get_att(logical_id, "Arn"),
            code_dir=(template.root / code_uri).resolve(),
            handler=str(template.function_setting(logical_id, "Handler", "app.handler")),
            memory_mb=int(template.function_setting(logical_id, "MemorySize", 128)),
            timeout_seconds=int(template.function_setting(logical_id, "Timeout", 3)),
        )


def request_id() -> str:
    """A random (version 4) UUID, as AWS request and event ids are, without a system call.

    uuid.uuid4() reads os.urandom, and that system call gives up the GIL: under concurrent requests every
    id then waits its turn for the interpreter again. `random` is reseeded after a fork; these ids need
    to be unique, not unpredictable.
    """
    value = random.getrandbits(128) & ~(0xF000 << 64) & ~(0xC000 << 48) | (0x4000 << 64) | (0x8000 << 48)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class LambdaContext:
    """What a Python handler's `context` offers in Lambda (and what Powertools reads from it)."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = spec.arn
        self.memory_limit_in_mb = spec.memory_mb
        self.aws_request_id = request_id()
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionError(Exception):
    """A handler raised: carries Lambda's error document for callers that need it."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(f"{document['errorType']}: {document['errorMessage']}")
        self.document = document


class FunctionHost:
    """Every function of the template, loaded on first call, callable by logical id, name or ARN."""

    def __init__(self, template: Template) -> None:
        self.specs = {
            logical_id: FunctionSpec.from_template(template, logical_id)
            for logical_id in template.resources_of_type(FUNCTION)
        }
        self._by_name = {spec.name: spec for spec in self.specs.values()}
        self._handlers: dict[str, Handler] = {}
        self._load_lock = threading.Lock()
        self.invocations = 0  # handler calls so far (benchmarks read it)
        self._active = 0
        self._count_lock = threading.Lock()
        self._session: Any = None

    @property
    def active(self) -> int:
        """Handler calls running right now."""
        return self._active

    # --------------------------------------------------------------------------------- lookups
    def spec_for(self, function: str) -> FunctionSpec | None:
        """A function by logical id, name, ARN or partial ARN (with or without a qualifier)."""
        if function in self.specs:
            return self.specs[function]
        name = function
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) > 6 else ""
        elif name.startswith("function:") or ":function:" in name:
            name = name.split("function:", 1)[1].split(":")[0]
        else:
            name = name.split(":")[0]
        return self._by_name.get(name)

    def handler(self, logical_id: str) -> Handler:
        loaded = self._handlers.get(logical_id)  # no lock once loaded: a waited-for lock gives up the GIL
        if loaded is not None:
            return loaded
        with self._load_lock:
            if logical_id not in self._handlers:
                self._handlers[logical_id] = _load_handler(self.specs[logical_id])
            return self._handlers[logical_id]

    @contextmanager
    def replaced(self, logical_id: str, handler: Handler) -> Iterator[None]:
        """Run `handler` in place of the function's own while the block runs (fault injection in tests)."""
        original = self.handler(logical_id)
        with self._load_lock:
            self._handlers[logical_id] = handler
        try:
            yield
        finally:
            with self._load_lock:
                self._handlers[logical_id] = original

    # --------------------------------------------------------------------------------- calls
    def invoke(self, function: str, event: Any, handler: Handler | None = None) -> Any:
        """Call a function's handler in-process; its exception propagates as is."""
        spec = self.spec_for(function)
        if spec is None:
            raise KeyError(f"no function {function!r} in the template; known: {', '.join(self.specs)}")
        call = handler or self.handler(spec.logical_id)
        with self._count_lock:
            self._active += 1
            self.invocations += 1
        try:
            return call(event, LambdaContext(spec))
        finally:
            with self._count_lock:
                self._active -= 1

    def invoke_for_lambda_api(self, spec: FunctionSpec, payload: bytes) -> tuple[dict[str, str], bytes]:
        """(headers, body) as Lambda's Invoke answers: a result, or an Unhandled function error."""
        headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "$LATEST",
                   "X-Amzn-RequestId": request_id()}
        try:
            event = json.loads(payload) if payload else {}
        except ValueError:
            document = {"errorType": "Runtime.InvalidPayload", "errorMessage": "payload is not JSON",
                        "stackTrace": []}
            return {**headers, "X-Amz-Function-Error": "Unhandled"}, json.dumps(document).encode()
        try:
            result = self.invoke(spec.logical_id, event)
        except Exception as exc:  # any exception is a function error, exactly as Lambda reports it
            return {**headers, "X-Amz-Function-Error": "Unhandled"}, json.dumps(error_document(exc)).encode()
        try:
            return headers, json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            document = {"errorType": "Runtime.MarshalError",
                        "errorMessage": f"Unable to marshal response: {exc}", "stackTrace": []}
            return {**headers, "X-Amz-Function-Error": "Unhandled"}, json.dumps(document).encode()

    # --------------------------------------------------------------------------------- botocore hook
    def answers(self, event_name: str, request: Any) -> bool:
        """True for the requests answer_invoke answers (every Invoke: unknown names get Lambda's 404)."""
        return event_name.startswith(INVOKE_EVENT) and self._session is not None

    def answer_invoke(self, request: Any, **_: Any) -> Any:
        """The `before-send.lambda.Invoke` handler: answer from the in-process handler, outside moto."""
        from botocore.awsrequest import AWSResponse

        name = _function_in_url(request.url)
        spec = self.spec_for(name)
        if spec is None:
            body = json.dumps({"Type": "User", "message": f"Function not found: {name}"}).encode()
            headers = {"Content-Type": "application/json", "x-amzn-ErrorType": "ResourceNotFoundException"}
            return AWSResponse(request.url, 404, http_headers(headers), RawBody(body))
        payload = _body_bytes(request.body)
        invocation_type = (request.headers.get("X-Amz-Invocation-Type") or "RequestResponse")
        if isinstance(invocation_type, bytes):
            invocation_type = invocation_type.decode()
        if invocation_type == "DryRun":
            return AWSResponse(request.url, 204, http_headers({}), RawBody(b""))
        if invocation_type == "Event":
            threading.Thread(
                target=self.invoke_for_lambda_api, args=(spec, payload), daemon=True,
                name=f"lambda-event-{spec.logical_id}",
            ).start()
            return AWSResponse(request.url, 202, http_headers({}), RawBody(b""))
        headers, body = self.invoke_for_lambda_api(spec, payload)
        return AWSResponse(request.url, 200, http_headers(headers), RawBody(body))

    def attach(self, session: Any) -> None:
        """Answer Lambda invocations made through clients of this boto3 session (created from now on)."""
        session.events.register(INVOKE_EVENT, self.answer_invoke, unique_id="billflow-local-invoke")
        self._session = session

    def detach(self) -> None:
        if self._session is not None:
            self._session.events.unregister(INVOKE_EVENT, unique_id="billflow-local-invoke")
            self._session = None


class RawBody(BytesIO):
    """The raw body botocore reads a response from: .read() and .stream() like urllib3's."""

    def stream(self, **_: Any) -> Any:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def error_document(exc: BaseException) -> dict[str, Any]:
    """Lambda's Python runtime error document: errorType is the exception's class name."""
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "requestId": "",
        "stackTrace": traceback.format_list(frames),
    }


def _function_in_url(url: str) -> str:
    path = urlsplit(url).path  # /2015-03-31/functions/<url-encoded name or ARN>/invocations
    return unquote(path.split("/functions/", 1)[-1].split("/", 1)[0])


def http_headers(values: dict[str, str]) -> Any:
    """Response headers for an AWSResponse, which keeps them in its own case-insensitive HeadersDict (an
    HTTPHeaders, what the stubs ask for, costs an email.message parse per header)."""
    return values


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if hasattr(body, "read"):
        data = body.read()
        return data if isinstance(data, bytes) else str(data).encode()
    return bytes(body)


def _load_handler(spec: FunctionSpec) -> Handler:
    module_path, _, attribute = spec.handler.rpartition(".")
    source = spec.code_dir / (module_path.replace(".", "/") + ".py")
    if not source.is_file():
        raise FileNotFoundError(f"{spec.logical_id}: handler module {source} does not exist")
    # A unique module name per function: every function's module is called app.py.
    module_name = f"billflow_local_fn_{spec.logical_id}_{module_path.replace('.', '_')}"
    loader_spec = importlib.util.spec_from_file_location(module_name, source)
    if loader_spec is None or loader_spec.loader is None:
        raise ImportError(f"cannot load {source}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise AttributeError(f"{spec.logical_id}: {source} has no callable {attribute!r}")
    if hasattr(getattr(module, "app", None), "append_context"):
        return _one_event_at_a_time(handler)
    return handler  # type: ignore[no-any-return]


def _one_event_at_a_time(handler: Handler) -> Handler:
    """A Powertools resolver keeps the event it is answering on itself (current_event, the route's arguments),
    as a Lambda container may: it answers one event at a time. Here one module serves every request, so its
    calls take turns (the console loads its files and calls the admin API several at once)."""
    lock = threading.Lock()

    @functools.wraps(handler)
    def one_at_a_time(event: Any, context: Any) -> Any:
        with lock:
            return handler(event, context)

    return one_at_a_time
