"""Each target's option limits, declared once in rules/target_limits.py (issue 9, item 4)."""

from __future__ import annotations

import pytest
from billflow.rules.target_limits import OPTION_LIMITS, option_problems


def test_zoho_payment_terms_above_100_days_are_a_problem() -> None:
    # Zoho's invoice schema, payment_terms: "Maximum value is 100 days."
    assert option_problems("zoho_books.invoice", {"days_until_due": 120}) == [
        'zoho_books option days_until_due is 120, at most 100 (Zoho Books payment_terms: "Maximum value is '
        '100 days.")']
    assert option_problems("zoho_books.invoice", {"days_until_due": 100}) == []
    assert option_problems("zoho_books", {"days_until_due": "101"})  # the system alone, a number as text


def test_a_zoho_estimate_validity_is_not_payment_terms() -> None:
    assert option_problems("zoho_books.estimate", {"days_until_due": 120}) == []


def test_other_targets_keep_their_own_limits() -> None:
    assert option_problems("stripe.invoice", {"days_until_due": 120}) == []
    assert option_problems("xero.invoice", {"days_until_due": 120}) == []
    assert option_problems("quickbooks.invoice", {"doc_number": "X" * 22}) == [
        "quickbooks option doc_number has 22 characters, at most 21 (QuickBooks: DocNumber has at most 21 "
        "characters)"]


@pytest.mark.parametrize("system", sorted(OPTION_LIMITS))
def test_negative_or_non_numeric_days_are_problems_everywhere(system: str) -> None:
    assert option_problems(f"{system}.invoice", {"days_until_due": -1}) == [
        f"{system} option days_until_due must be at least 0"]
    assert option_problems(f"{system}.invoice", {"days_until_due": "soon"}) == [
        f"{system} option days_until_due must be a whole number"]
    assert option_problems(f"{system}.invoice", {"days_until_due": True}) == [
        f"{system} option days_until_due must be a whole number"]


@pytest.mark.parametrize("rate", [0, -1.5, "abc", "NaN", True])
def test_exchange_rates_must_be_positive_numbers(rate: object) -> None:
    for system in ("quickbooks", "zoho_books"):
        [problem] = option_problems(f"{system}.invoice", {"exchange_rate": rate})
        assert problem.startswith(f"{system} option exchange_rate must be a positive number")


def test_values_filled_at_run_time_and_unknown_systems_are_not_judged() -> None:
    assert option_problems("zoho_books.invoice", {"days_until_due": "{{ record.terms }}"}) == []
    assert option_problems("webhook", {"days_until_due": 10_000}) == []
    assert option_problems("zoho_books.invoice", {}) == []
