"""Invoice numbers under real concurrency: threads, each on its own PostgreSQL connection."""

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from invoices.models import Invoice
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create
from tests.conftest import require_postgres
from tests.factories import MerchantFactory

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
PER_THREAD = 10


def _run_in_threads(target, count: int) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as error:  # collected and re-raised by the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_concurrent_creation_gives_numbers_without_gaps_or_duplicates():
    require_postgres()
    merchant = MerchantFactory()
    other = MerchantFactory()
    data = InvoiceInput(
        currency="USD", items=[LineItemInput("Item", Decimal("1"), Decimal("9.99"))]
    )

    def create_many(index: int) -> None:
        for _ in range(PER_THREAD):
            # Half the threads write to a second merchant: its sequence is independent.
            invoice_create(merchant=merchant if index % 2 == 0 else other, data=data)

    errors = _run_in_threads(create_many, THREADS)
    assert errors == []
    per_merchant = THREADS // 2 * PER_THREAD
    for m in (merchant, other):
        numbers = sorted(Invoice.objects.filter(merchant=m).values_list("number", flat=True))
        assert numbers == list(range(1, per_merchant + 1))
        m.refresh_from_db()
        assert m.next_invoice_number == per_merchant + 1


def test_concurrent_duplicate_foreign_id_creates_exactly_one_invoice():
    require_postgres()
    merchant = MerchantFactory()
    data = InvoiceInput(
        currency="USD",
        items=[LineItemInput("Item", Decimal("1"), Decimal("5"))],
        foreign_id="SHOP-42",
    )
    refused: list[str] = []

    def create(index: int) -> None:
        try:
            invoice_create(merchant=merchant, data=data)
        except ValidationError as error:
            refused.extend(error.message_dict["foreign_id"])

    errors = _run_in_threads(create, THREADS)
    assert errors == []
    assert Invoice.objects.filter(merchant=merchant, foreign_id="SHOP-42").count() == 1
    assert len(refused) == THREADS - 1
    # The losers did not burn numbers: the next invoice continues the sequence.
    assert list(Invoice.objects.filter(merchant=merchant).values_list("number", flat=True)) == [1]
    merchant.refresh_from_db()
    assert merchant.next_invoice_number == 2
