"""How the merchant pages scale with the size of a merchant's history.

Figures are ratios to a minimal authenticated view measured in the same run, so they compare
across machines. Run with `make bench`; nothing here asserts a time.
"""

import statistics
import time
from decimal import Decimal

import pytest
from django.test import Client

from invoices.models import Invoice, InvoiceEvent, LineItem
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create
from tests.factories import PASSWORD, CustomerFactory, MembershipFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.bench.urls")]

ROUNDS = 30


def median_seconds(fn, rounds: int = ROUNDS) -> float:
    fn()  # warm caches and templates
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _grow(merchant, customer, count: int) -> None:
    """Bulk rows shaped like real ones; the service is measured separately below."""
    start = merchant.next_invoice_number
    invoices = Invoice.objects.bulk_create(
        Invoice(
            merchant=merchant,
            number=n,
            reference=f"INV-{n:05d}",
            customer=customer,
            currency="USD",
            fee_payer="merchant",
            status="open",
            subtotal=Decimal("100"),
            total=Decimal("100"),
        )
        for n in range(start, start + count)
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


def test_pages_against_history_size(capsys):
    membership = MembershipFactory()
    merchant, user = membership.merchant, membership.user
    customer = CustomerFactory(merchant=merchant)
    client = Client()
    assert client.login(email=user.email, password=PASSWORD)

    def get(url: str):
        return lambda: client.get(url)

    rows = []
    baseline = median_seconds(get("/bench/minimal/"))
    total = 0
    for size in (10, 1_000, 10_000):
        _grow(merchant, customer, size - total)
        total = size
        first = Invoice.objects.filter(merchant=merchant).order_by("pk").first()
        for name, url in (
            ("dashboard", "/"),
            ("invoice list", "/invoices/"),
            ("invoice list search", "/invoices/?q=INV-0000"),
            ("invoice detail", f"/invoices/{first.pk}/"),
        ):
            rows.append((name, size, median_seconds(get(url)) / baseline))

    data = InvoiceInput(
        customer=customer,
        currency="USD",
        items=[LineItemInput("Item", Decimal(1), Decimal("10.00")) for _ in range(10)],
    )
    create = median_seconds(lambda: invoice_create(merchant=merchant, data=data, by=user))
    with capsys.disabled():
        print(
            f"\nbaseline: minimal authenticated view {baseline * 1000:.2f} ms (median of {ROUNDS})"
        )
        print(f"{'page':<22}{'invoices':>10}{'x baseline':>12}")
        for name, size, ratio in rows:
            print(f"{name:<22}{size:>10,}{ratio:>12.2f}")
        for name in {r[0] for r in rows}:
            small = next(r[2] for r in rows if r[0] == name and r[1] == 10)
            large = next(r[2] for r in rows if r[0] == name and r[1] == 10_000)
            print(f"{name}: 10,000 / 10 invoices = {large / small:.2f}")
        print(f"invoice_create with 10 items: {create / baseline:.2f} x baseline")
