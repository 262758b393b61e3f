"""Minor units: exact, table-driven, one rounding rule, named rejections."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iso4217 import Currency

from consumer.domain.currency import (
    INT32_MAX,
    checked_total,
    minor_unit_exponent,
    order_total_minor,
    to_minor_units,
)
from consumer.errors import MappingError

CURRENCIES_WITH_MINOR_UNIT = sorted(c.code for c in Currency if c.exponent is not None)


@pytest.mark.parametrize(
    ("code", "expected"),
    [("JPY", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("BHD", 3), ("CLF", 4), ("usd", 2)],
)
def test_exponent_comes_from_the_iso_table(code: str, expected: int) -> None:
    """JPY has no decimals, KWD three, CLF four; lower-case codes are accepted."""
    assert expected == minor_unit_exponent(code)


@pytest.mark.parametrize("code", ["ABC", "", "US", "USDX", "12$"])
def test_unknown_currency_is_rejected(code: str) -> None:
    """A code not in ISO 4217 is rejected as unknown_currency."""
    with pytest.raises(MappingError) as info:
        minor_unit_exponent(code)
    assert info.value.reason == "unknown_currency"


@pytest.mark.parametrize("code", ["XAU", "XDR", "XXX", "XTS"])
def test_currency_without_minor_unit_is_rejected(code: str) -> None:
    """Gold, SDRs and test codes have no minor unit and cannot be a Button total."""
    with pytest.raises(MappingError) as info:
        minor_unit_exponent(code)
    assert info.value.reason == "currency_without_minor_unit"


@pytest.mark.parametrize(
    ("amount", "exponent", "expected"),
    [
        ("12.34", 2, 1234),
        ("1234", 0, 1234),
        ("1.234", 3, 1234),
        ("0.125", 2, 12),  # half to even: down
        ("0.135", 2, 14),  # half to even: up
        ("1234.5", 0, 1234),
        ("1235.5", 0, 1236),
        ("0.1", 2, 10),
        ("-0.125", 2, -12),
    ],
)
def test_to_minor_units_rounds_half_even(amount: str, exponent: int, expected: int) -> None:
    """Sub-minor-unit amounts are rounded once, half to even."""
    assert expected == to_minor_units(Decimal(amount), exponent)


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "1e40"])
def test_non_finite_or_absurd_amounts_are_rejected(amount: str) -> None:
    """NaN, infinities and absurd magnitudes are invalid_amount."""
    with pytest.raises(MappingError) as info:
        to_minor_units(Decimal(amount), 2)
    assert info.value.reason == "invalid_amount"


@given(
    code=st.sampled_from(CURRENCIES_WITH_MINOR_UNIT),
    minor=st.integers(min_value=0, max_value=INT32_MAX),
)
def test_minor_units_are_exact_for_every_currency(code: str, minor: int) -> None:
    """An amount with the currency's own precision converts to exactly its minor units."""
    exponent = minor_unit_exponent(code)
    major = Decimal(minor).scaleb(-exponent)
    assert minor == to_minor_units(major, exponent)
    assert minor == order_total_minor(
        major, None, None, exponent, revenue_includes_tax_and_shipping=False
    )


@given(
    code=st.sampled_from(CURRENCIES_WITH_MINOR_UNIT),
    revenue=st.integers(min_value=0, max_value=10**9),
    tax=st.integers(min_value=0, max_value=10**6),
    shipping=st.integers(min_value=0, max_value=10**6),
)
def test_tax_and_shipping_are_subtracted_exactly(
    code: str, revenue: int, tax: int, shipping: int
) -> None:
    """With inclusive revenue, total = revenue - tax - shipping, to the minor unit."""
    exponent = minor_unit_exponent(code)
    gross = revenue + tax + shipping

    def major(v: int) -> Decimal:
        return Decimal(v).scaleb(-exponent)

    total = order_total_minor(
        major(gross),
        major(tax),
        major(shipping),
        exponent,
        revenue_includes_tax_and_shipping=True,
    )
    assert revenue == total


def test_revenue_is_used_as_is_when_it_excludes_tax_and_shipping() -> None:
    """Tax and shipping are ignored when the source's revenue already excludes them."""
    total = order_total_minor(
        Decimal("10.00"), Decimal("1"), Decimal("2"), 2, revenue_includes_tax_and_shipping=False
    )
    assert total == 1000


def test_net_is_rounded_once() -> None:
    """10.00 - 0.80 - 1.005 = 8.195 -> 820 (rounding the parts first would give 819 or 820)."""
    total = order_total_minor(
        Decimal("10.00"),
        Decimal("0.80"),
        Decimal("1.005"),
        2,
        revenue_includes_tax_and_shipping=True,
    )
    assert total == 820


def test_negative_net_total_is_rejected() -> None:
    """Tax and shipping above the revenue make a negative total: negative_total."""
    with pytest.raises(MappingError) as info:
        order_total_minor(
            Decimal("1"), Decimal("2"), None, 2, revenue_includes_tax_and_shipping=True
        )
    assert info.value.reason == "negative_total"


def test_total_above_int32_is_rejected() -> None:
    """Button's total is an int32."""
    with pytest.raises(MappingError) as info:
        checked_total(INT32_MAX + 1)
    assert info.value.reason == "total_out_of_range"
    assert checked_total(INT32_MAX) == INT32_MAX
