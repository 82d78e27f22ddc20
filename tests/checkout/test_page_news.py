"""The payer's page reads its state again only when PostgreSQL tells the web process that
something it shows changed (checkout/page_news.py, the triggers of checkout/0006): every kind
of write is heard, whatever made it; nothing else costs a read; and a listener that lost its
connection vouches for nothing until it is back.

Outside a transaction (transaction=True), as requests run in production: the triggers' notices
are sent at commit."""

import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from checkout import page_news
from checkout.models import Payment, PaymentStatus, RefundRequest
from invoices.services import invoice_cancel
from tests.conftest import require_postgres
from tests.factories import CustomerFactory, make_invoice
from wallets.models import Asset, Network

pytestmark = pytest.mark.django_db(transaction=True)
HX = {"HX-Request": "true"}
THREADED = {"wsgi.multithread": True}
USDC = 10**6
HEARD_WITHIN = 5.0  # seconds: a notice takes milliseconds; this only bounds a failing test


@pytest.fixture(autouse=True)
def _listening():
    require_postgres()
    assert page_news.listener.wait_connected(10), "the listener never connected"
    heard()  # the emptying of the tables after the last test, announced as "*"


def heard() -> None:
    """Every change committed so far has reached this process's listener."""
    assert page_news.listener.caught_up(HEARD_WITHIN), "the listener heard nothing back"


def html(client, invoice, **headers) -> str:
    response = client.get(reverse("pay", args=[invoice.public_token]), headers=headers)
    assert response.status_code == 200
    return response.content.decode()


def queries(client, invoice, **headers) -> int:
    with CaptureQueriesContext(connection) as captured:
        html(client, invoice, **headers)
    return len(captured.captured_queries)


def shows_once_heard(client, invoice, text: str, **headers) -> bool:
    """Whether the page shows `text` once the change's notice has reached the listener."""
    heard()
    return text in html(client, invoice, **headers)


def test_a_page_nothing_changed_on_is_served_without_a_query(shop, client):
    invoice = shop.invoice("10.00")
    shop.start(invoice)
    heard()  # else the notices of the set-up, arriving after the first read, void it once
    for headers in ({}, HX):
        html(client, invoice, **headers)  # read and rendered once
        assert [queries(client, invoice, **headers) for _ in range(5)] == [0] * 5


def test_a_deposit_found_by_the_scanner_is_heard(shop, client):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    assert "Payment seen on chain." not in html(client, invoice, **HX)
    shop.send(payment, 4 * USDC)
    shop.watch()  # a transfer row, the payment's amounts, the invoice's status
    assert shows_once_heard(client, invoice, "Payment seen on chain.", **HX)
    shop.send(payment, 6 * USDC)
    shop.confirm()
    assert shows_once_heard(client, invoice, "<h2>Paid</h2>", **HX)


def test_a_bulk_update_and_raw_sql_are_heard(shop, client):
    """Writes no Django signal sees: a queryset update and SQL typed by hand."""
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    html(client, invoice, **HX)
    Payment.objects.filter(pk=payment.pk).update(
        status=PaymentStatus.EXPIRED, finalized_at=timezone.now()
    )
    assert shows_once_heard(client, invoice, "The time for this payment ran out.", **HX)

    other = shop.invoice("20.00")
    assert "How would you like to pay?" in html(client, other)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE invoices_invoice SET status = 'failed', failure_reason = 'cancelled'"
            " WHERE id = %s",
            [other.pk],
        )
    assert shows_once_heard(client, other, "This invoice was cancelled")


def test_a_cancelled_invoice_and_a_refund_request_are_heard(shop, client):
    invoice = shop.invoice("10.00")
    assert "How would you like to pay?" in html(client, invoice)
    invoice_cancel(invoice=invoice)
    assert shows_once_heard(client, invoice, "This invoice was cancelled")

    paid = shop.invoice("10.00")
    payment = shop.start(paid)
    shop.send(payment, 10 * USDC)
    shop.confirm()
    assert shows_once_heard(client, paid, "<h2>Paid</h2>")
    assert queries(client, paid) == 0
    RefundRequest.objects.create(
        invoice=paid,
        payment=payment,
        asset=shop.usdc,
        network=shop.network,
        amount=1 * USDC,
        reason="Returned one",
    )
    heard()
    assert queries(client, paid) >= 1


def test_the_merchants_name_the_customers_and_the_catalogue_are_heard(shop, client):
    customer = CustomerFactory(merchant=shop.merchant, name="Ada Lovelace")
    invoice = make_invoice(shop.merchant, customer=customer, items=[("A", "1", "5")], issue=True)
    assert "Ada Lovelace" in html(client, invoice)
    shop.merchant.refresh_from_db()
    shop.merchant.name = "Renamed Tools"
    shop.merchant.save()
    assert shows_once_heard(client, invoice, "Renamed Tools")
    customer.name = "Ada King"
    customer.save()
    assert shows_once_heard(client, invoice, "Ada King")

    assert "USDT" in html(client, invoice)
    Asset.objects.filter(network=shop.network, symbol="USDT").update(enabled=False)
    heard()
    assert "USDT" not in html(client, invoice)


def test_the_invoice_counter_and_the_scanners_bookkeeping_cost_no_read(shop, client):
    """Writes that change no page: a new invoice of the merchant (its counter moves), the
    watcher's lease and the node's health on the network row."""
    invoice = shop.invoice("10.00")
    shop.start(invoice)
    heard()
    html(client, invoice, **HX)
    shop.invoice("99.00")
    Network.objects.filter(pk=shop.network.pk).update(
        round_token="abc", round_lease_until=timezone.now(), rpc_ok=True, rpc_error=""
    )
    heard()
    assert queries(client, invoice, **HX) == 0


def test_a_lost_listener_vouches_for_nothing_until_it_is_back(shop, client):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    heard()
    html(client, invoice, **HX)
    assert queries(client, invoice, **HX) == 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'stablebill page news'"
            # This process's listener only: each xdist worker listens on its own database,
            # and cutting another worker's listener off made its held requests fall back to
            # reading the database while its test counted their reads.
            " AND datname = current_database()"
        )
        assert cursor.fetchall(), "no listener to cut off"
    deadline = time.monotonic() + HEARD_WITHIN
    while page_news.listener.mark() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    # Meanwhile a change no notice reaches this process with: read from the database.
    Payment.objects.filter(pk=payment.pk).update(
        status=PaymentStatus.EXPIRED, finalized_at=timezone.now()
    )
    assert queries(client, invoice, **HX) >= 1
    assert "The time for this payment ran out." in html(client, invoice, **HX)
    # Back: kept states are vouched for again.
    assert page_news.listener.wait_connected(HEARD_WITHIN + 10)
    html(client, invoice, **HX)
    assert queries(client, invoice, **HX) == 0


def test_a_held_status_request_wakes_on_the_news_without_asking_meanwhile(shop, client, settings):
    settings.PAY_STATUS_HOLD_SLOTS = 8
    settings.PAY_STATUS_HOLD_SECONDS = 8
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    page = html(client, invoice)
    state = page.split("?v=", 1)[1][:16]

    def pay_later() -> None:
        time.sleep(1.5)
        Payment.objects.filter(pk=payment.pk).update(
            status=PaymentStatus.PAID, received=payment.amount_due, confirmed=payment.amount_due
        )
        connection.close()

    payer = threading.Thread(target=pay_later)
    url = reverse("pay", args=[invoice.public_token]) + f"?v={state}"
    payer.start()
    started = time.monotonic()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, headers=HX, **THREADED)
    waited = time.monotonic() - started
    payer.join()
    assert response.status_code == 200
    assert "<h2>Paid</h2>" in response.content.decode()
    assert 1.5 <= waited < settings.PAY_STATUS_HOLD_SECONDS  # woken by the news, not the end
    # A look at the payment when it started and one when told: reading it every 0.2 s would
    # have been eight looks.
    looks = [q for q in captured.captured_queries if 'AS "invoice__status"' in q["sql"]]
    assert 2 <= len(looks) <= 3, [q["sql"][:300] for q in captured.captured_queries]


def test_switched_off_every_request_reads_the_state(shop, client, settings):
    """DATABASE_LISTEN=0, as behind a transaction-pooling PgBouncer: no state is kept."""
    settings.DATABASE_LISTEN = False
    invoice = shop.invoice("10.00")
    shop.start(invoice)
    heard()
    html(client, invoice, **HX)
    assert [queries(client, invoice, **HX) for _ in range(3)] == [1, 1, 1]
