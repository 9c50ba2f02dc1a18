"""Criteria patterns: a real parser with positions and reasons, never eval."""

from __future__ import annotations

import itertools

import pytest
from billflow.rules.pattern import PatternError, default_pattern, parse_pattern
from hypothesis import given
from hypothesis import strategies as st


def truth_of(*true_numbers: int):  # type: ignore[no-untyped-def]
    return lambda n: n in true_numbers


@pytest.mark.parametrize(
    ("pattern", "true", "expected"),
    [
        ("1 AND 2", (1, 2), True),
        ("1 AND 2", (1,), False),
        ("1 OR 2", (2,), True),
        ("(1 AND 2) OR 3", (3,), True),
        ("(1 AND 2) OR 3", (1,), False),
        ("1 AND (2 OR 3)", (1, 3), True),
        ("1 AND (2 OR 3)", (2, 3), False),
        ("NOT 1", (), True),
        ("NOT (1 OR 2) AND 3", (3,), True),
        ("((1))", (1,), True),
        ("1 and 2 or 3", (3,), True),  # keywords in any case
        ("1 OR 2 AND 3", (1,), True),  # AND binds tighter than OR
        ("1 OR 2 AND 3", (2,), False),
    ],
)
def test_patterns_evaluate_with_usual_precedence(pattern: str, true: tuple[int, ...], expected: bool) -> None:
    assert parse_pattern(pattern, 3).evaluate(truth_of(*true)) is expected


@pytest.mark.parametrize(
    ("pattern", "position", "reason"),
    [
        ("1 AND", 6, "ends where"),
        ("(1 AND 2", 9, "missing ')'"),
        ("1 AND 4", 7, "criterion 4 does not exist"),
        ("0 OR 1", 1, "criterion 0 does not exist"),
        ("1 2", 3, "unexpected '2' after a complete expression"),
        ("1 XOR 2", 3, "unexpected 'X'"),
        ("1 AND )", 7, "unexpected ')'"),
        ("", 1, "empty pattern"),
        ("__import__('os')", 1, "unexpected '_'"),
    ],
)
def test_invalid_patterns_name_position_and_reason(pattern: str, position: int, reason: str) -> None:
    with pytest.raises(PatternError) as err:
        parse_pattern(pattern, 3)
    assert err.value.position + 1 == position
    assert reason in err.value.reason


def test_default_pattern_requires_every_criterion() -> None:
    tree = default_pattern(3)
    assert tree.evaluate(truth_of(1, 2, 3))
    assert not tree.evaluate(truth_of(1, 2))


@st.composite
def expressions(draw: st.DrawFn, depth: int = 3) -> str:
    if depth == 0 or draw(st.booleans()):
        return str(draw(st.integers(1, 4)))
    kind = draw(st.sampled_from(["AND", "OR", "NOT", "()"]))
    if kind == "NOT":
        return f"NOT {draw(expressions(depth - 1))}"
    if kind == "()":
        return f"({draw(expressions(depth - 1))})"
    return f"{draw(expressions(depth - 1))} {kind} {draw(expressions(depth - 1))}"


@given(expressions())
def test_parser_agrees_with_boolean_algebra(expression: str) -> None:
    tree = parse_pattern(expression, 4)
    for values in itertools.product([False, True], repeat=4):
        env = {f"c{i + 1}": v for i, v in enumerate(values)}
        python = expression.replace("AND", "and").replace("OR", "or").replace("NOT", "not")
        for i in range(4, 0, -1):
            python = python.replace(str(i), f"c{i}")
        expected = eval(python, {}, env)  # noqa: S307 - the oracle, on generated input only
        assert tree.evaluate(lambda n, vs=values: vs[n - 1]) is expected


@pytest.mark.parametrize("pattern", ["(" * 5000 + "1" + ")" * 5000, "NOT " * 5000 + "1", "(NOT " * 3000 + "1"])
def test_a_pattern_nested_thousands_deep_is_refused_with_a_reason_not_a_recursion_error(pattern: str) -> None:
    with pytest.raises(PatternError) as err:
        parse_pattern(pattern, 3)
    assert "nested more than 32 levels" in err.value.reason


def test_a_pattern_nested_to_the_limit_still_parses() -> None:
    assert parse_pattern("(" * 32 + "1" + ")" * 32, 1).evaluate(truth_of(1)) is True
