from __future__ import annotations

import pytest
from billflow.errors import ConfigurationError
from billflow.money import micros_to_minor, minor_to_decimal
from billflow.rules.templates import placeholders, render


@pytest.mark.parametrize(
    ("micros", "currency", "minor"),
    [(12_500_000_000, "USD", 1_250_000), (1_000_000, "eur", 100), (5_000_000, "JPY", 5),
     (1_234_567, "KWD", 1235), (15_000, "USD", 2), (14_999, "USD", 1)],
)
def test_micros_become_the_smallest_unit(micros: int, currency: str, minor: int) -> None:
    assert micros_to_minor(micros, currency) == minor


@pytest.mark.parametrize("micros", [10**34, "1e34", 1e34, -(10**22), "Infinity", "NaN", "12 EUR"])
def test_an_amount_no_billing_system_accepts_is_refused_with_its_reason(micros: object) -> None:
    with pytest.raises(ConfigurationError) as err:
        micros_to_minor(micros, "usd")  # type: ignore[arg-type]
    assert "amount.amountMicros" in err.value.message


def test_the_largest_amount_billflow_sends_still_converts_exactly() -> None:
    assert micros_to_minor(10**21 - 1, "usd") == 10**17


def test_minor_back_to_decimal() -> None:
    assert str(minor_to_decimal(1_250_000, "usd")) == "12500"
    assert str(minor_to_decimal(5, "jpy")) == "5"


def test_render_keeps_types_for_whole_placeholders_and_interpolates_text() -> None:
    context = {"dispatch": {"external_id": "in_1"}, "record": {"amount": {"amountMicros": 5}}}
    assert render("{{ dispatch.external_id }}", context) == "in_1"
    assert render("{{record.amount.amountMicros}}", context) == 5
    assert render({"note": "Invoice {{ dispatch.external_id }} sent"}, context) == {"note": "Invoice in_1 sent"}


def test_unknown_placeholder_at_run_time_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"company\.name"):
        render("{{ company.name }}", {})


def test_placeholders_are_found_in_nested_values() -> None:
    assert placeholders({"a": ["{{ x.y }}", {"b": "{{ z }} and {{ w.v }}"}]}) == {"x.y", "z", "w.v"}
