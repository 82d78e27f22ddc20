"""The arithmetic and limits of an invoice, shared by forms, services and the API.

The rounding rule, in one place (`compute_invoice`); every figure is rounded half-up to the
currency's decimals, per line, and only then added up, so the printed lines always add up to
the printed totals:

1. line gross = quantity x unit price;
2. line discount = gross x percent / 100, or the amount given (never above the gross);
   line net = gross - line discount (the "Amount" column); subtotal = Σ line nets;
3. an invoice discount is shared out over the lines in proportion to their nets: a percent
   discount is net x percent / 100 per line; an amount discount gives each line its share
   rounded down, and the quanta left over go to the lines with the largest remainders (ties:
   the earlier line), so the shares add up to exactly the amount;
4. tax per line on base = net - invoice discount share: exclusive base x p / 100, inclusive
   base x p / (100 + p) (the tax already inside the price);
5. total = subtotal - invoice discount + exclusive taxes. Inclusive taxes are shown, not added.

A credit note credits part or all of a line's quantity (`credit_line`). What a line is worth
to the payer is its net less its share of the invoice discount, plus its exclusive tax (an
inclusive tax is already in the net). Crediting is pro rata and cumulative: after `c` of the
line's `Q` units are credited, each of its figures (net, invoice discount share, tax) counts
as credited `figure x c / Q`, rounded half-up; a credit note gets the difference between that
after and before it. So crediting 2 of 5, then 3 of 5, gives exactly the line's figures in
total: rounding never makes the credits of a line add up to more, or less, than it charged.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from django.core.exceptions import ValidationError

from merchants.money import (
    MAX_AMOUNT,
    MAX_QUANTITY,
    QUANTITY_DECIMALS,
    Currency,
    decimal_places,
    format_amount,
    quantize,
)

HUNDRED = Decimal(100)
MAX_PERCENT_DECIMALS = 4


class DiscountKind:
    NONE = ""
    PERCENT = "percent"
    AMOUNT = "amount"
    CHOICES = [(NONE, "No discount"), (PERCENT, "Percent"), (AMOUNT, "Amount")]
    VALUES = frozenset({NONE, PERCENT, AMOUNT})


@dataclass(frozen=True)
class TaxSpec:
    """A tax as a line carries it: a copy of the rate, so the line never changes with it."""

    name: str
    percent: Decimal
    inclusive: bool = False
    rate_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {format(self.percent.normalize(), 'f')}%"


@dataclass(frozen=True)
class Discount:
    kind: str = DiscountKind.NONE
    value: Decimal = Decimal(0)

    def __bool__(self) -> bool:
        return self.kind != DiscountKind.NONE and self.value > 0


NO_DISCOUNT = Discount()


@dataclass(frozen=True)
class LineItemInput:
    name: str
    quantity: Decimal
    unit_price: Decimal
    description: str = ""
    discount: Discount = NO_DISCOUNT
    tax: TaxSpec | None = None


@dataclass(frozen=True)
class LineFigures:
    gross: Decimal
    discount: Decimal
    net: Decimal
    invoice_discount: Decimal
    tax: Decimal


@dataclass(frozen=True)
class TaxLine:
    name: str
    percent: Decimal
    inclusive: bool
    # The amount the tax is charged on, tax itself excluded.
    taxable: Decimal
    tax: Decimal

    @property
    def label(self) -> str:
        return f"{self.name} {format(self.percent.normalize(), 'f')}%"


@dataclass(frozen=True)
class InvoiceFigures:
    lines: list[LineFigures]
    subtotal: Decimal
    discount: Decimal
    taxes: list[TaxLine] = field(default_factory=list)
    tax_exclusive: Decimal = Decimal(0)
    tax_inclusive: Decimal = Decimal(0)
    total: Decimal = Decimal(0)

    @property
    def tax_total(self) -> Decimal:
        return self.tax_exclusive + self.tax_inclusive


def check_percent(value: Decimal, *, what: str = "Percent") -> None:
    if value < 0:
        raise ValidationError(f"{what} cannot be negative.", code="percent_negative")
    if value > HUNDRED:
        raise ValidationError(f"{what} may be at most 100%.", code="percent_too_large")
    if decimal_places(value) > MAX_PERCENT_DECIMALS:
        raise ValidationError(
            f"{what} may have at most {MAX_PERCENT_DECIMALS} decimals.", code="percent_precision"
        )


def check_discount(discount: Discount, base: Decimal, currency: Currency) -> None:
    """`base` is what the discount comes off: the line's gross, or the invoice's subtotal."""
    if discount.kind not in DiscountKind.VALUES:
        raise ValidationError("Choose a percent or an amount.", code="discount_kind")
    if discount.kind == DiscountKind.PERCENT:
        check_percent(discount.value, what="The discount")
    elif discount.kind == DiscountKind.AMOUNT:
        check_price(discount.value, currency, what="The discount")
        if discount.value > base:
            raise ValidationError(
                f"The discount may be at most {format_amount(base, currency)} {currency.code}.",
                code="discount_too_large",
            )


def compute_invoice(
    items: Sequence[LineItemInput], currency: Currency, discount: Discount = NO_DISCOUNT
) -> InvoiceFigures:
    """Every figure of an invoice, by the rule in this module's docstring. Expects input that
    passed the checks (a discount never above what it comes off)."""
    grosses = [quantize(item.quantity * item.unit_price, currency) for item in items]
    line_discounts = [
        _discount_amount(item.discount, gross, currency)
        for item, gross in zip(items, grosses, strict=True)
    ]
    nets = [gross - off for gross, off in zip(grosses, line_discounts, strict=True)]
    subtotal = sum(nets, Decimal(0))
    shares = _share_discount(discount, nets, subtotal, currency)
    lines: list[LineFigures] = []
    by_rate: dict[tuple[str, Decimal, bool], list[Decimal]] = {}
    for item, gross, off, net, share in zip(
        items, grosses, line_discounts, nets, shares, strict=True
    ):
        base = net - share
        tax = Decimal(0)
        if item.tax is not None:
            tax = line_tax(base, item.tax, currency)
            key = (item.tax.name, item.tax.percent.normalize(), item.tax.inclusive)
            taxable_tax = by_rate.setdefault(key, [Decimal(0), Decimal(0)])
            taxable_tax[0] += base - tax if item.tax.inclusive else base
            taxable_tax[1] += tax
        lines.append(
            LineFigures(
                gross=gross,
                discount=quantize(off, currency),
                net=quantize(net, currency),
                invoice_discount=quantize(share, currency),
                tax=quantize(tax, currency),
            )
        )
    taxes = [
        TaxLine(
            name=name,
            percent=percent,
            inclusive=inclusive,
            taxable=quantize(taxable, currency),
            tax=quantize(tax, currency),
        )
        for (name, percent, inclusive), (taxable, tax) in by_rate.items()
    ]
    exclusive = sum((t.tax for t in taxes if not t.inclusive), Decimal(0))
    inclusive_tax = sum((t.tax for t in taxes if t.inclusive), Decimal(0))
    invoice_discount = sum(shares, Decimal(0))
    return InvoiceFigures(
        lines=lines,
        subtotal=quantize(subtotal, currency),
        discount=quantize(invoice_discount, currency),
        taxes=taxes,
        tax_exclusive=quantize(exclusive, currency),
        tax_inclusive=quantize(inclusive_tax, currency),
        total=quantize(subtotal - invoice_discount + exclusive, currency),
    )


def line_tax(base: Decimal, tax: TaxSpec, currency: Currency) -> Decimal:
    if tax.inclusive:
        return quantize(base * tax.percent / (HUNDRED + tax.percent), currency)
    return quantize(base * tax.percent / HUNDRED, currency)


def _discount_amount(discount: Discount, base: Decimal, currency: Currency) -> Decimal:
    if not discount:
        return Decimal(0)
    if discount.kind == DiscountKind.PERCENT:
        return quantize(base * discount.value / HUNDRED, currency)
    return min(discount.value, base)


def _share_discount(
    discount: Discount, nets: list[Decimal], subtotal: Decimal, currency: Currency
) -> list[Decimal]:
    if not discount or subtotal <= 0:
        return [Decimal(0)] * len(nets)
    if discount.kind == DiscountKind.PERCENT:
        return [quantize(net * discount.value / HUNDRED, currency) for net in nets]
    amount = min(discount.value, subtotal)
    exact = [amount * net / subtotal for net in nets]
    shares = [share.quantize(currency.quantum, rounding=ROUND_DOWN) for share in exact]
    left = int((amount - sum(shares, Decimal(0))) / currency.quantum)
    by_remainder = sorted(range(len(nets)), key=lambda i: (-(exact[i] - shares[i]), i))
    for index in by_remainder[:left]:
        shares[index] += currency.quantum
    return shares


def check_quantity(quantity: Decimal) -> None:
    if quantity <= 0:
        raise ValidationError("Quantity must be greater than zero.", code="quantity_not_positive")
    if quantity > MAX_QUANTITY:
        raise ValidationError(
            f"Quantity may be at most {format_amount(MAX_QUANTITY, 'USD')}.",
            code="quantity_too_large",
        )
    if decimal_places(quantity) > QUANTITY_DECIMALS:
        raise ValidationError(
            f"Quantity may have at most {QUANTITY_DECIMALS} decimals.", code="quantity_precision"
        )


def check_price(price: Decimal, currency: Currency, *, what: str = "Price") -> None:
    if price < 0:
        raise ValidationError(f"{what} cannot be negative.", code="price_negative")
    if price > MAX_AMOUNT:
        raise ValidationError(
            f"{what} may be at most {format_amount(MAX_AMOUNT, currency)} {currency.code}.",
            code="price_too_large",
        )
    if decimal_places(price) > currency.decimals:
        raise ValidationError(
            f"{currency.code} amounts have at most {currency.decimals} decimals.",
            code="price_precision",
        )


def line_amount(item: LineItemInput, currency: Currency) -> Decimal:
    """The line's net: its gross less its own discount, as the Amount column shows it."""
    return compute_invoice([item], currency).lines[0].net


def invoice_totals(
    items: Sequence[LineItemInput], currency: Currency, discount: Discount = NO_DISCOUNT
) -> tuple[Decimal, Decimal]:
    """(subtotal, total) of `compute_invoice`."""
    figures = compute_invoice(items, currency, discount)
    return figures.subtotal, figures.total


def check_line_amount(quantity: Decimal, price: Decimal, currency: Currency) -> None:
    """A line's quantity and price may each be in bounds and their product not: every stored
    figure (a line's amount, the subtotal before an invoice discount) stays within MAX_AMOUNT,
    not only the total an invoice discount may bring back down."""
    if quantity * price > MAX_AMOUNT:
        limit = format_amount(MAX_AMOUNT, currency)
        raise ValidationError(
            f"Quantity times price may be at most {limit} {currency.code}.",
            code="amount_too_large",
        )


def check_total(total: Decimal, currency: Currency, *, what: str = "The invoice total") -> None:
    if total > MAX_AMOUNT:
        limit = format_amount(MAX_AMOUNT, currency)
        raise ValidationError(
            f"{what} may be at most {limit} {currency.code}.", code="total_too_large"
        )


# Credit notes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditableLine:
    """A stored invoice line, as crediting needs it."""

    position: int
    quantity: Decimal
    net: Decimal
    invoice_discount: Decimal
    tax: Decimal
    tax_inclusive: bool = False


@dataclass(frozen=True)
class CreditFigures:
    amount: Decimal  # what the payer is credited, tax included
    tax: Decimal  # of which tax (exclusive or inclusive)


def credit_line(
    line: CreditableLine, *, credited: Decimal, quantity: Decimal, currency: Currency
) -> CreditFigures:
    """What crediting `quantity` more units of a line is worth, when `credited` units of it
    are credited already, by the cumulative pro-rata rule of this module's docstring.
    Expects `0 < quantity <= line.quantity - credited` (see `check_credit_quantity`)."""

    def share(figure: Decimal, units: Decimal) -> Decimal:
        return quantize(figure * units / line.quantity, currency)

    def worth(units: Decimal) -> tuple[Decimal, Decimal]:
        tax = share(line.tax, units)
        payable = share(line.net, units) - share(line.invoice_discount, units)
        return payable + (Decimal(0) if line.tax_inclusive else tax), tax

    after, tax_after = worth(credited + quantity)
    before, tax_before = worth(credited)
    return CreditFigures(amount=after - before, tax=tax_after - tax_before)


def check_credit_quantity(quantity: Decimal, *, remaining: Decimal) -> None:
    if not quantity.is_finite() or quantity <= 0:
        raise ValidationError("Credit more than zero.", code="credit_not_positive")
    if decimal_places(quantity) > QUANTITY_DECIMALS:
        raise ValidationError(
            f"Quantity may have at most {QUANTITY_DECIMALS} decimals.", code="quantity_precision"
        )
    if quantity > remaining:
        left = format(remaining.normalize(), "f")
        raise ValidationError(
            f"At most {left} of this line is left to credit.", code="credit_above_remaining"
        )
