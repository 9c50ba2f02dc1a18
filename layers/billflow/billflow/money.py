"""Money, in one place: currency exponents, each target's unit, rounding and each target's maximum amount.

- A draft's amounts (LineItem.unit_amount_minor) are in the currency's ISO 4217 minor unit: cents for EUR,
  yen for JPY (exponent 0), fils for KWD (exponent 3).
- Stripe counts in its own unit, which is not always ISO's: for invoices its documented zero-decimal list
  (STRIPE_ZERO_DECIMAL: "provide amounts as an integer but without multiplying by 100") holds MGA, which ISO
  gives two decimals, and leaves out ISK, which ISO gives none (Stripe keeps ISK two-decimal: "an ISK amount
  of 100 will continue to represent 1 króna"). HUF and TWD are zero-decimal only for Stripe payouts, not for
  invoices. to_target_minor converts.
- QuickBooks, Xero and Zoho Books take decimal amounts: minor_to_decimal.
- Rounding is ROUND_HALF_UP (commercial rounding, what the targets apply to line amounts themselves). It is
  never silent: a value that had to be rounded is logged with what, from and to (round_logged).
- Maximum amounts: Stripe documents that "the amount value supports up to eight digits" (99999999 minor
  units); check_maximum refuses more before anything is created. QuickBooks, Xero and Zoho Books document no
  maximum amount for the fields billflow sends (checked in Finance.xsd, Xero's OpenAPI and Zoho's API pages):
  none is enforced for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from billflow.errors import ConfigurationError, TargetRejected

logger = logging.getLogger(__name__)

ROUNDING = ROUND_HALF_UP

# ISO 4217 minor-unit exponents other than 2 (the ISO 4217 table, "Minor unit" column).
ISO_EXPONENTS: dict[str, int] = {
    **dict.fromkeys("bif clp djf gnf isk jpy kmf krw pyg rwf ugx uyi vnd vuv xaf xof xpf".split(), 0),
    **dict.fromkeys("bhd iqd jod kwd lyd omr tnd".split(), 3),
    **dict.fromkeys("clf uyw".split(), 4),
}
ZERO_DECIMAL = frozenset(code for code, exponent in ISO_EXPONENTS.items() if exponent == 0)
THREE_DECIMAL = frozenset(code for code, exponent in ISO_EXPONENTS.items() if exponent == 3)

# Stripe (docs.stripe.com/currencies): its zero-decimal currencies, and the three-decimal ones it supports.
STRIPE_ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
STRIPE_THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())
STRIPE_MAX_AMOUNT = 99_999_999  # "the amount value supports up to eight digits"

# The largest amount, in the target's own minor unit, each target takes (None: none documented).
MAX_AMOUNT: dict[str, int | None] = {"stripe": STRIPE_MAX_AMOUNT, "quickbooks": None, "xero": None,
                                     "zoho_books": None}

# 10^15 units (a quadrillion) is beyond what any billing system accepts and well inside Decimal's exact
# 28 digits; a larger amount is refused with its reason rather than failing on a rounding error.
MAX_AMOUNT_MICROS = Decimal(10) ** 21


def minor_unit_exponent(currency: str) -> int:
    """ISO 4217's number of decimals of the currency (2 when ISO says so or the code is unknown)."""
    return ISO_EXPONENTS.get(currency.lower(), 2)


def target_exponent(currency: str, target: str) -> int:
    """The decimals of the unit a target counts the currency in."""
    code = currency.lower()
    if target == "stripe":
        if code in STRIPE_ZERO_DECIMAL:
            return 0
        return 3 if code in STRIPE_THREE_DECIMAL else 2
    return minor_unit_exponent(code)


def round_logged(value: Decimal, exponent: int, *, what: str) -> Decimal:
    """value rounded (ROUND_HALF_UP) to exponent decimals; a value that changes is logged, never silent."""
    rounded = value.quantize(Decimal(1).scaleb(-exponent), rounding=ROUNDING)
    if rounded != value:
        logger.warning("rounded %s from %s to %s (%d decimals, half up)", what, value, rounded, exponent)
    return rounded


def micros_to_minor(amount_micros: int | str, currency: str) -> int:
    """Twenty keeps amounts in micros (millionths of the unit); a draft wants the ISO minor unit."""
    try:
        micros = Decimal(str(amount_micros))
    except InvalidOperation:
        raise ConfigurationError(f"amount.amountMicros {str(amount_micros)[:40]!r} is not a number") from None
    if not micros.is_finite() or abs(micros) >= MAX_AMOUNT_MICROS:
        raise ConfigurationError(
            f"amount.amountMicros {str(amount_micros)[:40]} is beyond the largest amount billflow sends "
            f"({MAX_AMOUNT_MICROS:.0e} micros, a quadrillion units): no billing system accepts it")
    exponent = minor_unit_exponent(currency)
    unit = micros / Decimal(1_000_000)
    return int(round_logged(unit, exponent, what=f"a CRM amount in {currency.upper()}").scaleb(exponent))


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    """For targets that take decimal amounts (QuickBooks, Xero, Zoho Books)."""
    return Decimal(amount_minor) / (Decimal(10) ** minor_unit_exponent(currency))


def to_target_minor(amount_minor: int | Decimal, currency: str, target: str, *, what: str = "an amount") -> int:
    """An amount in the ISO minor unit (a whole or, for a line total, a fractional number of them) in the
    target's own minor unit, rounded (and logged) when the target's unit is coarser."""
    unit = Decimal(amount_minor) / (Decimal(10) ** minor_unit_exponent(currency))
    exponent = target_exponent(currency, target)
    return int(round_logged(unit, exponent, what=f"{what} in {currency.upper()} for {target}").scaleb(exponent))


def check_maximum(amounts: Iterable[tuple[str, int]], currency: str, target: str) -> None:
    """Refuse, before anything is created, any (label, amount in the target's minor unit) above the target's
    documented maximum."""
    limit = MAX_AMOUNT.get(target)
    if limit is None:
        return
    too_large = [(label, amount) for label, amount in amounts if abs(amount) > limit]
    if too_large:
        shown = ", ".join(f"{label} ({amount} minor units)" for label, amount in too_large)
        raise TargetRejected(
            f"{target} takes amounts of at most {limit} minor units of {currency.upper()}; {shown} "
            "exceed it, so nothing was created", maximum=limit, currency=currency.upper())


def exchange_rate(raw: Any, *, option: str) -> Decimal | None:
    """A rule's exchange rate (base-currency units for one unit of the document's currency): None when unset,
    a positive finite number otherwise; anything else is a ConfigurationError naming the option."""
    if raw is None or raw == "":
        return None
    try:
        rate = Decimal(str(raw))
    except InvalidOperation:
        rate = Decimal(0)
    if isinstance(raw, bool) or not rate.is_finite() or rate <= 0:
        raise ConfigurationError(f"{option} must be a positive number (base-currency units for one unit of the "
                                 "document's currency)")
    return rate
