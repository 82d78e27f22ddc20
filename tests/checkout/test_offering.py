"""Prices are real outside DEBUG: what cannot be priced is not offered, and says why; volatile
quotes on untimed invoices are renewed while nothing has arrived."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from checkout.models import PaymentStatus
from checkout.services import payable_assets, payment_start, payments_requote
from invoices.models import InvoiceEvent
from merchants.money import price_gap
from tests.api.test_api import INVOICES, acme_key, post  # noqa: F401 (fixture)
from wallets.models import Asset

pytestmark = pytest.mark.django_db
ETH = 10**18


@pytest.fixture
def production_rates(settings):
    """No live source and nothing approved: only the pegged stablecoins have a price."""
    settings.RATE_PROVIDER = "static"
    settings.RATE_STATIC_APPROVED = []
    return settings


def test_eth_is_not_offered_on_the_pay_page_without_a_live_price(shop, production_rates, client):
    invoice = shop.invoice("30.00")
    assert sorted({a.symbol for a in payable_assets(invoice)}) == ["USDC", "USDT"]
    page = client.get(reverse("pay", args=[invoice.public_token])).content.decode()
    assert "USDC" in page and 'value="ETH' not in page

    production_rates.RATE_STATIC_APPROVED = ["ETH"]  # the operator says so, explicitly
    assert "ETH" in {a.symbol for a in payable_assets(invoice)}


def test_a_live_ticker_makes_eth_and_fiat_crosses_available(shop, production_rates):
    production_rates.RATE_PROVIDER = "http"
    production_rates.RATE_HTTP_URL = "http://127.0.0.1:9/price"
    assert price_gap("ETH") == price_gap("EUR") == ""
    assert "RATE_HTTP_CODES" in price_gap("CHF")  # the ticker does not quote it
    assert "ETH" in {a.symbol for a in payable_assets(shop.invoice("30.00"))}


def test_a_currency_without_a_price_is_not_offered_in_the_editor(
    client_for, alice, production_rates
):
    page = client_for(alice).get(reverse("invoice_new")).content.decode()
    assert 'value="USD"' in page
    assert 'value="EUR"' not in page and 'value="ETH"' not in page


def test_the_api_refuses_an_invoice_currency_without_a_price(client, acme_key, production_rates):  # noqa: F811
    response = post(
        client, INVOICES, acme_key, {"currency": "EUR", "amount": "42.50", "description": "x"}
    )
    assert response.status_code == 422
    assert "cannot be priced" in str(response.json())
    ok = post(client, INVOICES, acme_key, {"currency": "USD", "amount": "42.50"})
    assert ok.status_code == 201


def test_admin_says_why_an_asset_is_not_offered(dev_network, production_rates):
    asset_admin = admin.site._registry[Asset]
    eth = Asset.objects.get(network=dev_network, symbol="ETH")
    usdc = Asset.objects.get(network=dev_network, symbol="USDC")
    assert asset_admin.priced(usdc) == "Yes"
    assert asset_admin.priced(eth).startswith("No: No live rate source for ETH")


def test_a_volatile_quote_on_an_untimed_invoice_is_renewed_while_nothing_arrived(shop, settings):
    settings.QUOTE_VOLATILE_MINUTES = 15
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("ETH", "USD"): Decimal("3000")}
    eth = Asset.objects.get(network=shop.network, symbol="ETH")
    invoice = shop.invoice("30.00")
    assert invoice.expires_at is None
    payment = payment_start(invoice=invoice, asset=eth)
    assert payment.amount_due == 10**16  # 30 / 3000 ETH
    assert payment.requote_at is not None

    settings.STATIC_RATES = {**settings.STATIC_RATES, ("ETH", "USD"): Decimal("2000")}
    assert payments_requote(now=timezone.now()) == 0  # not due yet
    later = timezone.now() + timedelta(minutes=16)
    assert payments_requote(now=later) == 1
    payment.refresh_from_db()
    assert payment.amount_due == 15 * 10**15  # 30 / 2000 ETH
    assert payment.rate == Decimal("2000")
    assert payment.requote_at > later
    assert InvoiceEvent.objects.filter(invoice=invoice, type="payment.requoted").count() == 1


def test_a_quote_with_money_received_is_final(shop, settings):
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("ETH", "USD"): Decimal("3000")}
    eth = Asset.objects.get(network=shop.network, symbol="ETH")
    invoice = shop.invoice("30.00")
    payment = payment_start(invoice=invoice, asset=eth)
    shop.tester.send_eth(payment.deposit_address.address, 4 * 10**15)
    shop.watch()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING

    settings.STATIC_RATES = {**settings.STATIC_RATES, ("ETH", "USD"): Decimal("2000")}
    assert payments_requote(now=timezone.now() + timedelta(hours=1)) == 0
    payment.refresh_from_db()
    # What arrived is valued at the quote it arrived under; the rest is owed in the same units.
    assert (payment.rate, payment.amount_due) == (Decimal("3000"), 10**16)


def test_stablecoin_and_timed_quotes_are_never_renewed(shop):
    invoice = shop.invoice("30.00")
    assert shop.start(invoice).requote_at is None  # USDC: pegged
