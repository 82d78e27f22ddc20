"""Currencies and the arithmetic every app shares.

Amounts are `Decimal` quantized to their currency's precision; nothing here ever touches a float.
On-chain values in base units live in the wallets app, beside each asset's own decimals.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

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
    """Digits after the point that carry information (1.50 has one, 100 has none)."""
    normalized = value.normalize()
    exponent = normalized.as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def quantize(amount: Decimal, currency: str | Currency) -> Decimal:
    cur = currency if isinstance(currency, Currency) else get_currency(currency)
    return amount.quantize(cur.quantum, rounding=ROUND_HALF_UP)


def parse_decimal(raw: str) -> Decimal:
    try:
        value = Decimal(raw.strip().replace(",", ""))
    except (InvalidOperation, AttributeError):
        raise ValueError(f"{raw!r} is not a number.") from None
    if not value.is_finite():
        raise ValueError(f"{raw!r} is not a number.")
    return value


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
