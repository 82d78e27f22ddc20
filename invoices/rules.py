"""The arithmetic and limits of an invoice, shared by forms, services and the API."""

from dataclasses import dataclass
from decimal import Decimal

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


@dataclass(frozen=True)
class LineItemInput:
    name: str
    quantity: Decimal
    unit_price: Decimal
    description: str = ""


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


def check_price(price: Decimal, currency: Currency) -> None:
    if price < 0:
        raise ValidationError("Price cannot be negative.", code="price_negative")
    if price > MAX_AMOUNT:
        raise ValidationError(
            f"Price may be at most {format_amount(MAX_AMOUNT, currency)} {currency.code}.",
            code="price_too_large",
        )
    if decimal_places(price) > currency.decimals:
        raise ValidationError(
            f"{currency.code} amounts have at most {currency.decimals} decimals.",
            code="price_precision",
        )


def line_amount(item: LineItemInput, currency: Currency) -> Decimal:
    return quantize(item.quantity * item.unit_price, currency)


def invoice_totals(items: list[LineItemInput], currency: Currency) -> tuple[Decimal, Decimal]:
    """(subtotal, total). Each line is rounded to the currency first, as printed, so the
    printed lines always add up to the printed total."""
    subtotal = sum((line_amount(item, currency) for item in items), Decimal("0"))
    subtotal = quantize(subtotal, currency)
    return subtotal, subtotal


def check_total(total: Decimal, currency: Currency) -> None:
    if total > MAX_AMOUNT:
        limit = format_amount(MAX_AMOUNT, currency)
        raise ValidationError(
            f"The invoice total may be at most {limit} {currency.code}.", code="total_too_large"
        )
