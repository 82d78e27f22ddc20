"""What the payer waits for, and what the payment page costs to serve.

1. Detection latency on anvil mining a block every second, with the real watcher task in a
   thread polling every 0.25 s: from the moment the block holding the transfer appears to the
   payment being Processing, and to Paid (2 confirmations). Median and p95 over 20 payments.
   On PostgreSQL, also when the page shows it: a client asks the status fragment the way
   the page's htmx does (waiting for news, `?v=`) from gunicorn run with config/gunicorn.py
   (gthread workers), and notes when the answer says Processing and Paid, and how many
   requests it made.
2. Requests per second of the payment page and of its status fragment (the request every open
   page makes every 3 s) under gunicorn with 2 workers, against PostgreSQL holding 100,000
   invoices with their payments, as ratios to a minimal public view served by the same
   gunicorn in the same run.

Run with `make bench` (part 2 needs DATABASE_URL=postgres://...). Loopback only; every loop is
bounded. Figures are printed, never asserted.
"""

import http.client
import math
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from checkout import page_news
from checkout.models import Payment, PaymentStatus
from checkout.services import payment_start
from checkout.tasks import watch_network
from contracts.deploy import PAYER_KEY, DemoDeployment, deploy_demo_tokens, load_artifact
from invoices.models import Invoice, InvoiceStatus, LineItem
from tests.chain import running_anvil
from tests.evm import seed_networks
from tests.factories import CustomerFactory, MerchantFactory, make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import wallet_set
from wallets.chain import Chain, Signer
from wallets.models import Asset, DepositAddress, Network, Wallet
from wallets.scanner import cursor_reset

REPO = Path(__file__).resolve().parents[2]
PAYMENTS = 20
POLL = 0.25  # seconds between watcher rounds
TIMEOUT = 30.0  # seconds a payment may take before the benchmark gives up on it
INVOICES = 100_000
CLIENT_THREADS = 4
REQUESTS = 300  # per endpoint and round
ROUNDS = 3


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _network(rpc_url: str, deployed: DemoDeployment, confirmations: int) -> Network:
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.rpc_url, network.enabled, network.confirmations = rpc_url, True, confirmations
    network.save()
    for symbol, address in (("USDT", deployed["USDT"]), ("USDC", deployed["USDC"])):
        network.assets.filter(symbol=symbol).update(contract_address=address.lower())
    cursor_reset(network=network, next_block=Chain(rpc_url).head())
    return network


class BlockClock(threading.Thread):
    """Notes when each new block first shows at the node (eth_blockNumber every 10 ms)."""

    def __init__(self, rpc_url: str) -> None:
        super().__init__(daemon=True)
        self.chain = Chain(rpc_url)
        self.seen: dict[int, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        last = -1
        while not self.halt.is_set():
            head = self.chain.head()
            now = time.perf_counter()
            for number in range(last + 1, head + 1):
                self.seen.setdefault(number, now)
            last = max(last, head)
            self.halt.wait(0.01)


class Watcher(threading.Thread):
    """watch_network every POLL seconds; notes when the followed payment changes status."""

    def __init__(self, network_id: int, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.network_id, self.lock = network_id, lock
        self.halt = threading.Event()
        self.follow: int | None = None
        self.seen: dict[tuple[int, str], float] = {}
        self.round_seconds: list[float] = []
        self.errors: list[BaseException] = []
        main = connections["default"]
        # An in-memory SQLite test database is one connection; share it (under the lock).
        self.shared = main if main.vendor == "sqlite" and main.is_in_memory_db() else None  # type: ignore[attr-defined]

    def run(self) -> None:
        if self.shared is not None:
            self.shared.inc_thread_sharing()
            connections["default"] = self.shared
        try:
            tick = time.perf_counter()
            while not self.halt.is_set():
                with self.lock:
                    started = time.perf_counter()
                    try:
                        watch_network(self.network_id)
                        if self.follow is not None:
                            status = Payment.objects.get(pk=self.follow).status
                            self.seen.setdefault((self.follow, status), time.perf_counter())
                    except BaseException as error:  # reported by the benchmark
                        self.errors.append(error)
                    self.round_seconds.append(time.perf_counter() - started)
                tick += POLL
                self.halt.wait(max(0.0, tick - time.perf_counter()))
        finally:
            if self.shared is None:
                connection.close()
            else:
                self.shared.dec_thread_sharing()


class PageWatcher(threading.Thread):
    """The open payment page: asks the status fragment as the page's htmx does (the state it
    has in `?v=`, again at once or after the delay the answer's trigger says), and notes when
    the answer first says Processing and Paid."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.halt = threading.Event()
        self.token: str | None = None
        self.seen: dict[tuple[str, str], float] = {}
        self.requests: dict[str, int] = {}
        self.errors: list[str] = []

    def run(self) -> None:
        state = ""
        while not self.halt.is_set():
            token = self.token
            if token is None or (token, "paid") in self.seen:
                state = ""
                self.halt.wait(0.01)
                continue
            path = f"/pay/{token}/" + (f"?v={state}" if state else "")
            try:
                # A status request may be held for PAY_STATUS_HOLD_SECONDS (10) before it answers.
                # The first request is the page itself, as a browser's; then its status.
                headers = {"HX-Request": "true"} if state else {}
                status, body = _get(self.port, path, headers, timeout=30)
            except OSError as error:
                self.errors.append(repr(error))
                self.halt.wait(0.5)
                continue
            now = time.perf_counter()
            self.requests[token] = self.requests.get(token, 0) + 1
            html = body.decode()
            if status != 200:
                self.errors.append(f"{status}: {html[:200]}")
                self.halt.wait(0.5)
                continue
            if "Payment seen on chain." in html:
                self.seen.setdefault((token, "processing"), now)
            if "<h2>Paid</h2>" in html:
                self.seen.setdefault((token, "paid"), now)
                continue
            found = re.search(r"\?v=([0-9a-f]+)", html)
            state = found.group(1) if found else ""
            delay = re.search(r'hx-trigger="load delay:(\d+)s', html)
            if delay:
                self.halt.wait(int(delay.group(1)))


@pytest.mark.django_db(transaction=True)
def test_detection_latency_on_one_second_blocks(capsys, tmp_path):
    processing: list[float] = []
    paid: list[float] = []
    paid_after_confirming_block: list[float] = []
    page_processing: list[float] = []  # from the server knowing to the page showing it
    page_paid: list[float] = []
    page_paid_after_confirming_block: list[float] = []
    # Per payment: requests the page made, those polling every 3 s would have made, and how
    # much later polling would have shown Paid (seconds).
    page_requests: list[tuple[int, int, float]] = []
    page_open: list[float] = []  # seconds from opening the page to it showing Paid
    idle_seconds = 0.0
    lock = threading.Lock()
    with running_anvil(block_time=1) as rpc_url, ExitStack() as stack:
        deployed = deploy_demo_tokens(rpc_url)
        merchant = MerchantFactory()
        wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
        network = _network(rpc_url, deployed, confirmations=2)
        usdc = Asset.objects.get(network=network, symbol="USDC")
        payer = Signer(Chain(rpc_url, timeout=30), PAYER_KEY)
        abi = load_artifact()["abi"]
        clock, watcher = BlockClock(rpc_url), Watcher(network.pk, lock)
        page: PageWatcher | None = None
        if connection.vendor == "postgresql":  # the in-memory SQLite is not served to others
            # Served as deployed (compose.yaml): gthread workers sharing the Redis cache, which
            # paces a waiting page's answers whichever worker took its last request. Without
            # REDIS_URL each worker has its own cache and knows only the pages it served.
            served = _env(tmp_path)
            if os.environ.get("REDIS_URL"):
                served["REDIS_URL"] = os.environ["REDIS_URL"]
            page = PageWatcher(stack.enter_context(_gunicorn(served, production=True)))
            page.start()
        # A page left open on a payment nobody makes, for the whole run: what an idle open
        # page costs in requests.
        idle: PageWatcher | None = None
        if page is not None:
            idle = PageWatcher(page.port)
            idle_invoice = make_invoice(merchant, items=[("Item", "1", "25.00")], issue=True)
            payment_start(invoice=idle_invoice, asset=usdc)
            idle.token = idle_invoice.public_token
            idle_opened = time.perf_counter()
            idle.start()
        clock.start()
        watcher.start()
        try:
            for _ in range(PAYMENTS):
                with lock:
                    invoice = make_invoice(merchant, items=[("Item", "1", "25.00")], issue=True)
                    payment = payment_start(invoice=invoice, asset=usdc)
                    watcher.follow = payment.pk
                token = invoice.public_token
                opened = time.perf_counter()
                if page is not None:
                    page.token = token
                tx = payer.call(
                    deployed["USDC"],
                    abi,
                    "transfer",
                    [payment.deposit_address.address, int(payment.amount_due or 0)],
                    nonce=payer.next_nonce(),
                )
                block = payer.wait(tx, timeout=TIMEOUT)["block_number"]
                deadline = time.monotonic() + TIMEOUT
                while (payment.pk, PaymentStatus.PAID) not in watcher.seen or (
                    page is not None and (token, "paid") not in page.seen
                ):
                    assert time.monotonic() < deadline, f"payment {payment.pk} never got paid"
                    assert watcher.errors == [], watcher.errors
                    assert page is None or page.errors == [], page.errors
                    time.sleep(0.02)
                mined = clock.seen[block]
                known_paid = watcher.seen[(payment.pk, PaymentStatus.PAID)]
                seen_processing = watcher.seen.get((payment.pk, PaymentStatus.PROCESSING))
                if seen_processing is not None:  # a slow round may see it paid at once
                    processing.append(seen_processing - mined)
                paid.append(known_paid - mined)
                paid_after_confirming_block.append(known_paid - clock.seen[block + 1])
                if page is not None:
                    shown_paid = page.seen[(token, "paid")]
                    page_paid.append(shown_paid - known_paid)
                    page_paid_after_confirming_block.append(shown_paid - clock.seen[block + 1])
                    shown_processing = page.seen.get((token, "processing"))
                    if seen_processing is not None and shown_processing is not None:
                        page_processing.append(shown_processing - seen_processing)
                    # Polling every 3 s from the page load shows Paid at the first poll after
                    # the server knows: that many requests, and that much later.
                    polls = math.ceil((known_paid - opened) / 3)
                    page_requests.append(
                        (page.requests[token], 1 + polls, opened + 3 * polls - known_paid)
                    )
                    page_open.append(shown_paid - opened)
        finally:
            watcher.halt.set()
            clock.halt.set()
            if idle is not None:
                idle.halt.set()
                idle_seconds = time.perf_counter() - idle_opened
                idle.join(timeout=30)
            if page is not None:
                page.halt.set()
                page.join(timeout=30)
            watcher.join(timeout=30)
            clock.join(timeout=30)
    assert watcher.errors == []

    def line(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        if not ms:
            # The page showed nothing in between: intermediate news (the deposit seen) is
            # paced like polling, and Paid came before the page's next 3 s.
            return f"{name:<38}{'never shown in between':>36}{0:>5}"
        return (
            f"{name:<38}{statistics.median(ms):>9.0f}{_percentile(ms, 0.95):>9.0f}"
            f"{min(ms):>9.0f}{max(ms):>9.0f}{len(ms):>5}"
        )

    with capsys.disabled():
        print(
            f"\ndetection latency on anvil, 1 block/s, 2 confirmations, watcher every {POLL} s "
            f"(its round took {statistics.median(watcher.round_seconds) * 1000:.0f} ms median)"
        )
        print(
            f"{'from the block holding the transfer to':<38}{'median':>9}{'p95':>9}{'min':>9}"
            f"{'max':>9}{'n':>5}"
        )
        print(line("  payment Processing (ms)", processing))
        print(line("  payment Paid (ms)", paid))
        print(line("  Paid, from the confirming block (ms)", paid_after_confirming_block))
        if not page_paid:
            print(
                "  the page (measured on PostgreSQL only: set DATABASE_URL=postgres://...) "
                "learns it at its next status request"
            )
            return
        cache = "the Redis cache" if os.environ.get("REDIS_URL") else "a cache per worker"
        print(
            f"the page, asking gunicorn (config/gunicorn.py, {cache}) the status fragment with ?v="
        )
        print(line("  page Processing, from server knowing", page_processing))
        print(line("  page Paid, from server knowing (ms)", page_paid))
        print(line("  page Paid, from confirming block (ms)", page_paid_after_confirming_block))
        made = sum(n for n, _, _ in page_requests)
        polled = sum(n for _, n, _ in page_requests)
        later = statistics.median(delay for _, _, delay in page_requests) * 1000
        print(
            f"  requests per payment (page load included): {made / len(page_requests):.2f}; "
            f"polling every 3 s: {polled / len(page_requests):.2f}, showing Paid a median "
            f"{later:.0f} ms later than the server knew"
        )
        # Per open page per minute: while paying (from the page opening to it showing Paid)
        # and idle (a page open on a payment never made, for the whole run), each beside
        # what polling every 3 s makes in the same time (a request every 3 s, and the page).
        open_minutes = sum(page_open) / 60
        print(
            f"  requests per open page per minute while paying: {made / open_minutes:.1f}; "
            f"polling every 3 s: {polled / open_minutes:.1f} (over {sum(page_open):.0f} s "
            f"of {len(page_open)} pages)"
        )
        assert idle is not None
        idle_made = sum(idle.requests.values())
        idle_polled = 1 + math.floor(idle_seconds / 3)
        print(
            f"  requests per open page per minute, idle: {idle_made / idle_seconds * 60:.1f}; "
            f"polling every 3 s: {idle_polled / idle_seconds * 60:.1f} (one page open "
            f"{idle_seconds:.0f} s, page load included; held up to PAY_STATUS_HOLD_SECONDS)"
        )


# Serving the payment page ------------------------------------------------------------------


def _fill(merchant, customer, wallet, count: int) -> None:
    """Invoices with a line item and a settled payment each, in bulk (shaped like real rows)."""
    usdc = Asset.objects.get(network__slug="anvil", symbol="USDC")
    now = timezone.now()
    start = merchant.next_invoice_number
    batch = 5_000
    for offset in range(0, count, batch):
        numbers = range(start + offset, start + min(offset + batch, count))
        invoices = Invoice.objects.bulk_create(
            Invoice(
                merchant=merchant,
                number=n,
                reference=f"INV-{n:06d}",
                customer=customer,
                currency="USD",
                fee_payer="merchant",
                status=InvoiceStatus.PAID,
                subtotal=Decimal("100"),
                total=Decimal("100"),
                issued_at=now,
            )
            for n in numbers
        )
        LineItem.objects.bulk_create(
            LineItem(invoice=i, position=1, name="Item", quantity=1, unit_price=100, amount=100)
            for i in invoices
        )
        addresses = DepositAddress.objects.bulk_create(
            DepositAddress(
                wallet=wallet,
                merchant=merchant,
                derivation_index=1_000_000 + i.number,
                address="0x" + secrets.token_hex(20),
            )
            for i in invoices
        )
        Payment.objects.bulk_create(
            Payment(
                invoice=i,
                number=1,
                order_number=f"{i.reference}-01",
                asset=usdc,
                network=usdc.network,
                deposit_address=a,
                status=PaymentStatus.PAID,
                invoice_amount=Decimal("100"),
                fee_payer="merchant",
                rate=Decimal(1),
                rate_source="static",
                rate_at=now,
                amount_due=100_000_000,
                received=100_000_000,
                confirmed=100_000_000,
                finalized_at=now,
            )
            for i, a in zip(invoices, addresses, strict=True)
        )
    merchant.next_invoice_number = start + count
    merchant.save(update_fields=["next_invoice_number"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database_url() -> str:
    db = connection.settings_dict  # the test database pytest-django made
    auth = quote(db["USER"], safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _env(tmp_path: Path) -> dict:
    """What the served app gets: production settings on the test database, and metrics
    files of its own (config/gunicorn.py empties the folder it is given at start)."""
    (tmp_path / "metrics").mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DJANGO_SETTINGS_MODULE": "tests.bench.settings",
        "DATABASE_URL": _database_url(),
        "SECRET_KEY": "bench-only-" + secrets.token_hex(16),
        "STABLEBILL_VAR_DIR": str(tmp_path / "var"),
        "ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONPATH": str(REPO),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


@contextmanager
def _gunicorn(env: dict, *, production: bool = False, static: bool = True) -> Iterator[int]:
    """gunicorn with 2 sync workers, or as config/gunicorn.py runs it (gthread workers).
    `static=False` for an app serving no page (the API): no static files collected."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    if static:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=REPO,
            env=env,
            check=True,
            timeout=900,  # compressing every static file takes minutes on a busy machine
        )
    with tempfile.TemporaryFile() as log:
        args = ["config.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}"]
        if production:
            args = ["-c", "config/gunicorn.py", "config.wsgi"]
            env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
        process = subprocess.Popen(
            [str(bin_dir / "gunicorn"), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers stop with it
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if _get(port, "/bench/public-minimal/")[0] == 200:
                        break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"gunicorn did not start:\n{log.read().decode()[-3000:]}")
                time.sleep(0.1)
            yield port
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _get(
    port: int, path: str, headers: dict | None = None, timeout: float = 10
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _requests_per_second(port: int, path: str, headers: dict | None = None) -> float:
    """REQUESTS requests from CLIENT_THREADS threads; every answer must be a 200."""
    per_thread = REQUESTS // CLIENT_THREADS
    failures: list[int] = []
    barrier = threading.Barrier(CLIENT_THREADS + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(per_thread):
            status, _body = _get(port, path, headers)
            if status != 200:
                failures.append(status)

    threads = [threading.Thread(target=work) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - started
    assert failures == [], f"{path}: {failures[:5]}"
    return per_thread * CLIENT_THREADS / elapsed


@pytest.mark.django_db(transaction=True)
def test_payment_page_requests_per_second_under_gunicorn(capsys, tmp_path):
    if connection.vendor != "postgresql":
        pytest.fail(
            "needs PostgreSQL: the payment page is measured under gunicorn serving the test "
            "database with 100,000 invoices; set DATABASE_URL=postgres://..."
        )
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.enabled = True
    network.save()
    merchant = MerchantFactory(name="Acme Tools")
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    customer = CustomerFactory(merchant=merchant, name="Ada Lovelace")
    started = time.perf_counter()
    _fill(merchant, customer, Wallet.objects.get(merchant=merchant), INVOICES - 2)
    filled = time.perf_counter() - started
    usdc = Asset.objects.get(network=network, symbol="USDC")
    # The two measured invoices are made the way the product makes them.
    waiting = make_invoice(
        merchant, customer=customer, items=[("Consulting", "2", "150.00")], issue=True
    )
    payment_start(invoice=waiting, asset=usdc)
    fresh = make_invoice(merchant, customer=customer, items=[("Audit", "1", "90.00")], issue=True)
    assert Invoice.objects.count() == INVOICES
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    pay = f"/pay/{waiting.public_token}/"
    picker = f"/pay/{fresh.public_token}/"
    hx = {"HX-Request": "true"}
    endpoints = [
        ("minimal public view", "/bench/public-minimal/", None),
        ("payment page, address + QR", pay, None),
        ("status fragment (htmx poll)", pay, hx),
        ("payment page, currency picker", picker, None),
    ]
    # Queries per request, measured in-process on the same data: the first request for a
    # state, then each one after it (the page kept for that state; on PostgreSQL its state
    # too, until a notice says it changed).
    client = Client()
    queries = {}
    # The notices of the set-up heard first (checkout/page_news.py): one arriving after a
    # first read would void it once, and the counts would show that instead of the page's.
    assert page_news.listener.caught_up(10)
    for name, path, headers in endpoints[1:]:
        counts = []
        for _ in range(2):
            with CaptureQueriesContext(connection) as captured:
                assert client.get(path, headers=headers or {}).status_code == 200
            counts.append(len(captured.captured_queries))
        queries[name] = f"{counts[0]}, then {counts[1]}"

    env = _env(tmp_path)
    rates: dict[str, list[float]] = {name: [] for name, _, _ in endpoints}
    with _gunicorn(env) as port:
        for _name, path, headers in endpoints:  # warm both workers
            for _ in range(10):
                assert _get(port, path, headers)[0] == 200
        for _ in range(ROUNDS):  # interleaved, so load from elsewhere hits all alike
            for name, path, headers in endpoints:
                rates[name].append(_requests_per_second(port, path, headers))
    median = {name: statistics.median(values) for name, values in rates.items()}
    baseline = median["minimal public view"]
    # Each round's ratio to the baseline of the same round: the spread shows the noise.
    spread = {
        name: [rate / base for rate, base in zip(values, rates["minimal public view"], strict=True)]
        for name, values in rates.items()
    }
    with capsys.disabled():
        print(
            f"\npayment page under gunicorn (2 sync workers), PostgreSQL with {INVOICES:,} "
            f"invoices and payments (filled in {filled:.0f} s); {CLIENT_THREADS} client "
            f"threads, median of {ROUNDS} rounds of {REQUESTS} requests; load average "
            f"{os.getloadavg()[0]:.2f}"
        )
        print(
            f"{'endpoint':<32}{'req/s':>8}{'baseline':>10}{'x minimal':>11}{'rounds':>14}"
            f"{'queries':>14}"
        )
        for name, _, _ in endpoints:
            low, high = min(spread[name]), max(spread[name])
            print(
                f"{name:<32}{median[name]:>8.0f}{baseline:>10.0f}{median[name] / baseline:>11.2f}"
                f"{f'{low:.2f}-{high:.2f}':>14}{queries.get(name, '0'):>14}"
            )
