"""Amounts in a currency's smallest unit: cents for EUR, yen for JPY."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from billflow.errors import ConfigurationError

# ISO 4217 currencies with no minor unit (Stripe's zero-decimal list) and the three-decimal ones.
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

# 10^15 units (a quadrillion) is beyond what any billing system accepts and well inside Decimal's exact
# 28 digits; a larger amount is refused with its reason rather than failing on a rounding error.
MAX_AMOUNT_MICROS = Decimal(10) ** 21


def minor_unit_exponent(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def micros_to_minor(amount_micros: int | str, currency: str) -> int:
    """Twenty keeps amounts in micros (millionths of the unit); targets want the smallest unit."""
    try:
        micros = Decimal(str(amount_micros))
    except InvalidOperation:
        raise ConfigurationError(f"amount.amountMicros {str(amount_micros)[:40]!r} is not a number") from None
    if not micros.is_finite() or abs(micros) >= MAX_AMOUNT_MICROS:
        raise ConfigurationError(
            f"amount.amountMicros {str(amount_micros)[:40]} is beyond the largest amount billflow sends "
            f"({MAX_AMOUNT_MICROS:.0e} micros, a quadrillion units): no billing system accepts it")
    scale = Decimal(10) ** (6 - minor_unit_exponent(currency))
    return int((micros / scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def minor_to_decimal(amount_minor: int, currency: str) -> Decimal:
    """For targets that take decimal amounts (QuickBooks, Xero, Zoho Books)."""
    exponent = minor_unit_exponent(currency)
    return Decimal(amount_minor) / (Decimal(10) ** exponent)
