"""Currencies and the arithmetic every app shares.

Amounts are `Decimal` quantized to their currency's precision; nothing here ever touches a float.
On-chain values in base units live in the wallets app, beside each asset's own decimals.
"""

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

# The largest amount a single line or invoice may carry. Far above any real invoice, far below
# what the database columns hold, so a fat-fingered or hostile value is refused, not stored.
MAX_AMOUNT = Decimal("1000000000000")  # one trillion
MAX_QUANTITY = Decimal("1000000")
QUANTITY_DECIMALS = 4


@dataclass(frozen=True)
class Currency:
    code: str
    name: str
    decimals: int
    symbol: str = ""
    is_crypto: bool = False

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimals)


CURRENCIES: dict[str, Currency] = {
    c.code: c
    for c in (
        Currency("USD", "US dollar", 2, "$"),
        Currency("EUR", "Euro", 2, "€"),
        Currency("GBP", "Pound sterling", 2, "£"),
        Currency("CHF", "Swiss franc", 2),
        Currency("USDT", "Tether USD", 6, is_crypto=True),
        Currency("USDC", "USD Coin", 6, is_crypto=True),
        Currency("ETH", "Ether", 8, is_crypto=True),
    )
}
CURRENCY_CHOICES = [(c.code, f"{c.code} · {c.name}") for c in CURRENCIES.values()]

# What a payer can send. The networks each one travels on are the wallets app's business.
PAYMENT_ASSETS = ("USDT", "USDC", "ETH")
PAYMENT_ASSET_CHOICES = [(code, f"{code} · {CURRENCIES[code].name}") for code in PAYMENT_ASSETS]


class UnknownCurrency(ValueError):
    pass


def get_currency(code: str) -> Currency:
    try:
        return CURRENCIES[code]
    except KeyError:
        raise UnknownCurrency(f"Unknown currency {code!r}.") from None


def decimal_places(value: Decimal) -> int:
    """Digits after the point that carry information (1.50 has one, 100 has none).

    Read off the digits, not through `normalize()`: that rounds to the decimal context, in
    which 1e-999999999 underflows to 0 and would pass as having no decimals at all."""
    _, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        return 0
    significant = len(digits)
    while significant and digits[significant - 1] == 0:
        significant -= 1
    if significant == 0:  # zero, however written
        return 0
    return max(0, -(exponent + len(digits) - significant))


def quantize(amount: Decimal, currency: str | Currency) -> Decimal:
    cur = currency if isinstance(currency, Currency) else get_currency(currency)
    return amount.quantize(cur.quantum, rounding=ROUND_HALF_UP)


# An amount as a person types it: ASCII digits with at most one point, commas only between
# groups of three ("1,250.50"). A comma anywhere else is refused, not dropped: "1,5" meant
# one and a half where it is the decimal mark, and dropping it made it fifteen.
TYPED_AMOUNT = re.compile(r"(?:[0-9]+|[0-9]{1,3}(?:,[0-9]{3})+)(?:\.[0-9]+)?")


def parse_typed_amount(text: str) -> Decimal | None:
    """The amount typed, or None when it is not written as TYPED_AMOUNT allows (Decimal
    itself also takes '1_5', fullwidth digits, '1e3' and 'NaN')."""
    text = text.strip()
    if len(text) > 60 or not TYPED_AMOUNT.fullmatch(text):
        return None
    return Decimal(text.replace(",", ""))


def format_amount(amount: Decimal, currency: str | Currency) -> str:
    """`1234.5` USD → `1,234.50`; crypto keeps the digits that matter but at least two."""
    cur = currency if isinstance(currency, Currency) else get_currency(currency)
    value = quantize(amount, cur)
    places = max(2, min(cur.decimals, decimal_places(value)))
    return f"{value:,.{places}f}"


def format_money(amount: Decimal | None, currency: str) -> str:
    if amount is None:
        return "—"
    cur = get_currency(currency)
    text = format_amount(amount, cur)
    if cur.symbol:
        return f"-{cur.symbol}{text[1:]}" if text.startswith("-") else f"{cur.symbol}{text}"
    return f"{text} {cur.code}"


# Which codes can be priced: configuration only (no network), so every app can ask it to decide
# what to offer. Where the prices then come from is checkout.rates' business.
PRICE_PIVOT = "USD"


def static_price_approved(code: str) -> bool:
    """Whether the operator approved the static table's price for `code` (or it is a peg)."""
    approved = settings.RATE_STATIC_APPROVED
    in_table = any(code in pair for pair in settings.STATIC_RATES)
    return code in settings.RATE_PEGGED or (in_table and ("*" in approved or code in approved))


def price_gap(code: str) -> str:
    """Why `code` cannot be priced against USD with the configured sources; "" when it can."""
    if code == PRICE_PIVOT or static_price_approved(code):
        return ""
    if settings.RATE_PROVIDER == "http" and settings.RATE_HTTP_URL:
        if code in settings.RATE_HTTP_CODES:
            return ""
        return (
            f"The live rate source does not quote {code} (RATE_HTTP_CODES) and its static "
            "price is not approved (RATE_STATIC_APPROVED)."
        )
    return (
        f"No live rate source for {code} (set RATE_PROVIDER=http) and its static price is not "
        "approved by the operator (RATE_STATIC_APPROVED)."
    )


def priced_currency_choices(keep: str = "") -> list[tuple[str, str]]:
    """Invoice currencies that can be priced now (plus `keep`, an invoice's own)."""
    return [
        (code, label) for code, label in CURRENCY_CHOICES if code == keep or not price_gap(code)
    ]
