"""Custom expressions: JSONata over the run's context, its result as the action's value, fields to write,
and the guards against expressions that run away."""

from __future__ import annotations

import time
from typing import Any

import billflow.settings
import pytest
from billflow.actions import get_action_type
from billflow.actions.expression import ExpressionAction, ExpressionError, _evaluate_all, evaluate, syntax_problem
from billflow.errors import ConfigurationError
from billflow.rules.templates import render

from tests.unit.test_actions_placeholders import INVOICE_RESULT, RECORD, run_state


@pytest.fixture(autouse=True)
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPRESSION_TIMEOUT_MS", "200")  # runaway tests stop after 0.2 s (+1 s for a kill)
    monkeypatch.setenv("EXPRESSION_MEMORY_MB", "64")
    billflow.settings.get_settings.cache_clear()


def rendered(options: dict[str, Any], **state: Any) -> dict[str, Any]:
    run = run_state({"type": "expression", "options": options}, **state)
    return ExpressionAction().render(run.actions[0], run)


def test_the_registry_gives_this_type() -> None:
    assert isinstance(get_action_type("expression"), ExpressionAction)


def test_the_value_and_the_fields_are_computed_from_the_run() -> None:
    request = rendered({
        "expression": "$round(record.amount.amountMicros / 1000000 * 0.9, 2)",
        "fields": {"discountedAmountMicros": "$round(record.amount.amountMicros * 0.9)",
                   "summary": "company.name & ' / ' & contact.name.firstName & ' / ' & dispatch.external_id",
                   "amount.currencyCode": "'EUR'"},
    }, results=[INVOICE_RESULT])
    assert request == {"value": 11250, "fields": {
        "discountedAmountMicros": 11_250_000_000, "summary": "Acme Robotics / Maya / in_1Q2w3E",
        "amount": {"currencyCode": "EUR"}}}


def test_undefined_leaves_a_field_alone_and_null_clears_it() -> None:
    request = rendered({"fields": {"untouched": "record.noSuchField", "cleared": "null"}})
    assert request == {"value": None, "fields": {"cleared": None}, "undefined_fields": ["untouched"]}


def test_structured_results() -> None:
    request = rendered({"expression": '{"lines": [1..3].{"n": $, "micros": $$.record.amount.amountMicros / 3}}'})
    assert request["value"] == {"lines": [{"n": 1, "micros": RECORD["amount"]["amountMicros"] / 3},
                                          {"n": 2, "micros": RECORD["amount"]["amountMicros"] / 3},
                                          {"n": 3, "micros": RECORD["amount"]["amountMicros"] / 3}]}


def test_send_stores_the_value_as_the_actions_result() -> None:
    run = run_state({"type": "expression", "options": {"expression": "42"}})
    action = ExpressionAction()
    result = action.send(run.actions[0], action.render(run.actions[0], run), run, "k")
    assert result.status == "computed"
    assert result.details == {"value": 42, "fields": []}
    # What a later action reads: the run's results hold {index, action_type, **result}.
    later = run_state(results=[{"index": 0, "action_type": "expression", **result.model_dump(mode="json"),
                                "value": 42}]).context()
    assert render("${EXPRESSION.VALUE} {{ results.0.details.value }}", later) == "42 42"


def test_preview_shows_the_value_and_the_update() -> None:
    run = run_state({"type": "expression", "options": {"expression": "1 + 1", "fields": {"n": "2 * 2"}}})
    action = ExpressionAction()
    request = action.render(run.actions[0], run)
    assert action.preview(run.actions[0], request, run, "k") == [
        {"action": "expression", "value": 2},
        {"action": "expression", "crm": "twenty", "object": "opportunity", "record_id": RECORD["id"],
         "update": {"n": 4}}]


def test_nothing_to_compute_or_bad_fields_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="needs an expression and/or fields"):
        rendered({})
    with pytest.raises(ConfigurationError, match="a mapping of CRM field"):
        rendered({"fields": ["a"]})


# --- failures and guards -----------------------------------------------------------------------------
def test_a_syntax_error_names_its_position() -> None:
    assert syntax_problem("record.amount +") == "invalid JSONata at position 15: Unexpected end of expression (S0207)"
    assert syntax_problem("") == "an expression is JSONata text"
    assert syntax_problem("1" * 10_001) == "an expression is at most 10000 characters"
    with pytest.raises(ExpressionError, match="expression value: invalid JSONata at position"):
        rendered({"expression": "$round(("})


@pytest.mark.parametrize(("expression", "message"), [
    ("$undefinedFunction(1)", "failed at position 19: Attempted to invoke a non-function (T1006)"),
    ("$string(1/0)", "failed: ZeroDivisionError"),
    ("function($x){$x}", "yields something that is not JSON"),
    ('$number("abc")', "failed: ValueError"),
])
def test_run_time_failures_are_configuration_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rendered({"expression": expression})


def test_python_is_out_of_reach() -> None:
    # JSONata has no way to name Python: these are strings, unknown variables or unknown functions.
    assert rendered({"expression": "\"__import__('os').system('false')\""})["value"] == (
        "__import__('os').system('false')")
    assert rendered({"expression": "$__import__"})["value"] is None
    assert rendered({"expression": "$eval('1 + 1')"})["value"] == 2  # $eval evaluates JSONata, nothing else
    assert rendered({"expression": "$os.system('false')"})["value"] is None  # $os is undefined, so is the path
    with pytest.raises(ExpressionError, match="non-function"):
        rendered({"expression": "$system('false')"})


@pytest.mark.parametrize(("expression", "stopped_by"), [
    ("($f := function($n){$f($n + 1)}; $f(0))", "ran away|ran longer"),                  # endless recursion
    ("($f := function($n){$n > 0 ? 1 + $f($n - 1) : 0}; $f(100000))", "ran away|recursed"),  # deep recursion
    ('$match("' + "a" * 40 + '!", /^(a+)+$/)', "ran longer than 200 ms and was stopped"),  # one long regex call
    # A long loop: the Timebox, the kill or the memory cap stops it, whichever comes first on this machine.
    ("$count([1..9000000].($ * 2))", "ran away|ran longer|ran out of memory"),
])
def test_runaway_expressions_are_stopped(expression: str, stopped_by: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionError, match=stopped_by):
        rendered({"expression": expression})
    assert time.monotonic() - started < 5


def test_a_memory_bomb_fails_in_the_child_only() -> None:
    with pytest.raises(ExpressionError, match="ran out of memory"):
        rendered({"expression": '$pad("", 900000000)'})
    assert rendered({"expression": "1 + 1"})["value"] == 2  # this process is fine


def test_a_huge_result_is_refused() -> None:
    with pytest.raises(ExpressionError, match="yields more than 256 KB"):
        rendered({"expression": '$pad("", 300000, "x")'})


def test_without_fork_the_timebox_still_stops_runaways() -> None:
    # What runs where the platform cannot fork: jsonata-python's own time and depth limits.
    with pytest.raises(ExpressionError, match="ran away"):
        _evaluate_all({"value": "($f := function($n){$f($n + 1)}; $f(0))"}, {}, 200)
    assert _evaluate_all({"value": "$sum([1, 2])"}, {}, 200) == {"value": {"defined": True, "value": 3}}


def test_evaluate_runs_several_expressions_in_one_child() -> None:
    assert evaluate({"a": "x + 1", "b": "y", "c": "null"}, {"x": 1}) == {
        "a": (True, 2), "b": (False, None), "c": (True, None)}
