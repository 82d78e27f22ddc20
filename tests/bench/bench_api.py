"""What the REST API costs: invoice creations per second, and callback deliveries per second.

1. POST /api/v1/invoices (one line item, issued at once) over real HTTP to gunicorn run as
   production runs it (config/gunicorn.py: 2 gthread workers, persistent database connections
   with health checks), from 1 client and from 8 concurrent clients holding the same
   merchant's key (so their creations queue on the merchant row, as one shop's do). The
   merchant has no webhook endpoint: this is the API path alone.
2. Callback deliveries: invoices of a merchant with one webhook endpoint leave one outbox row
   each, made due a minute later (as when the broker lags: the task each commit fires finds
   nothing due yet); the sweep's `callbacks_deliver_due()` drains them, one signed POST after another, to a receiver on
   127.0.0.1 answering 204.

Every figure is a ratio to a minimal authenticated ninja endpoint (the same key auth and the
same per-key throttle, no work; tests/bench/urls.py) served by the same gunicorn in the same run: at the same
concurrency for the creations, and for the deliveries to the same number of minimal requests
from one client, since the sweep sends one at a time. Run with `make bench` (needs
DATABASE_URL=postgres://...: gunicorn serves the test database). Loopback only; every loop is bounded. Figures are printed,
never asserted; correctness (every invoice made, every callback delivered and signed) is.
Beside them, the time of a one-row commit on its own: the WAL flush every creation waits for.
"""

import http.client
import json
import os
import statistics
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection, transaction
from django.utils import timezone

from invoices import callbacks
from invoices.models import CallbackDelivery, CallbackStatus, Invoice, InvoiceStatus
from merchants.integrations import api_key_create, sign, webhook_endpoint_create
from tests.bench.bench_checkout import _env, _gunicorn
from tests.factories import MerchantFactory, make_invoice
from tests.local_http import serve_in_background

pytestmark = [pytest.mark.django_db(transaction=True)]

MINIMAL = "/bench-min/ping"
INVOICES = "/api/v1/invoices"
BODY = json.dumps(
    {"currency": "USD", "items": [{"name": "Widget", "quantity": "1", "unit_price": "10.00"}]}
).encode()
CONCURRENCY = (1, 8)
REQUESTS = 160  # per endpoint, concurrency and round
DELIVERIES = 200  # per round
ROUNDS = 3
WARMUP = 10


# What the served app is told beyond the bench defaults: no throttle in the way, and the
# connection settings production runs with, spelled out.
SERVED = {
    "API_RATE_PER_MINUTE": str(10**9),
    "DATABASE_CONN_MAX_AGE": "60",
    "DATABASE_CONN_HEALTH_CHECKS": "1",
}


class Server:
    """gunicorn on a loopback port; a new HTTP connection per request, as clients make."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, headers: dict, body: bytes | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def _rate(server: Server, method: str, path: str, headers: dict, body, clients: int) -> float:
    """REQUESTS requests from `clients` threads, per second. Every GET must answer 200 and
    every POST 201."""
    expected = 201 if method == "POST" else 200
    per_thread = REQUESTS // clients
    failures: list[tuple[int, bytes]] = []
    barrier = threading.Barrier(clients + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            status, content = server.request(method, path, headers, body)
            if status != expected:
                failures.append((status, content[:300]))

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - started
    assert not any(thread.is_alive() for thread in threads), f"{path}: clients hung"
    assert failures == [], f"{method} {path}: {failures[:3]}"
    return per_thread * clients / elapsed


FLUSHES = 200


def _commit_flush_ms() -> float:
    """The median time of a one-row INSERT committed on its own, in ms: mostly the WAL flush
    every durable commit waits for."""
    times = []
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_api_flush (n integer)")
        try:
            for n in range(FLUSHES):
                started = time.perf_counter()
                cursor.execute("INSERT INTO bench_api_flush VALUES (%s)", [n])
                times.append(time.perf_counter() - started)
        finally:
            cursor.execute("DROP TABLE bench_api_flush")
    return statistics.median(times) * 1000


class Receiver(BaseHTTPRequestHandler):
    """A merchant's webhook receiver: keeps what it was sent, answers 204."""

    received: list[tuple[dict[str, str], bytes]]
    lock: threading.Lock

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def server(transactional_db, tmp_path):
    if connection.vendor != "postgresql":
        pytest.fail(
            "needs PostgreSQL: API throughput is measured under gunicorn serving the test "
            "database to concurrent clients; set DATABASE_URL=postgres://..."
        )
    with _gunicorn({**_env(tmp_path), **SERVED}, production=True, static=False) as port:
        yield Server(port)


def test_invoice_creation_and_callback_delivery_per_second(server, capsys):

    shop = MerchantFactory(name="Bench Shop")
    shop_key = api_key_create(merchant=shop, name="Bench", by=None).plaintext
    auth = {"Authorization": f"Bearer {shop_key}"}
    post = {**auth, "Content-Type": "application/json"}
    endpoints = {
        "minimal": ("GET", MINIMAL, auth, None),
        "invoice": ("POST", INVOICES, post, BODY),
    }
    for method, url, headers, body in endpoints.values():  # warm the server and its imports
        for _ in range(WARMUP):
            status, content = server.request(method, url, headers, body)
            assert status in (200, 201), content[:300]

    # Callback deliveries: a merchant with one endpoint on a receiver on this machine.
    Receiver.received, Receiver.lock = [], threading.Lock()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    receiver_thread = serve_in_background(receiver)
    hooked = MerchantFactory(name="Hooked Shop")
    hooked_key = api_key_create(merchant=hooked, name="Bench", by=None).plaintext
    hooked_auth = {"Authorization": f"Bearer {hooked_key}"}
    endpoint = webhook_endpoint_create(
        merchant=hooked,
        url=f"http://127.0.0.1:{receiver.server_address[1]}/hooks",
        events=["invoice.created"],
    )

    def outbox(count: int) -> None:
        # Rows made due only a minute from now: the task each commit fires finds nothing due
        # yet (as when the broker lags), and the timed sweep below delivers them all.
        with transaction.atomic():
            for _ in range(count):
                make_invoice(hooked, items=[("Widget", "1", "10.00")], issue=True)
            CallbackDelivery.objects.filter(status=CallbackStatus.PENDING).update(
                next_attempt_at=timezone.now() + timedelta(minutes=1)
            )

    def due() -> datetime:
        return timezone.now() + timedelta(minutes=2)

    rates: dict[tuple[str, int], list[float]] = {
        (name, clients): [] for name in endpoints for clients in CONCURRENCY
    }
    minimal_sequential: list[float] = []
    deliveries: list[float] = []
    try:
        outbox(WARMUP)
        assert callbacks.callbacks_deliver_due(now=due()) == WARMUP
        for _ in range(ROUNDS):  # interleaved, so load from elsewhere hits all alike
            for clients in CONCURRENCY:
                for name, (method, url, headers, body) in endpoints.items():
                    rates[name, clients].append(_rate(server, method, url, headers, body, clients))
            outbox(DELIVERIES)
            started = time.perf_counter()
            sent = callbacks.callbacks_deliver_due(now=due())
            deliveries.append(DELIVERIES / (time.perf_counter() - started))
            assert sent == DELIVERIES
            started = time.perf_counter()
            for _ in range(DELIVERIES):
                status, content = server.request("GET", MINIMAL, hooked_auth)
                assert status == 200, content[:300]
            minimal_sequential.append(DELIVERIES / (time.perf_counter() - started))
    finally:
        receiver.shutdown()
        receiver.server_close()
        receiver_thread.join(timeout=10)

    # Every creation made one invoice, numbered without gaps or repeats, open for payment.
    created = WARMUP + ROUNDS * REQUESTS * len(CONCURRENCY)
    made = Invoice.objects.filter(merchant=shop)
    assert made.count() == created
    assert set(made.values_list("number", flat=True)) == set(range(1, created + 1))
    assert not made.exclude(status=InvoiceStatus.OPEN).exists()
    # Every outbox row delivered once, signed with the endpoint's secret.
    expected = WARMUP + ROUNDS * DELIVERIES
    rows = CallbackDelivery.objects.filter(merchant=hooked)
    assert rows.count() == expected
    assert rows.filter(status=CallbackStatus.DELIVERED, attempts=1).count() == expected
    assert len(Receiver.received) == expected
    ids = set()
    for headers, body in Receiver.received:
        assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers.keys()
        assert headers["webhook-signature"] == sign(
            secret=endpoint.secret,
            message_id=headers["webhook-id"],
            timestamp=int(headers["webhook-timestamp"]),
            body=body,
        )
        assert json.loads(body)["type"] == "invoice.created"
        ids.add(headers["webhook-id"])
    assert len(ids) == expected

    flush = _commit_flush_ms()
    median = {key: statistics.median(values) for key, values in rates.items()}
    sequential = statistics.median(minimal_sequential)
    delivered = statistics.median(deliveries)
    with capsys.disabled():
        print(
            f"\nREST API under gunicorn (config/gunicorn.py, DATABASE_CONN_MAX_AGE="
            f"{SERVED['DATABASE_CONN_MAX_AGE']}, health checks on), PostgreSQL; median of "
            f"{ROUNDS} rounds of {REQUESTS} requests (a new HTTP connection each), "
            f"{DELIVERIES} callbacks a round; load average {os.getloadavg()[0]:.2f}"
        )
        print(f"{'':<36}{'clients':>8}{'per s':>9}{'x minimal':>11}")
        for clients in CONCURRENCY:
            base = median["minimal", clients]
            print(f"{'minimal authenticated endpoint':<36}{clients:>8}{base:>9.0f}{1:>11.2f}")
            rate = median["invoice", clients]
            print(f"{'invoice creation, POST 201':<36}{clients:>8}{rate:>9.0f}{rate / base:>11.2f}")
        print(
            f"{'callback deliveries (sweep, 204)':<36}{1:>8}{delivered:>9.0f}"
            f"{delivered / sequential:>11.2f}"
            f"   (minimal endpoint, same {DELIVERIES} sequential: {sequential:.0f}/s)"
        )
        print(
            f"8 / 1 clients: minimal {median['minimal', 8] / median['minimal', 1]:.2f}, "
            f"invoice creation {median['invoice', 8] / median['invoice', 1]:.2f}"
        )
        # What a creation cannot go below here: its commit waits for the WAL on disk
        # (synchronous_commit stays on for money rows), and one merchant's creations queue on
        # its numbering lock, held until that flush is done.
        print(
            f"per request at 1 client: minimal {1000 / median['minimal', 1]:.1f} ms, "
            f"invoice creation {1000 / median['invoice', 1]:.1f} ms; a one-row durable commit "
            f"on this machine now: {flush:.1f} ms (median of {FLUSHES})"
        )
