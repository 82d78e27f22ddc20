"""Exchange rates: the only module that knows where rates come from.

A rate answers "how many units of the invoice's currency is one unit of this asset worth".
The static provider reads a table from settings; the HTTP provider asks a public exchange
ticker, caches answers briefly and refuses prices older than RATE_MAX_AGE_SECONDS.
"""

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Protocol

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

logger = logging.getLogger(__name__)
PIVOT = "USD"


class RateUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Rate:
    value: Decimal
    source: str
    at: datetime


class RateProvider(Protocol):
    def rate(self, asset: str, currency: str) -> Rate: ...


class StaticRates:
    """Rates from settings.STATIC_RATES; pairs missing there are crossed through USD."""

    def __init__(self, table: dict[tuple[str, str], Decimal] | None = None) -> None:
        self.table = dict(settings.STATIC_RATES if table is None else table)

    def _to_pivot(self, code: str) -> Decimal:
        if code == PIVOT:
            return Decimal(1)
        if (code, PIVOT) in self.table:
            return Decimal(self.table[(code, PIVOT)])
        if (PIVOT, code) in self.table:
            return Decimal(1) / Decimal(self.table[(PIVOT, code)])
        raise RateUnavailable(f"No rate for {code}.")

    def rate(self, asset: str, currency: str) -> Rate:
        if asset == currency:
            value = Decimal(1)
        elif (asset, currency) in self.table:
            value = Decimal(self.table[(asset, currency)])
        else:
            value = self._to_pivot(asset) / self._to_pivot(currency)
        return Rate(value=value, source="static", at=timezone.now())


class HttpTickerRates:
    """A public ticker answering GET <url>?symbol=ETHUSDT with {"price": "...", "time": ms}.

    Stablecoins and fiat go through the static table (a ticker quotes crypto against USDT);
    only the asset's USD price is asked. Answers are cached for RATE_CACHE_SECONDS; a price
    older than RATE_MAX_AGE_SECONDS, or no answer, is refused rather than guessed.
    """

    def __init__(
        self, url: str, *, fallback: StaticRates | None = None, timeout: float = 5
    ) -> None:
        self.url = url.rstrip("?")
        self.fallback = fallback or StaticRates()
        self.timeout = timeout

    def _usd_price(self, asset: str) -> Rate:
        key = f"rate:{asset}"
        cached = cache.get(key)
        if cached is None:
            cached = self._fetch(asset)
            cache.set(key, cached, settings.RATE_CACHE_SECONDS)
        value, at = Decimal(cached["price"]), datetime.fromtimestamp(cached["time"] / 1000, tz=UTC)
        age = (timezone.now() - at).total_seconds()
        if age > settings.RATE_MAX_AGE_SECONDS:
            raise RateUnavailable(
                f"The {asset} price is {age:.0f} s old; refusing to quote with it."
            )
        return Rate(value=value, source=f"ticker {self.url}", at=at)

    def _fetch(self, asset: str) -> dict:
        url = f"{self.url}?symbol={asset}USDT"
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
            logger.warning("Rate ticker failed for %s: %s", asset, error)
            raise RateUnavailable(f"No {asset} price from the ticker.") from None
        if not price.is_finite() or price <= 0:
            raise RateUnavailable(f"The ticker gave a {asset} price of {price}.")
        return {"price": str(price), "time": time_ms}

    def rate(self, asset: str, currency: str) -> Rate:
        try:
            self.fallback._to_pivot(asset)
            return self.fallback.rate(asset, currency)  # pegged or fiat: the table knows it
        except RateUnavailable:
            pass
        usd = self._usd_price(asset)
        in_currency = usd.value / self.fallback._to_pivot(currency)
        return Rate(value=in_currency, source=usd.source, at=usd.at)


def provider() -> RateProvider:
    if settings.RATE_PROVIDER == "http":
        return HttpTickerRates(
            settings.RATE_HTTP_URL,
            fallback=StaticRates(
                {pair: rate for pair, rate in settings.STATIC_RATES.items() if pair[0] != "ETH"}
            ),
        )
    return StaticRates()
