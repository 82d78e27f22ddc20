"""Exchange rates: the static table crossing through USD, and the ticker provider against a
fake exchange on 127.0.0.1 (a real HTTP server in a thread, no mocks of urllib)."""

import json
import socket
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from django.core.cache import cache
from django.utils import timezone

from checkout.rates import HttpTickerRates, RateUnavailable, StaticRates, provider
from checkout.services import CheckoutError, quote
from merchants.money import price_gap
from tests.local_http import serve_in_background
from wallets.models import Asset

TABLE = {
    ("USDT", "USD"): Decimal("1"),
    ("USDC", "USD"): Decimal("0.999"),
    ("ETH", "USD"): Decimal("3000"),
    ("EUR", "USD"): Decimal("1.08"),
    ("USD", "JPY"): Decimal("150"),
}


# Static ----------------------------------------------------------------------------------------


def test_static_rates_use_a_listed_pair_as_is():
    rate = StaticRates(TABLE).rate("USDC", "USD")
    assert (rate.value, rate.source) == (Decimal("0.999"), "static")
    assert abs((timezone.now() - rate.at).total_seconds()) < 5


def q18(value: Decimal) -> Decimal:
    """A rate at the scale Payment.rate stores, so a quote uses exactly what it keeps."""
    return value.quantize(Decimal(1).scaleb(-18), rounding=ROUND_HALF_UP)


def test_static_rates_cross_other_pairs_through_usd():
    rates = StaticRates(TABLE)
    assert rates.rate("ETH", "EUR").value == q18(Decimal("3000") / Decimal("1.08"))
    assert rates.rate("USDC", "EUR").value == q18(Decimal("0.999") / Decimal("1.08"))
    # A pair listed the other way round (USD → JPY) is inverted.
    assert rates.rate("USDT", "JPY").value == q18(Decimal(1) / (Decimal(1) / Decimal(150)))
    assert rates.rate("EUR", "EUR").value == Decimal(1)


def test_static_rates_refuse_what_they_do_not_know():
    with pytest.raises(RateUnavailable, match="No rate for DOGE"):
        StaticRates(TABLE).rate("DOGE", "USD")
    with pytest.raises(RateUnavailable, match="No rate for XAU"):
        StaticRates(TABLE).rate("USDT", "XAU")


def test_static_rates_read_the_settings_table_by_default(settings):
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("ETH", "USD"): Decimal("2500")}
    assert StaticRates().rate("ETH", "USD").value == Decimal("2500")


@pytest.mark.django_db
def test_a_eur_invoice_in_usdc_is_quoted_through_usd_and_rounded_up(shop, settings):
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("USDC", "USD"): Decimal("1")}
    invoice = shop.invoice("100.00", currency="EUR")
    q = quote(invoice=invoice, asset=shop.usdc)
    # 100 EUR at 1.08 USD a EUR = 108 USD = 108 USDC, never a unit less.
    assert q.amount_due == 108_000_000
    assert q.rate.source == "static"


# The ticker, against a fake exchange -----------------------------------------------------------


@dataclass
class FakeExchange:
    """Answers GET /api/v3/ticker/price?symbol=ETHUSDT the way public tickers do."""

    status: int = 200
    body: object = None  # None: a fresh, valid answer
    price: str = "3123.45"  # ETHUSDT
    prices: dict[str, str] = field(default_factory=lambda: {"EURUSDT": "1.08"})
    delay: float = 0
    requests: list[str] = field(default_factory=list)

    def answer(self, symbol: str) -> tuple[int, bytes]:
        if self.body is None:
            price = self.prices.get(symbol, self.price)
            payload = {"symbol": symbol, "price": price, "time": int(time.time() * 1000)}
            return self.status, json.dumps(payload).encode()
        body = self.body if isinstance(self.body, str) else json.dumps(self.body)
        return self.status, body.encode()


@pytest.fixture
def exchange():
    fake = FakeExchange()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.requests.append(self.path)
            if fake.delay:
                time.sleep(fake.delay)
            symbol = parse_qs(urlparse(self.path).query).get("symbol", [""])[0]
            status, data = fake.answer(symbol)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the slow-exchange test)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serve_in_background(server)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/api/v3/ticker/price"  # type: ignore[attr-defined]
    yield fake
    server.shutdown()
    server.server_close()


# What the ticker provider falls back on: pegged coins and fiat, never the crypto it asks for.
PEGGED = {pair: rate for pair, rate in TABLE.items() if pair[0] != "ETH"}


def ticker(exchange, **kwargs) -> HttpTickerRates:
    return HttpTickerRates(exchange.url, fallback=StaticRates(PEGGED), **kwargs)


def test_the_ticker_price_is_used_with_its_source_and_time(exchange):
    rate = ticker(exchange).rate("ETH", "USD")
    assert rate.value == Decimal("3123.45")
    assert rate.source == f"ticker {exchange.url}"
    assert abs((timezone.now() - rate.at).total_seconds()) < 5
    assert exchange.requests == ["/api/v3/ticker/price?symbol=ETHUSDT"]


def test_the_ticker_price_is_converted_to_the_invoice_currency_at_the_live_cross(exchange):
    exchange.prices["EURUSDT"] = "1.10"  # not the table's 1.08
    assert ticker(exchange).rate("ETH", "EUR").value == q18(Decimal("3123.45") / Decimal("1.10"))
    assert sorted(exchange.requests) == [
        "/api/v3/ticker/price?symbol=ETHUSDT",
        "/api/v3/ticker/price?symbol=EURUSDT",
    ]


def test_a_fiat_cross_comes_from_the_ticker(exchange):
    exchange.prices["EURUSDT"] = "1.0925"
    rate = ticker(exchange).rate("EUR", "USD")
    assert (rate.value, rate.source) == (Decimal("1.0925"), f"ticker {exchange.url}")
    assert ticker(exchange).rate("USDC", "EUR").value == q18(Decimal("0.999") / Decimal("1.0925"))


def test_pegged_stablecoins_come_from_the_table_without_asking(exchange):
    rates = ticker(exchange)
    assert rates.rate("USDC", "USD").value == Decimal("0.999")
    assert rates.rate("USDT", "USDC").value == q18(Decimal(1) / Decimal("0.999"))
    assert exchange.requests == []


def test_answers_are_cached_so_a_second_quote_asks_nothing(exchange, settings):
    settings.RATE_CACHE_SECONDS = 30
    first = ticker(exchange).rate("ETH", "USD")
    exchange.price = "9999"  # the exchange moved, but the cache still holds the first answer
    second = ticker(exchange).rate("ETH", "USD")
    assert len(exchange.requests) == 1
    assert second.value == first.value


def test_the_cache_runs_out_and_the_ticker_is_asked_again(exchange, settings):
    settings.RATE_CACHE_SECONDS = 1
    ticker(exchange).rate("ETH", "USD")
    exchange.price = "3200"
    time.sleep(1.2)
    assert ticker(exchange).rate("ETH", "USD").value == Decimal("3200")
    assert len(exchange.requests) == 2


def test_a_stale_price_is_refused(exchange, settings):
    settings.RATE_MAX_AGE_SECONDS = 120
    old = int((time.time() - 121) * 1000)
    exchange.body = {"symbol": "ETHUSDT", "price": "3000", "time": old}
    with pytest.raises(RateUnavailable, match=r"ETH price is 12[12] s old"):
        ticker(exchange).rate("ETH", "USD")


def test_a_price_just_within_the_age_limit_is_used(exchange, settings):
    settings.RATE_MAX_AGE_SECONDS = 120
    exchange.body = {"symbol": "ETHUSDT", "price": "3000", "time": int((time.time() - 100) * 1000)}
    assert ticker(exchange).rate("ETH", "USD").value == Decimal("3000")


@pytest.mark.parametrize(
    "status, body",
    [
        (500, {"price": "3000", "time": 0}),
        (404, "not found"),
        (200, "<html>maintenance</html>"),
        (200, {"time": 1}),
        (200, {"price": "3000"}),
        (200, {"price": "three thousand", "time": 1}),
        (200, {"price": "0", "time": 1}),
        (200, {"price": "-5", "time": 1}),
        (200, {"price": "NaN", "time": 1}),
        (200, {"price": "3000", "time": "yesterday"}),
        (200, ["3000"]),
    ],
    ids=[
        "http-500",
        "http-404",
        "not-json",
        "no-price",
        "no-time",
        "price-not-a-number",
        "price-zero",
        "price-negative",
        "price-nan",
        "time-not-a-number",
        "not-an-object",
    ],
)
def test_bad_answers_are_refused_and_not_cached(exchange, status, body):
    exchange.status, exchange.body = status, body
    with pytest.raises(RateUnavailable):
        ticker(exchange).rate("ETH", "USD")
    # Nothing bad was cached: once the exchange answers properly, the price is used.
    exchange.status, exchange.body = 200, None
    assert ticker(exchange).rate("ETH", "USD").value == Decimal("3123.45")
    assert len(exchange.requests) == 2


def test_a_slow_exchange_is_given_up_on(exchange):
    exchange.delay = 1.5
    started = time.monotonic()
    with pytest.raises(RateUnavailable):
        ticker(exchange, timeout=0.3).rate("ETH", "USD")
    assert time.monotonic() - started < 1.4


def test_an_unreachable_exchange_is_refused():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rates = HttpTickerRates(f"http://127.0.0.1:{port}/price", fallback=StaticRates(PEGGED))
    with pytest.raises(RateUnavailable, match="No ETH price from the ticker"):
        rates.rate("ETH", "USD")


# Which provider, by settings ---------------------------------------------------------------------


def test_the_static_provider_is_the_default(settings):
    settings.RATE_PROVIDER = "static"
    assert isinstance(provider(), StaticRates)


def test_the_http_provider_asks_the_ticker_for_eth_and_fiat_and_the_peg_for_stablecoins(
    exchange, settings
):
    settings.RATE_PROVIDER = "http"
    settings.RATE_HTTP_URL = exchange.url
    settings.RATE_STATIC_APPROVED = []
    chosen = provider()
    assert isinstance(chosen, HttpTickerRates)
    assert chosen.rate("ETH", "USD").value == Decimal("3123.45")  # not the table's 3000
    assert chosen.rate("USDC", "USD").value == Decimal(1)
    assert chosen.rate("USDC", "EUR").value == q18(Decimal(1) / Decimal("1.08"))
    assert len(exchange.requests) == 2
    # The ticker down and no approved static price: refused, never the table's 3000.
    cache.clear()
    exchange.status = 503
    with pytest.raises(RateUnavailable):
        chosen.rate("ETH", "USD")


def test_without_a_live_source_only_pegged_stablecoins_are_priced(settings):
    settings.RATE_PROVIDER = "static"
    settings.RATE_STATIC_APPROVED = []
    rates = provider()
    assert rates.rate("USDC", "USD").value == Decimal(1)
    with pytest.raises(RateUnavailable, match="not approved by the operator"):
        rates.rate("ETH", "USD")
    with pytest.raises(RateUnavailable, match="not approved by the operator"):
        rates.rate("USDC", "EUR")


def test_the_operator_approves_static_prices_code_by_code(settings):
    settings.RATE_PROVIDER = "static"
    settings.RATE_STATIC_APPROVED = ["EUR"]
    rates = provider()
    assert rates.rate("USDC", "EUR").value == q18(Decimal(1) / Decimal("1.08"))
    with pytest.raises(RateUnavailable):
        rates.rate("ETH", "USD")
    assert price_gap("EUR") == ""
    assert "RATE_STATIC_APPROVED" in price_gap("ETH")


@pytest.mark.django_db
def test_an_eth_quote_locks_the_ticker_rate_and_refuses_when_it_is_missing(
    shop, exchange, settings
):
    settings.RATE_PROVIDER = "http"
    settings.RATE_HTTP_URL = exchange.url
    settings.RATE_STATIC_APPROVED = []  # production: no static ETH price to fall back on
    exchange.price = "2000"
    eth = Asset.objects.get(network=shop.network, symbol="ETH")
    invoice = shop.invoice("30.00")
    q = quote(invoice=invoice, asset=eth)
    assert q.amount_due == 15 * 10**15  # 30 USD / 2,000 USD an ETH = 0.015 ETH in wei
    assert q.rate.source == f"ticker {exchange.url}"

    cache.clear()
    exchange.status = 503
    with pytest.raises(CheckoutError, match="No exchange rate for ETH right now"):
        quote(invoice=invoice, asset=eth)
    assert quote(invoice=invoice, asset=shop.usdc).rate.source == "static"
