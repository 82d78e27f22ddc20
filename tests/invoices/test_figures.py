"""Worked examples of the one rounding rule (invoices.rules.compute_invoice).

Each example is worked by hand in its comments, half-up to the currency's decimals per line,
then added up; the test asserts every printed figure.
"""

from decimal import ROUND_DOWN, Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from invoices.rules import (
    Discount,
    LineItemInput,
    TaxSpec,
    check_discount,
    compute_invoice,
)
from merchants.money import get_currency

USD = get_currency("USD")
USDT = get_currency("USDT")
VAT20 = TaxSpec("VAT", Decimal("20"))
VAT20_INCL = TaxSpec("VAT", Decimal("20"), inclusive=True)
REDUCED5 = TaxSpec("VAT", Decimal("5"))
REDUCED7_INCL = TaxSpec("VAT", Decimal("7"), inclusive=True)
D = Decimal


def line(qty: str, price: str, *, discount: Discount | None = None, tax: TaxSpec | None = None):
    return LineItemInput(
        name="x",
        quantity=D(qty),
        unit_price=D(price),
        discount=discount or Discount(),
        tax=tax,
    )


def test_mixed_exclusive_rates_with_line_and_invoice_percent_discounts():
    figures = compute_invoice(
        [
            # 3 x 19.99 = 59.97; 10% off = 5.997 -> 6.00; net 53.97
            line("3", "19.99", discount=Discount("percent", D("10")), tax=VAT20),
            # 1 x 100.00, no line discount; net 100.00
            line("1", "100.00", tax=REDUCED5),
        ],
        USD,
        # 10% off the invoice, per line: 5.397 -> 5.40 and 10.00
        Discount("percent", D("10")),
    )

    assert [(f.gross, f.discount, f.net, f.invoice_discount, f.tax) for f in figures.lines] == [
        # tax on 53.97 - 5.40 = 48.57: x 20% = 9.714 -> 9.71
        (D("59.97"), D("6.00"), D("53.97"), D("5.40"), D("9.71")),
        # tax on 100.00 - 10.00 = 90.00: x 5% = 4.50
        (D("100.00"), D("0"), D("100.00"), D("10.00"), D("4.50")),
    ]
    assert figures.subtotal == D("153.97")
    assert figures.discount == D("15.40")
    assert [(t.label, t.taxable, t.tax) for t in figures.taxes] == [
        ("VAT 20%", D("48.57"), D("9.71")),
        ("VAT 5%", D("90.00"), D("4.50")),
    ]
    assert figures.tax_exclusive == D("14.21")
    assert figures.tax_inclusive == D("0")
    # 153.97 - 15.40 + 14.21
    assert figures.total == D("152.78")


def test_inclusive_tax_is_shown_but_not_added():
    figures = compute_invoice(
        [
            # 1 x 119.99 incl. 20%: tax = 119.99 x 20/120 = 19.998 -> 20.00; net of tax 99.99
            line("1", "119.99", tax=VAT20_INCL),
            # 2 x 10.70 = 21.40 incl. 7%: tax = 21.40 x 7/107 = 1.40
            line("2", "10.70", tax=REDUCED7_INCL),
        ],
        USD,
    )

    assert [f.tax for f in figures.lines] == [D("20.00"), D("1.40")]
    assert [(t.label, t.inclusive, t.taxable, t.tax) for t in figures.taxes] == [
        ("VAT 20%", True, D("99.99"), D("20.00")),
        ("VAT 7%", True, D("20.00"), D("1.40")),
    ]
    assert figures.subtotal == D("141.39")
    assert figures.tax_inclusive == D("21.40")
    assert figures.tax_exclusive == D("0")
    assert figures.total == D("141.39")  # the prices already hold the tax


def test_inclusive_and_exclusive_rates_mixed_with_an_amount_discount():
    figures = compute_invoice(
        [
            line("1", "60.00", tax=VAT20_INCL),
            line("1", "30.00", tax=VAT20),
            line("1", "10.00"),  # untaxed
        ],
        USD,
        # 10.00 off 100.00, shared by net: 6.00, 3.00, 1.00 (exact, no remainder)
        Discount("amount", D("10.00")),
    )

    assert [f.invoice_discount for f in figures.lines] == [D("6.00"), D("3.00"), D("1.00")]
    # incl.: 54.00 x 20/120 = 9.00; excl.: 27.00 x 20% = 5.40
    assert [f.tax for f in figures.lines] == [D("9.00"), D("5.40"), D("0")]
    # The same name and percent but one inclusive, one not: two summary rows.
    assert [(t.inclusive, t.taxable, t.tax) for t in figures.taxes] == [
        (True, D("45.00"), D("9.00")),
        (False, D("27.00"), D("5.40")),
    ]
    # 100.00 - 10.00 + 5.40
    assert figures.total == D("95.40")


def test_an_amount_discount_gives_left_over_cents_to_the_largest_remainders():
    figures = compute_invoice(
        [line("1", "10.00"), line("1", "10.00"), line("1", "10.00")],
        USD,
        # 10.00 / 3 = 3.3333 each: 3.33 x 3 = 9.99, the one cent left goes to the first line
        Discount("amount", D("10.00")),
    )

    assert [f.invoice_discount for f in figures.lines] == [D("3.34"), D("3.33"), D("3.33")]
    assert figures.discount == D("10.00")
    assert figures.total == D("20.00")


def test_half_a_cent_rounds_up_per_line_before_adding():
    # 0.5 x 0.25 = 0.125 -> 0.13 on each line: 0.26, where rounding the sum would give 0.25
    cents = compute_invoice([line("0.5", "0.25"), line("0.5", "0.25")], USD)

    assert [f.net for f in cents.lines] == [D("0.13"), D("0.13")]
    assert cents.total == D("0.26")


def test_six_decimal_currencies_round_to_six_places():
    figures = compute_invoice([line("1.5", "0.333333", tax=VAT20)], USDT)

    # 1.5 x 0.333333 = 0.4999995 -> 0.500000; x 20% = 0.100000
    assert figures.lines[0].net == D("0.500000")
    assert figures.lines[0].tax == D("0.100000")
    assert figures.total == D("0.600000")


@pytest.mark.parametrize(
    ("discount", "message"),
    [
        (Discount("percent", D("100.01")), "The discount may be at most 100%."),
        (Discount("percent", D("-1")), "The discount cannot be negative."),
        (Discount("amount", D("60.01")), "The discount may be at most 60.00 USD."),
        (Discount("amount", D("1.001")), "USD amounts have at most 2 decimals."),
    ],
)
def test_discounts_outside_the_line_are_refused(discount, message):
    with pytest.raises(ValidationError) as error:
        check_discount(discount, D("60.00"), USD)
    assert error.value.messages == [message]


AMOUNTS = st.decimals(min_value=D("0"), max_value=D("100000"), places=2)
PERCENTS = st.decimals(min_value=D("0"), max_value=D("100"), places=2)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2),
            AMOUNTS,
            PERCENTS,
            st.sampled_from([None, VAT20, VAT20_INCL, REDUCED5]),
        ),
        min_size=1,
        max_size=8,
    ),
    share=st.integers(min_value=0, max_value=100),
)
def test_printed_figures_always_add_up(rows, share):
    items = [
        line(str(q), str(p), discount=Discount("percent", pct), tax=tax) for q, p, pct, tax in rows
    ]
    subtotal = compute_invoice(items, USD).subtotal
    # An amount discount anywhere from nothing to the whole subtotal, in whole cents.
    amount = (subtotal * share / 100).quantize(D("0.01"), rounding=ROUND_DOWN)
    figures = compute_invoice(items, USD, Discount("amount", amount))

    assert figures.discount == amount
    assert sum(f.net for f in figures.lines) == figures.subtotal
    assert sum(f.invoice_discount for f in figures.lines) == figures.discount
    assert all(0 <= f.invoice_discount <= f.net for f in figures.lines)
    assert sum(t.tax for t in figures.taxes) == figures.tax_total
    assert figures.total == figures.subtotal - figures.discount + figures.tax_exclusive
    assert figures.total >= 0
