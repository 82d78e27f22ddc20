"""The payment page's live status: the status request waits for news (long poll) where the
server can afford it, and falls back to asking every 3 s where it cannot; and what the page
and its status request cost in queries, whatever the merchant's history."""

import http.client
import re
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.urls import reverse

from checkout import views
from checkout.models import Payment, PaymentStatus
from tests.factories import make_invoice

pytestmark = pytest.mark.django_db
USDC = 10**6
HX = {"HX-Request": "true"}
THREADED = {"wsgi.multithread": True}  # what gunicorn's gthread workers and runserver say


def state_of(html: str) -> str:
    match = re.search(r'hx-get="[^"?]+\?v=([0-9a-f]+)"', html)
    assert match, "the status section asks for nothing"
    return match.group(1)


def trigger_of(html: str) -> str:
    match = re.search(r'<section id="status"[^>]*hx-trigger="([^"]+)"', html)
    assert match, "the status section has no trigger"
    return match.group(1)


def status(client, invoice, state: str = "", **extra):
    url = reverse("pay", args=[invoice.public_token]) + (f"?v={state}" if state else "")
    return client.get(url, headers=HX, **extra)


@pytest.fixture(autouse=True)
def _holding_allowed(settings):
    settings.PAY_STATUS_HOLD_SLOTS = 8  # tests/conftest.py turns it off for SQLite's live server


@pytest.fixture
def waiting(shop):
    """An invoice whose payer chose USDC and has sent nothing yet."""
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    return invoice, payment


def test_a_threaded_server_has_the_page_ask_at_once_and_wait_there(waiting, client):
    invoice, _ = waiting
    html = client.get(reverse("pay", args=[invoice.public_token]), **THREADED).content.decode()
    assert trigger_of(html) == "load, retry"


def test_a_page_that_is_behind_gets_the_news_at_once(shop, waiting, client, settings):
    settings.PAY_STATUS_HOLD_SECONDS = 600  # were it to wait, the test would hang
    invoice, payment = waiting
    before = state_of(status(client, invoice).content.decode())
    shop.send(payment, 10 * USDC)
    shop.watch()

    html = status(client, invoice, before, **THREADED).content.decode()
    assert "Payment seen on chain." in html
    assert state_of(html) != before
    assert trigger_of(html) == "load, retry"  # and it asks again at once


def test_with_no_news_the_request_waits_its_time_then_the_page_asks_again(
    waiting, client, settings
):
    settings.PAY_STATUS_HOLD_SECONDS = 1
    invoice, _ = waiting
    seen = state_of(status(client, invoice).content.decode())
    html = status(client, invoice, seen, **THREADED).content.decode()
    assert state_of(html) == seen
    assert "Send exactly" in html
    assert trigger_of(html) == "load, retry"


def test_one_request_at_a_time_never_waits_and_the_page_polls_every_3_seconds(
    waiting, client, settings
):
    settings.PAY_STATUS_HOLD_SECONDS = 600  # a sync worker that waited would hang the test
    invoice, _ = waiting
    seen = state_of(status(client, invoice).content.decode())
    html = status(client, invoice, seen).content.decode()  # the test client: not threaded
    assert trigger_of(html) == "load delay:3s, retry"
    page = client.get(reverse("pay", args=[invoice.public_token])).content.decode()
    assert trigger_of(page) == "load delay:3s, retry"


def test_waiting_turned_off_means_polling_every_3_seconds(waiting, client, settings):
    settings.PAY_STATUS_HOLD_SLOTS = 0
    settings.PAY_STATUS_HOLD_SECONDS = 600
    invoice, _ = waiting
    seen = state_of(status(client, invoice).content.decode())
    assert trigger_of(status(client, invoice, seen, **THREADED).content.decode()) == (
        "load delay:3s, retry"
    )
    page = client.get(reverse("pay", args=[invoice.public_token]), **THREADED)
    assert trigger_of(page.content.decode()) == "load delay:3s, retry"


def test_a_final_payment_stops_the_asking(shop, waiting, client):
    invoice, payment = waiting
    seen = state_of(status(client, invoice).content.decode())
    shop.send(payment, 10 * USDC)
    shop.confirm()
    html = status(client, invoice, seen, **THREADED).content.decode()
    assert "<h2>Paid</h2>" in html
    assert "hx-trigger" not in html and "hx-get" not in html


class FakeClock:
    """time as checkout.views sees it: sleeping moves it on at once."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(views, "time", fake)
    return fake


@pytest.fixture
def opened(waiting, client, settings, clock):
    """A page that waits for news, opened now: its invoice, payment and the state it has."""
    settings.PAY_STATUS_HOLD_SECONDS = 10
    invoice, payment = waiting
    page = client.get(reverse("pay", args=[invoice.public_token]), **THREADED).content.decode()
    return invoice, payment, state_of(page)


def test_news_on_the_way_waits_until_polling_would_have_shown_it(shop, opened, client, clock):
    # So a page asks no more often than every 3 s while the payment moves, as polling did.
    invoice, payment, seen = opened
    given = clock.now
    shop.send(payment, 10 * USDC)
    shop.watch()

    html = status(client, invoice, seen, **THREADED).content.decode()
    assert "Payment seen on chain." in html
    assert given + views.POLL_SECONDS <= clock.now < given + views.POLL_SECONDS + 1
    assert trigger_of(html) == "load, retry"


def test_the_end_of_the_payment_is_answered_at_once(shop, opened, client, clock):
    invoice, payment, seen = opened
    given = clock.now
    shop.send(payment, 10 * USDC)
    shop.confirm()

    html = status(client, invoice, seen, **THREADED).content.decode()
    assert "<h2>Paid</h2>" in html
    assert clock.now == given  # not a moment's wait


def test_a_state_given_long_ago_gets_its_news_at_once(shop, opened, client, clock):
    invoice, payment, seen = opened
    clock.now += views.POLL_SECONDS
    shop.send(payment, 10 * USDC)
    shop.watch()
    asked = clock.now

    html = status(client, invoice, seen, **THREADED).content.decode()
    assert "Payment seen on chain." in html
    assert clock.now == asked


def test_an_unknown_token_is_404_for_the_status_request_too(db, client):
    response = client.get(f"/pay/{'Q' * 43}/?v=abc", headers=HX, **THREADED)
    assert response.status_code == 404


# On a real threaded server (PostgreSQL: the in-memory SQLite live server serves one request
# at a time) --------------------------------------------------------------------------------


def _get(url: str, timeout: float = 30) -> tuple[int, str]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}", headers=HX)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@pytest.mark.django_db(transaction=True)
def test_a_waiting_page_hears_of_the_deposit_and_a_full_house_falls_back_to_polling(
    shop, live_server, settings
):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (a threaded live server; set DATABASE_URL=postgres://...)")
    settings.PAY_STATUS_HOLD_SECONDS = 60  # longer than the client waits: news must end it
    settings.PAY_STATUS_HOLD_SLOTS = 1
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    path = reverse("pay", args=[invoice.public_token])
    seen = state_of(_get(f"{live_server.url}{path}?v=none")[1])

    answers: list[tuple[int, str]] = []
    waiter = threading.Thread(
        target=lambda: answers.append(_get(f"{live_server.url}{path}?v={seen}", timeout=20))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while views._holding == 0:  # the waiter holds the one slot
        assert time.monotonic() < deadline, "the status request never waited"
        time.sleep(0.02)

    # Every slot taken: the next page is answered at once and polls.
    code, html = _get(f"{live_server.url}{path}?v={seen}", timeout=20)
    assert code == 200
    assert trigger_of(html) == "load delay:3s, retry"

    shop.send(payment, 10 * USDC)
    shop.watch()
    waiter.join(timeout=25)
    assert not waiter.is_alive()
    code, html = answers[0]
    assert code == 200
    assert "Payment seen on chain." in html
    assert trigger_of(html) == "load, retry"
    assert Payment.objects.get().status == PaymentStatus.PROCESSING


# Query counts --------------------------------------------------------------------------------


def _history(merchant, count: int) -> None:
    for _ in range(count):
        make_invoice(merchant, items=[("Old", "1", "5.00")], issue=True)


@pytest.mark.parametrize("history", [0, 12])
def test_the_page_with_an_address_costs_the_same_queries_whatever_the_history(
    shop, client, django_assert_num_queries, history
):
    _history(shop.merchant, history)
    invoice = shop.invoice("10.00")
    shop.start(invoice)
    page = reverse("pay", args=[invoice.public_token])
    # The page's state (invoice, merchant, customer, its current payment, refunds, transfers,
    # the assets on offer, in one query); first time only: the invoice with merchant and
    # customer, its items, the payment with asset, network and address (the QR code from the
    # cache), the invoice's refund links.
    with django_assert_num_queries(5):
        assert client.get(page).status_code == 200
    with django_assert_num_queries(1):  # then the state, and the page kept for it
        assert client.get(page).status_code == 200


@pytest.mark.parametrize("history", [0, 12])
def test_the_currency_picker_costs_the_same_queries_whatever_the_history(
    shop, client, django_assert_num_queries, history
):
    _history(shop.merchant, history)
    invoice = shop.invoice("10.00")
    page = reverse("pay", args=[invoice.public_token])
    # The state; first time only: invoice with merchant and customer, its items, the payment
    # (none), the active networks, their assets.
    with django_assert_num_queries(6):
        assert client.get(page).status_code == 200
    with django_assert_num_queries(1):
        assert client.get(page).status_code == 200


@pytest.mark.parametrize("history", [0, 12])
def test_the_status_request_costs_the_same_queries_whatever_the_history(
    shop, client, django_assert_num_queries, history
):
    _history(shop.merchant, history)
    invoice = shop.invoice("10.00")
    shop.start(invoice)
    # The state; first time only: invoice with merchant, the payment with asset, network and
    # address, the refund links.
    with django_assert_num_queries(4):
        html = status(client, invoice).content.decode()
    with django_assert_num_queries(1):
        assert status(client, invoice).content.decode() == html
    # Behind: the state, one look at what the page shows, the state again; the fragment that
    # asks again at once (another trigger) is rendered the first time.
    with django_assert_num_queries(6):
        status(client, invoice, "0" * 16, **THREADED)
    with django_assert_num_queries(3):
        status(client, invoice, "0" * 16, **THREADED)
    assert state_of(html)
