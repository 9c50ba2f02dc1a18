"""money.py: ISO 4217 exponents, each target's unit, logged rounding and each target's maximum (issue 9)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from billflow.errors import TargetRejected
from billflow.money import (
    ISO_EXPONENTS,
    MAX_AMOUNT,
    STRIPE_MAX_AMOUNT,
    STRIPE_ZERO_DECIMAL,
    check_maximum,
    micros_to_minor,
    minor_to_decimal,
    minor_unit_exponent,
    round_logged,
    target_exponent,
    to_target_minor,
)
from hypothesis import given
from hypothesis import strategies as st

CURRENCIES = sorted({*ISO_EXPONENTS, *STRIPE_ZERO_DECIMAL, "usd", "eur", "gbp", "huf", "twd", "idr", "chf"})
TARGETS = sorted(MAX_AMOUNT)
currencies = st.sampled_from(CURRENCIES)
amounts = st.integers(min_value=-10**12, max_value=10**12)


def test_iso_4217_exponents() -> None:
    assert [minor_unit_exponent(c) for c in ("JPY", "krw", "isk", "ugx", "clp", "vnd")] == [0] * 6
    assert [minor_unit_exponent(c) for c in ("KWD", "bhd", "jod", "tnd", "omr", "iqd", "lyd")] == [3] * 7
    assert [minor_unit_exponent(c) for c in ("usd", "eur", "huf", "twd", "mga", "idr")] == [2] * 6


def test_stripe_counts_in_its_documented_units_for_invoices() -> None:
    # Stripe: zero-decimal currencies are given "as an integer but without multiplying by 100"; MGA is among
    # them although ISO gives it two decimals; ISK stays two-decimal ("an ISK amount of 100 will continue to
    # represent 1 króna"); HUF and TWD are zero-decimal for payouts only.
    assert to_target_minor(500, "jpy", "stripe") == 500
    assert to_target_minor(1000, "mga", "stripe") == 10  # 10.00 MGA
    assert to_target_minor(5, "isk", "stripe") == 500  # 5 ISK
    assert to_target_minor(1050, "huf", "stripe") == 1050
    assert to_target_minor(5124, "kwd", "stripe") == 5124


@given(currencies, amounts)
def test_decimal_amounts_are_exact(currency: str, minor: int) -> None:
    value = minor_to_decimal(minor, currency)
    assert value * (Decimal(10) ** minor_unit_exponent(currency)) == minor


@given(currencies, amounts, st.sampled_from(TARGETS))
def test_a_target_unit_at_least_as_fine_as_iso_keeps_every_amount(currency: str, minor: int, target: str) -> None:
    converted = to_target_minor(minor, currency, target)
    scale = target_exponent(currency, target) - minor_unit_exponent(currency)
    if scale >= 0:
        assert converted == minor * 10**scale
    else:  # coarser (Stripe's MGA): the nearest unit, never further than half a unit away
        assert abs(Decimal(converted) * 10**-scale - minor) <= Decimal(10**-scale) / 2


@given(currencies, st.integers(min_value=0, max_value=10**15))
def test_micros_are_rounded_half_up_to_the_minor_unit(currency: str, micros: int) -> None:
    exponent = minor_unit_exponent(currency)
    step = 10 ** (6 - exponent)
    minor = micros_to_minor(micros, currency)
    assert abs(minor * step - micros) * 2 <= step
    if (micros % step) * 2 == step:
        assert minor * step > micros  # a half goes up


def test_a_fractional_minor_unit_is_logged_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="billflow.money"):
        assert micros_to_minor(1_234_567, "USD") == 123
        assert micros_to_minor(1_230_000, "USD") == 123
    [record] = caplog.records
    assert "rounded a CRM amount in USD from 1.234567 to 1.23" in record.getMessage()
    with caplog.at_level(logging.WARNING, logger="billflow.money"):
        assert round_logged(Decimal("12.345"), 2, what="a quote's unit price") == Decimal("12.35")
    assert "12.345 to 12.35" in caplog.records[-1].getMessage()


@given(currencies, st.integers(min_value=0, max_value=STRIPE_MAX_AMOUNT))
def test_amounts_up_to_stripe_maximum_pass(currency: str, amount: int) -> None:
    check_maximum([("the invoice", amount)], currency, "stripe")


@given(currencies, st.integers(min_value=STRIPE_MAX_AMOUNT + 1, max_value=10**15))
def test_amounts_above_stripe_maximum_are_refused(currency: str, amount: int) -> None:
    # Stripe: "The amount value supports up to eight digits (e.g., a value of 99999999 for a USD charge of
    # $999,999.99)."
    with pytest.raises(TargetRejected, match="at most 99999999 minor units"):
        check_maximum([("line 1", 5), ("the invoice", amount)], currency, "stripe")


def test_targets_without_a_documented_maximum_refuse_nothing() -> None:
    for target in ("quickbooks", "xero", "zoho_books"):
        check_maximum([("the invoice", 10**15)], "usd", target)


@pytest.mark.parametrize("raw", [0, -2, "abc", "Infinity", True, [1]])
def test_an_exchange_rate_must_be_a_positive_number(raw: object) -> None:
    from billflow.errors import ConfigurationError
    from billflow.money import exchange_rate

    with pytest.raises(ConfigurationError, match="zoho_books option exchange_rate must be a positive number"):
        exchange_rate(raw, option="zoho_books option exchange_rate")


def test_an_exchange_rate_is_exact_or_unset() -> None:
    from billflow.money import exchange_rate

    assert exchange_rate("1.0825", option="x") == Decimal("1.0825")
    assert exchange_rate(1.27, option="x") == Decimal("1.27")
    assert exchange_rate(None, option="x") is None
    assert exchange_rate("", option="x") is None
