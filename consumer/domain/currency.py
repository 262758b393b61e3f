"""Money in the currency's minor units, exactly: Button's ``total`` is an int32 of minor units.

Button bills commissions on the integer it receives, so a fixed ``* 100`` (wrong for JPY, KWD,
CLF...) or a float (``0.1 + 0.2``) would over- or under-bill merchants. Every amount stays a
``Decimal`` until it is rounded exactly once, to the exponent the maintained ISO 4217 table
(the ``iso4217`` package) gives for the currency.

Rounding rule: ``ROUND_HALF_EVEN`` (banker's rounding). Amounts normally arrive already exact in
minor units and are not rounded at all; the rule only matters for sub-minor-unit values (a
computed ``10.005`` USD, a unit price of ``0.125``). Half-even is unbiased over many orders, so
neither the merchant nor Button gains systematically from ties, and it is the IEEE 754 / Decimal
default that finance and reconciliation tools use.

Errors are ``MappingError`` with a named ``reason`` (``unknown_currency``,
``currency_without_minor_unit``, ``invalid_amount``, ``negative_total``, ``total_out_of_range``);
the mapper turns them into a ``Reject``.
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from iso4217 import Currency

from consumer.errors import MappingError

ROUNDING = ROUND_HALF_EVEN
"""The one rounding rule used for every amount sent to Button (see the module docstring)."""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
"""Button's ``total`` is an int32 >= 0."""

# A private arithmetic context: precise enough that subtraction and scaling of any amount we
# accept are exact (we reject magnitudes above 10**_MAX_ADJUSTED before rounding), and it traps
# rather than silently producing NaN or infinities. Immutable use only: never installed globally.
_MAX_ADJUSTED = 30
_CTX = Context(prec=80, rounding=ROUNDING, traps=[InvalidOperation])
_ONE = Decimal(1)


def normalise_currency_code(code: str) -> str:
    """``" usd "`` -> ``"USD"``; Button wants the three-letter upper-case ISO 4217 code."""
    return code.strip().upper()


@functools.lru_cache(maxsize=256)  # a handful of codes in practice; errors are not cached
def minor_unit_exponent(code: str) -> int:
    """The number of decimal places of the currency's minor unit (JPY 0, USD 2, KWD 3, CLF 4).

    Raises:
        MappingError: ``unknown_currency`` if the code is not in ISO 4217 (or empty),
            ``currency_without_minor_unit`` for codes with no minor unit (XAU, XDR, XXX...),
            which cannot be expressed as Button's integer total.
    """
    normalised = normalise_currency_code(code)
    if len(normalised) != 3 or not normalised.isascii() or not normalised.isalpha():
        raise MappingError("unknown_currency", f"not an ISO 4217 code: {code!r}")
    try:
        currency = Currency(normalised)
    except ValueError:
        raise MappingError("unknown_currency", f"not an ISO 4217 code: {code!r}") from None
    exponent = currency.exponent
    if exponent is None:
        raise MappingError(
            "currency_without_minor_unit", f"{normalised} has no minor unit in ISO 4217"
        )
    return int(exponent)


def to_minor_units(amount: Decimal | int, exponent: int) -> int:
    """Convert a major-unit amount to minor units, rounding once with ``ROUNDING``.

    ``to_minor_units(Decimal("12.34"), 2) == 1234``; ``to_minor_units(Decimal("1234"), 0) == 1234``.
    The result may be negative or large; range checks are the caller's (see ``checked_total``).

    Raises:
        MappingError: ``invalid_amount`` for NaN, infinities or absurd magnitudes (> 10**30).
    """
    value = Decimal(amount)
    if not value.is_finite():
        raise MappingError("invalid_amount", f"amount is not a finite number: {value}")
    if value and value.adjusted() > _MAX_ADJUSTED:
        raise MappingError("invalid_amount", f"amount too large: {value}")
    # The context's own methods: the same operations as ``value.scaleb(exponent, context=_CTX)``
    # and ``quantize(_ONE, rounding=ROUNDING, context=_CTX)`` (the context rounds with
    # ``ROUNDING``), without the keyword arguments' cost.
    return int(_CTX.quantize(_CTX.scaleb(value, exponent), _ONE))


def checked_total(minor: int) -> int:
    """Return ``minor`` if it is a valid Button order ``total`` (0 <= total <= int32 max).

    Raises:
        MappingError: ``negative_total`` or ``total_out_of_range``.
    """
    if minor < 0:
        raise MappingError("negative_total", f"order total is negative: {minor} minor units")
    if minor > INT32_MAX:
        raise MappingError("total_out_of_range", f"order total exceeds int32: {minor}")
    return minor


def order_total_minor(
    revenue: Decimal,
    tax: Decimal | None,
    shipping: Decimal | None,
    exponent: int,
    *,
    revenue_includes_tax_and_shipping: bool,
) -> int:
    """Button's commissionable ``total`` in minor units: revenue, excluding tax and shipping.

    When the source's revenue includes tax and shipping, they are subtracted first, exactly, and
    the net is rounded once (rounding the parts separately could be off by one minor unit).
    Otherwise revenue is used as is and tax/shipping are ignored.

    Raises:
        MappingError: ``invalid_amount``, ``negative_total`` or ``total_out_of_range``.
    """
    net = Decimal(revenue)
    if revenue_includes_tax_and_shipping:
        for part in (tax, shipping):
            if part is not None:
                if not Decimal(part).is_finite():
                    raise MappingError("invalid_amount", f"amount is not finite: {part}")
                net = _CTX.subtract(net, Decimal(part))
    return checked_total(to_minor_units(net, exponent))
