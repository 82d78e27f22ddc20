"""How the merchant pages scale with the size of a merchant's history.

Figures are ratios to a minimal authenticated view measured in the same run, so they compare
across machines. Run with `make bench`; nothing here asserts a time. The machine may be shared:
each page's requests alternate with the minimal view's, and every figure is set against the
minimal view of its own rounds (printed beside it), so a change in load moves both alike.
On PostgreSQL (DATABASE_URL) the tables are analysed after each bulk load, as autovacuum does
after one in production; without it the planner still believes the tables hold a few rows.

The history grows the way a shop's does: the first 10 invoices are open (the business at
hand), everything after them is paid and settled more than 30 days ago, in bulk rows shaped
like real ones. Counts come from the counts the database keeps, sums and "recent" from
indexes over the open or recent rows: the pages should cost the same at 100,000 as at 10.
"""

import os
import statistics
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from invoices.models import Invoice, InvoiceEvent, LineItem
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create
from tests.factories import PASSWORD, CustomerFactory, MembershipFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.bench.urls")]

ROUNDS = 30
SIZES = (10, 1_000, 10_000, 100_000)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn, rounds: int = ROUNDS) -> float:
    fn()  # warm caches and templates
    return statistics.median(seconds(fn) for _ in range(rounds))


def paired_medians(fn, baseline, rounds: int = ROUNDS) -> tuple[float, float]:
    """Medians of `fn` and of `baseline`, their calls alternating round by round."""
    fn(), baseline()  # warm caches and templates
    samples = [(seconds(fn), seconds(baseline)) for _ in range(rounds)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


OPEN = 10  # the first invoices stay open; the history after them is paid and settled


def _grow(merchant, customer, count: int) -> None:
    """Bulk rows shaped like real ones; the service is measured separately below."""
    start = merchant.next_invoice_number
    settled = timezone.now() - timedelta(days=45)
    batch = 10_000
    for offset in range(0, count, batch):
        numbers = range(start + offset, start + min(offset + batch, count))
        invoices = Invoice.objects.bulk_create(
            Invoice(
                merchant=merchant,
                number=n,
                reference=f"INV-{n:05d}",
                customer=customer,
                currency="USD",
                fee_payer="merchant",
                status="open" if n <= OPEN else "paid",
                subtotal=Decimal("100"),
                total=Decimal("100"),
                finalized_at=None if n <= OPEN else settled - timedelta(minutes=n),
            )
            for n in numbers
        )
        LineItem.objects.bulk_create(
            LineItem(invoice=i, position=1, name="Item", quantity=1, unit_price=100, amount=100)
            for i in invoices
        )
        InvoiceEvent.objects.bulk_create(
            InvoiceEvent(invoice=i, type="invoice.created") for i in invoices
        )
    merchant.next_invoice_number = start + count
    merchant.save(update_fields=["next_invoice_number"])
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def test_pages_against_history_size(capsys):
    membership = MembershipFactory()
    merchant, user = membership.merchant, membership.user
    customer = CustomerFactory(merchant=merchant)
    client = Client()
    assert client.login(email=user.email, password=PASSWORD)

    def get(url: str):
        return lambda: client.get(url)

    rows = []
    minimal = get("/bench/minimal/")
    baseline = median_seconds(minimal)
    total = 0
    for size in SIZES:
        _grow(merchant, customer, size - total)
        total = size
        first = Invoice.objects.filter(merchant=merchant).order_by("pk").first()
        for name, url in (
            ("dashboard", "/"),
            ("invoice list", "/invoices/"),
            ("invoice list search", "/invoices/?q=INV-0000"),
            ("invoice detail", f"/invoices/{first.pk}/"),
        ):
            page, its_baseline = paired_medians(get(url), minimal)
            rows.append((name, size, page / its_baseline, its_baseline))

    data = InvoiceInput(
        customer=customer,
        currency="USD",
        items=[LineItemInput("Item", Decimal(1), Decimal("10.00")) for _ in range(10)],
    )
    create = median_seconds(lambda: invoice_create(merchant=merchant, data=data, by=user))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with capsys.disabled():
        print(
            f"\n{connection.vendor}, load {load}; baseline: minimal authenticated view "
            f"{baseline * 1000:.2f} ms (median of {ROUNDS}), and again beside each figure, "
            "measured in the same rounds"
        )
        print(
            f"history: the first {OPEN} invoices open, the rest paid and settled over 30 days ago"
        )
        print(
            f"{'page':<22}{'invoices':>10}{'x baseline':>12}{'baseline ms':>13}"
            f"{'x its cost at 10':>18}"
        )
        for name, size, ratio, its_baseline in rows:
            small = next(r[2] for r in rows if r[0] == name and r[1] == SIZES[0])
            print(
                f"{name:<22}{size:>10,}{ratio:>12.2f}{its_baseline * 1000:>13.2f}"
                f"{ratio / small:>18.2f}"
            )
        print(f"invoice_create with 10 items: {create / baseline:.2f} x baseline")
