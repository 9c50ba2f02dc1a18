"""Custom expressions (seed 004's custom functions, without user code): JSONata over the run's context.

    - type: expression
      options:
        expression: "$round(record.amount.amountMicros / 1000000 * 0.9, 2)"   (its result: the action's value)
        fields:                                                                (optional: write to the record)
          discountedAmount: "$round(record.amount.amountMicros * 0.9)"

Both are JSONata (https://jsonata.org, the language Step Functions uses), evaluated by jsonata-python (pure
Python) with the run's context as input: record, event, company, contact, line_items, results, dispatch and
rule, as placeholders see it. The value is stored as the action's result ({{ dispatch.value }},
{{ results.N.value }}, ${EXPRESSION.VALUE} for later actions); `fields` become one update of the CRM record
(a field whose expression yields nothing, JSONata's undefined, is left alone; null clears it). An invalid
expression is refused when the rule is saved, with its position.

Nothing here runs Python written by a rule's author: JSONata has no access to files, the network, the
environment or Python objects, only to the input document and its own functions. A runaway expression is
stopped, in three layers:
- jsonata-python's Timebox checks every evaluation step: past EXPRESSION_TIMEOUT_MS (default 1000 ms) of
  evaluation, or past MAX_DEPTH nested evaluations (runaway recursion), it raises D1012 / D1011;
- the evaluation runs in a forked child process (where the platform can fork, as Lambda and Linux do),
  which the parent kills when it has not answered within the timeout plus a second: this catches what a
  step check cannot, one long builtin call such as a catastrophic regular expression;
- the child's address space is capped at its size when forked plus EXPRESSION_MEMORY_MB (default 128 MB),
  so an expression that builds a huge string or array fails with "out of memory" instead of taking the
  function down; its answer is capped at MAX_RESULT_BYTES.
Without fork (not on Lambda), only the Timebox applies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from billflow.actions.base import ActionType
from billflow.actions.field_update import fields_for
from billflow.connectors import get_crm
from billflow.errors import ConfigurationError
from billflow.models.documents import DispatchResult
from billflow.models.rules import Action
from billflow.models.run import RunState
from billflow.settings import get_settings
from billflow.storage.secrets import get_secret_store

try:
    import resource  # Unix only: without it the child's memory is not capped
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

OPTIONS = frozenset({"expression", "fields"})
MAX_EXPRESSION_CHARS = 10_000
MAX_RESULT_BYTES = 256 * 1024
MAX_DEPTH = 150  # nested evaluations; Python's own recursion limit comes later
FIELD_PATH = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*$")
VALUE = "value"  # the name of the main expression among the ones evaluated together


class ExpressionError(ConfigurationError):
    """An expression that does not parse, fails, or runs away: final, fix the rule."""


def _timeout_ms() -> int:
    return get_settings().expression_timeout_ms


def _memory_bytes() -> int:
    return get_settings().expression_memory_mb * 1024 * 1024


def _jsonata() -> Any:
    """jsonata-python, imported when an expression is first met (it has no type hints)."""
    # deferred: cold start; a function that evaluates no expression never loads the JSONata parser
    import jsonata  # type: ignore[import-untyped]

    return jsonata


# --- parsing ---------------------------------------------------------------------------------------
def syntax_problem(text: Any) -> str | None:
    """Why `text` is not a JSONata expression (with the position), or None when it parses."""
    if not isinstance(text, str) or not text.strip():
        return "an expression is JSONata text"
    if len(text) > MAX_EXPRESSION_CHARS:
        return f"an expression is at most {MAX_EXPRESSION_CHARS} characters"
    jsonata = _jsonata()
    try:
        jsonata.Jsonata(text)
    except jsonata.JException as err:
        return f"invalid JSONata at position {err.location}: {_message(err)}"
    except Exception as err:
        return f"invalid JSONata: {err}"
    return None


def _message(err: Exception) -> str:
    code = getattr(err, "error", "")
    text = str(err)
    return f"{text} ({code})" if code and code not in text else text


# --- evaluation ------------------------------------------------------------------------------------
def evaluate(expressions: dict[str, str], data: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    """Each expression's (defined, value) over `data`, all in one sandboxed evaluation."""
    for name, text in expressions.items():
        problem = syntax_problem(text)
        if problem:
            raise ExpressionError(f"expression {name}: {problem}")
    timeout_ms = _timeout_ms()
    if not hasattr(os, "fork"):
        return _decode(_evaluate_all(expressions, data, timeout_ms))
    return _decode(_in_child(lambda: _evaluate_all(expressions, data, timeout_ms), timeout_ms))


def _evaluate_all(expressions: dict[str, str], data: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
    jsonata = _jsonata()
    answers: dict[str, Any] = {}
    for name, text in expressions.items():
        # The Timebox starts when the expression is built: build it right before evaluating.
        program = jsonata.Jsonata(text, timeout=timeout_ms, stack=MAX_DEPTH)
        program.set_output_convert_nulls(False)  # keep JSONata's undefined (None) apart from null
        try:
            result = program.evaluate(data)
        except jsonata.JException as err:
            if err.error in ("D1011", "D1012"):
                raise ExpressionError(f"expression {name} ran away: {_message(err)} (limits: "
                                      f"{timeout_ms} ms, {MAX_DEPTH} nested steps)") from None
            raise ExpressionError(f"expression {name} failed at position {err.location}: {_message(err)}") from None
        except RecursionError:
            raise ExpressionError(f"expression {name} recursed too deeply") from None
        except MemoryError:
            raise
        except Exception as err:
            raise ExpressionError(f"expression {name} failed: {type(err).__name__}: {err}") from None
        value = jsonata.Utils.convert_nulls(result)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ExpressionError(f"expression {name} yields something that is not JSON "
                                  "(a function, NaN or infinity)") from None
        answers[name] = {"defined": result is not None, "value": value}
    return answers


def _decode(answers: dict[str, Any]) -> dict[str, tuple[bool, Any]]:
    return {name: (bool(a["defined"]), a["value"]) for name, a in answers.items()}


def _in_child(work: Callable[[], dict[str, Any]], timeout_ms: int) -> dict[str, Any]:
    """Run `work` in a forked child under a memory cap; kill it when it overruns. JSON comes back."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        code = 0
        try:
            _cap_memory(_memory_bytes())
            payload: dict[str, Any]
            try:
                payload = {"ok": work()}
            except ExpressionError as err:
                payload = {"error": err.message}
            except MemoryError:
                payload = {"error": f"ran out of memory (limit {_memory_bytes() // 2**20} MB)"}
            data = json.dumps(payload, ensure_ascii=False).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout_ms / 1000 + 1.0
    chunks: list[bytes] = []
    size = 0
    failure: str | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failure = f"ran longer than {timeout_ms} ms and was stopped"
                break
            ready, _, _ = select.select([read_end], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_RESULT_BYTES:
                failure = f"yields more than {MAX_RESULT_BYTES // 1024} KB"
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        if failure:
            _kill(pid)
        _, status = os.waitpid(pid, 0)
    if failure:
        raise ExpressionError(f"expression {failure}")
    if not chunks:
        signalled = os.WIFSIGNALED(status) and os.WTERMSIG(status)
        raise ExpressionError(f"expression evaluation died{f' (signal {signalled})' if signalled else ''}")
    answer = json.loads(b"".join(chunks))
    if "error" in answer:
        raise ExpressionError(answer["error"])
    result: dict[str, Any] = answer["ok"]
    return result


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _cap_memory(extra_bytes: int) -> None:
    """Cap the address space at its current size plus `extra_bytes` (Linux; elsewhere no cap)."""
    if resource is None:
        return
    try:
        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + extra_bytes
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (OSError, ValueError):
        pass


# --- the action type -------------------------------------------------------------------------------
class ExpressionAction(ActionType):
    def render(self, action: Action, state: RunState) -> dict[str, Any]:
        options = action.options
        expressions: dict[str, str] = {}
        if options.get("expression") is not None:
            expressions[VALUE] = options["expression"]
        fields = options.get("fields") or {}
        if not isinstance(fields, dict):
            raise ConfigurationError("expression fields: a mapping of CRM field -> JSONata expression")
        expressions.update({f"fields.{name}": text for name, text in fields.items()})
        if not expressions:
            raise ConfigurationError("an expression action needs an expression and/or fields")
        answers = evaluate(expressions, state.context())
        update: dict[str, Any] = {}
        left_alone: list[str] = []
        for name in fields:
            defined, value = answers[f"fields.{name}"]
            if defined:
                _merge(update, fields_for(name, value))
            else:
                left_alone.append(name)
        request: dict[str, Any] = {"value": answers[VALUE][1] if VALUE in answers else None, "fields": update}
        if left_alone:
            request["undefined_fields"] = left_alone
        return request

    def send(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> DispatchResult:
        if request.get("fields"):
            connection = get_secret_store().connection(state.tenant, state.event.source)
            get_crm(connection.type).update_record(
                connection, state.event.object, state.event.record_id, request["fields"]
            )
        details = {"value": request.get("value"), "fields": sorted(request.get("fields") or {})}
        # `value` is a field of DispatchResult where the model has it; details.value always holds it.
        return DispatchResult.model_validate(
            {"status": "updated" if request.get("fields") else "computed", "value": request.get("value"),
             "details": details}
        )

    def preview(self, action: Action, request: dict[str, Any], state: RunState, key: str) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = [{"action": action.type, "value": request.get("value")}]
        if request.get("fields"):
            steps.append({"action": action.type, "crm": state.event.source, "object": state.event.object,
                          "record_id": state.event.record_id, "update": request["fields"]})
        return steps

    def check(self, action: Action) -> list[tuple[str, str]]:
        """Problems a saved rule would have (rules/validation.py): (where in the action, what)."""
        options = action.options
        problems = [(f"options.{k}", f"unknown expression option; known: {', '.join(sorted(OPTIONS))}")
                    for k in sorted(set(options) - OPTIONS)]
        if options.get("expression") is None and not options.get("fields"):
            problems.append(("options", "an expression action needs an expression and/or fields"))
        if options.get("expression") is not None:
            problem = syntax_problem(options["expression"])
            if problem:
                problems.append(("options.expression", problem))
        fields = options.get("fields")
        if fields is not None and not isinstance(fields, dict):
            problems.append(("options.fields", "a mapping of CRM field -> JSONata expression"))
        elif fields:
            for name, text in fields.items():
                if not FIELD_PATH.match(str(name)):
                    problems.append((f"options.fields.{name}", "not a field name or dotted path"))
                problem = syntax_problem(text)
                if problem:
                    problems.append((f"options.fields.{name}", problem))
        return problems


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
