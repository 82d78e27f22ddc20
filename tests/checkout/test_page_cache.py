"""The payer's page and its status fragment are kept per state (checkout/page_cache.py): a
kept copy must never show a stale state, a payer's nonce, token or timer, nor another
invoice's page."""

import re
import time

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from checkout.models import Payment
from invoices.models import PricingMode
from invoices.services import invoice_cancel
from tests.conftest import require_postgres
from tests.factories import CustomerFactory, make_invoice
from wallets.models import Asset

pytestmark = pytest.mark.django_db
USDC = 10**6
HX = {"HX-Request": "true"}


def page(client, invoice, **headers):
    return client.get(reverse("pay", args=[invoice.public_token]), headers=headers)


def html_of(response) -> str:
    assert response.status_code == 200
    return response.content.decode()


def test_a_deposit_shows_at_the_next_request_of_a_kept_page_and_fragment(
    shop, client, django_assert_num_queries
):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    for headers in ({}, HX):
        assert "Send exactly" in html_of(page(client, invoice, **headers))
        with django_assert_num_queries(1):  # kept
            assert "Payment seen on chain." not in html_of(page(client, invoice, **headers))

    shop.send(payment, 4 * USDC)
    shop.watch()
    for headers in ({}, HX):
        html = html_of(page(client, invoice, **headers))
        assert "Payment seen on chain." in html
        assert 'id="pay-amount">6<' in html  # what is still due

    shop.send(payment, 6 * USDC)
    shop.confirm()
    for headers in ({}, HX):
        html = html_of(page(client, invoice, **headers))
        assert "<h2>Paid</h2>" in html
        assert "hx-get" not in html  # the final fragment stops the asking


def test_a_cancelled_invoice_shows_at_once_on_a_kept_picker(shop, client):
    invoice = shop.invoice("10.00")
    html_of(page(client, invoice))
    assert "How would you like to pay?" in html_of(page(client, invoice))
    invoice_cancel(invoice=invoice)
    html = html_of(page(client, invoice))
    assert "How would you like to pay?" not in html
    assert "This invoice was cancelled" in html


def test_the_merchants_new_name_and_the_customers_show_at_once(shop, client):
    customer = CustomerFactory(merchant=shop.merchant, name="Ada Lovelace")
    invoice = make_invoice(shop.merchant, customer=customer, items=[("A", "1", "5")], issue=True)
    assert "Ada Lovelace" in html_of(page(client, invoice))
    shop.merchant.name = "Renamed Tools"
    shop.merchant.save()
    customer.name = "Ada King"
    customer.save()
    html = html_of(page(client, invoice))
    assert "Renamed Tools" in html and "Ada King" in html


def test_an_asset_taken_off_offer_leaves_the_kept_picker_at_once(shop, client):
    invoice = shop.invoice("10.00")
    assert 'asset-symbol">USDT<' in html_of(page(client, invoice))
    usdt = Asset.objects.get(network=shop.network, symbol="USDT")
    usdt.enabled = False
    usdt.save()
    assert 'asset-symbol">USDT<' not in html_of(page(client, invoice))


def _nonce(response) -> str:
    header = re.search(r"'nonce-([^']+)'", response["Content-Security-Policy"])
    assert header, response["Content-Security-Policy"]
    return header.group(1)


def test_each_answer_from_the_kept_page_has_its_own_nonce_and_the_headers(shop, client):
    invoice = shop.invoice("10.00")
    shop.start(invoice)
    nonces = set()
    for _ in range(2):
        response = page(client, invoice)
        html = html_of(response)
        nonce = _nonce(response)
        assert f'<style nonce="{nonce}">' in html
        nonces.add(nonce)
        assert response["Cache-Control"] == "no-store"
        assert "HX-Request" in response["Vary"]
        assert "cspnonce" not in html and "csrftoken" not in html
    assert len(nonces) == 2


def test_a_payer_can_choose_from_a_page_kept_for_someone_else(shop):
    invoice = shop.invoice("10.00")
    first, second = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    html_of(page(first, invoice))
    html = html_of(page(second, invoice))  # kept: the token must be the second payer's
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert re.search(r'"X-CSRFToken": "([^"]+)"', html).group(1) == token
    response = second.post(
        reverse("pay_start", args=[invoice.public_token]),
        {"asset": shop.usdc.pk, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert Payment.objects.get().asset == shop.usdc


def test_the_timer_of_a_kept_page_counts_from_the_request(shop, client):
    invoice = shop.invoice("10.00", pricing_mode=PricingMode.TIMER)
    shop.start(invoice)

    def left(html: str) -> tuple[int, str]:
        seconds = int(re.search(r'data-countdown="(\d+)"', html).group(1))
        return seconds, re.search(r'class="countdown-value">([\d:]+)<', html).group(1)

    before, _ = left(html_of(page(client, invoice, **HX)))
    time.sleep(1.1)
    after, shown = left(html_of(page(client, invoice, **HX)))
    assert after < before
    assert shown == f"{after // 60}:{after % 60:02d}"


def test_a_kept_page_is_only_ever_its_own_invoices(shop, client, globex):
    shop.invoice("10.00")  # Acme's, same shape
    theirs = make_invoice(globex, items=[("Service", "1", "10.00")], issue=True)
    ours = shop.invoice("10.00")
    html_of(page(client, ours))
    html = html_of(page(client, theirs))
    assert globex.name in html and shop.merchant.name not in html
    assert theirs.reference in html


@pytest.mark.parametrize("prepared", [True, False])
def test_the_state_query_is_prepared_only_where_the_operator_allows_it(
    shop, client, settings, prepared
):
    """Behind a transaction-pooling PgBouncer a session's prepared statement is not there on
    the next server connection: DATABASE_PREPARED_STATEMENTS=0 runs the plain query."""
    require_postgres()
    settings.DATABASE_PREPARED_STATEMENTS = prepared
    invoice = shop.invoice("10.00")
    html_of(page(client, invoice))
    with CaptureQueriesContext(connection) as queries:
        assert "How would you like to pay?" in html_of(page(client, invoice))
    (state_query,) = [q["sql"] for q in queries.captured_queries]
    assert state_query.startswith("EXECUTE stablebill_pay_state_") is prepared
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'stablebill_pay_state_%%'"
        )
        (statements,) = cursor.fetchone()
    if prepared:
        assert statements == 1
