from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoices.rules import LineItemInput, invoice_totals, line_amount
from merchants.money import (
    UnknownCurrency,
    decimal_places,
    format_amount,
    format_money,
    get_currency,
    quantize,
)


@pytest.mark.parametrize(
    ("value", "places"),
    [("1", 0), ("1.50", 1), ("100", 0), ("0.000125", 6), ("1E+3", 0), ("-2.25", 2)],
)
def test_decimal_places_counts_meaningful_digits(value, places):
    assert decimal_places(Decimal(value)) == places


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("1234.5", "USD", "$1,234.50"),
        ("-3", "EUR", "-€3.00"),
        ("2355", "USDC", "2,355.00 USDC"),
        ("0.154250", "USDT", "0.15425 USDT"),
        ("0.123456789", "ETH", "0.12345679 ETH"),
    ],
)
def test_format_money(amount, currency, text):
    assert format_money(Decimal(amount), currency) == text


def test_unknown_currency_raises():
    with pytest.raises(UnknownCurrency):
        get_currency("XXX")


def test_quantize_rounds_half_up_to_currency_precision():
    assert quantize(Decimal("0.005"), "USD") == Decimal("0.01")
    assert quantize(Decimal("0.0000005"), "USDT") == Decimal("0.000001")
    assert format_amount(Decimal("1"), "ETH") == "1.00"


prices = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=Decimal("0.0001"), max_value=1000, places=4, allow_nan=False)


@given(st.lists(st.tuples(quantities, prices), min_size=1, max_size=20))
def test_total_is_the_exact_sum_of_printed_lines(rows):
    usd = get_currency("USD")
    items = [LineItemInput("x", q, p) for q, p in rows]
    subtotal, total = invoice_totals(items, usd)
    assert total == sum(line_amount(i, usd) for i in items)
    assert total == subtotal
    assert decimal_places(total) <= 2
