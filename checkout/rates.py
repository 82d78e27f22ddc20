"""Exchange rates: the only module that knows where rates come from.

A rate answers "how many units of the invoice's currency is one unit of this asset worth".
Both sides are priced in USD and divided. Where a USD price may come from:

- USD itself, and the stablecoins in RATE_PEGGED: the static table (their peg, 1 by default);
- anything else (ETH, and fiat such as EUR for a cross): the live ticker when
  RATE_PROVIDER=http quotes it (RATE_HTTP_CODES), cached briefly, refused when older than
  RATE_MAX_AGE_SECONDS; the static table only when the operator approved that code
  (RATE_STATIC_APPROVED, everything in DEBUG). No source: RateUnavailable, never a guess.

`merchants.money.price_gap` states the same policy from the configuration alone, so the
invoice editor, the API and the pay page only offer what can be priced.
"""

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Protocol

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from merchants.money import PRICE_PIVOT, static_price_approved

logger = logging.getLogger(__name__)
PIVOT = PRICE_PIVOT
# The scale of Payment.rate: a quote uses exactly the rate it stores.
RATE_QUANTUM = Decimal(1).scaleb(-18)


class RateUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Rate:
    value: Decimal
    source: str
    at: datetime


class RateProvider(Protocol):
    def rate(self, asset: str, currency: str) -> Rate: ...


def _quantized(value: Decimal) -> Decimal:
    return value.quantize(RATE_QUANTUM, rounding=ROUND_HALF_UP)


def _codes(table: dict[tuple[str, str], Decimal]) -> frozenset[str]:
    return frozenset(code for pair in table for code in pair)


class StaticRates:
    """Rates from a table (settings.STATIC_RATES by default); pairs missing there are crossed
    through USD. Only approved codes are priced: those of an explicitly given table, or, for
    the settings table, the pegs and what the operator approved."""

    def __init__(
        self,
        table: dict[tuple[str, str], Decimal] | None = None,
        *,
        approved: Iterable[str] | None = None,
    ) -> None:
        self.table = dict(settings.STATIC_RATES if table is None else table)
        if approved is None:
            approved = (
                _codes(self.table)
                if table is not None
                else {code for code in _codes(self.table) if static_price_approved(code)}
            )
        self.approved = frozenset(approved) | {PIVOT}

    def _to_pivot(self, code: str) -> Decimal:
        if code == PIVOT:
            return Decimal(1)
        if code not in self.approved and code in _codes(self.table):
            raise RateUnavailable(
                f"No live price for {code}, and its static price is not approved by the "
                "operator (RATE_STATIC_APPROVED)."
            )
        if (code, PIVOT) in self.table:
            return Decimal(self.table[(code, PIVOT)])
        if (PIVOT, code) in self.table:
            return Decimal(1) / Decimal(self.table[(PIVOT, code)])
        raise RateUnavailable(f"No rate for {code}.")

    def rate(self, asset: str, currency: str) -> Rate:
        if asset == currency:
            value = Decimal(1)
        elif (asset, currency) in self.table and {asset, currency} <= self.approved:
            value = Decimal(self.table[(asset, currency)])
        else:
            value = self._to_pivot(asset) / self._to_pivot(currency)
        return Rate(value=_quantized(value), source="static", at=timezone.now())


class HttpTickerRates:
    """A public ticker answering GET <url>?symbol=ETHUSDT with {"price": "...", "time": ms}.

    The pegged stablecoins come from the static table without asking. Every other code is
    asked as <CODE>USDT, fiat too (EURUSDT is EUR's USD price): the ticker covers crosses. An
    answer is cached for RATE_CACHE_SECONDS; a price older than RATE_MAX_AGE_SECONDS, or no
    answer, is refused, unless the operator approved the code's static price (then used).
    """

    def __init__(
        self,
        url: str,
        *,
        fallback: StaticRates | None = None,
        pegged: Iterable[str] | None = None,
        timeout: float = 5,
    ) -> None:
        self.url = url.rstrip("?")
        self.fallback = fallback or StaticRates()
        self.pegged = frozenset(settings.RATE_PEGGED if pegged is None else pegged)
        self.timeout = timeout

    def _ticker_price(self, code: str) -> Rate:
        key = f"rate:{code}"
        cached = cache.get(key)
        if cached is None:
            cached = self._fetch(code)
            cache.set(key, cached, settings.RATE_CACHE_SECONDS)
        value, at = Decimal(cached["price"]), datetime.fromtimestamp(cached["time"] / 1000, tz=UTC)
        age = (timezone.now() - at).total_seconds()
        if age > settings.RATE_MAX_AGE_SECONDS:
            raise RateUnavailable(
                f"The {code} price is {age:.0f} s old; refusing to quote with it."
            )
        return Rate(value=value, source=f"ticker {self.url}", at=at)

    def _fetch(self, code: str) -> dict:
        url = f"{self.url}?symbol={code}USDT"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                body = json.load(response)
            price = Decimal(str(body["price"]))
            time_ms = int(body["time"])
        except (
            urllib.error.URLError,
            OSError,
            ValueError,
            KeyError,
            TypeError,  # an answer that is not a JSON object
            InvalidOperation,
        ) as error:
            logger.warning("Rate ticker failed for %s: %s", code, error)
            raise RateUnavailable(f"No {code} price from the ticker.") from None
        if not price.is_finite() or price <= 0:
            raise RateUnavailable(f"The ticker gave a {code} price of {price}.")
        return {"price": str(price), "time": time_ms}

    def _usd(self, code: str) -> Rate:
        if code == PIVOT or code in self.pegged:
            return Rate(self.fallback._to_pivot(code), "static", timezone.now())
        try:
            return self._ticker_price(code)
        except RateUnavailable:
            if code in self.fallback.approved:
                return Rate(self.fallback._to_pivot(code), "static", timezone.now())
            raise

    def rate(self, asset: str, currency: str) -> Rate:
        if asset == currency:
            return Rate(Decimal(1), "static", timezone.now())
        priced, in_currency = self._usd(asset), self._usd(currency)
        sources = [r.source for r in (priced, in_currency) if r.source != "static"]
        return Rate(
            value=_quantized(priced.value / in_currency.value),
            source=sources[0] if sources else "static",
            at=min(priced.at, in_currency.at),
        )


def provider() -> RateProvider:
    if settings.RATE_PROVIDER == "http":
        return HttpTickerRates(settings.RATE_HTTP_URL)
    return StaticRates()


def is_volatile(code: str) -> bool:
    """A code whose price moves: a quote in it is renewed on untimed invoices."""
    return code != PIVOT and code not in settings.RATE_PEGGED
