"""Emails under real concurrency: threads, each on its own PostgreSQL connection.

Tasks are queued on commit; here nothing is enqueued (the threads call the services
directly), so what is measured is the database guards alone.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.utils import timezone

from invoices.delivery import (
    ReceiptInput,
    email_delivery_send,
    invoice_paid_deliver,
    invoice_send,
    reminders_queue,
)
from invoices.models import EmailDelivery, EmailKind, EmailStatus, Invoice, Receipt
from invoices.services import InvoiceStateError
from tests.conftest import require_postgres
from tests.factories import CustomerFactory, MerchantFactory, make_invoice
from tests.invoices.test_numbering_concurrency import _run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8


@pytest.fixture
def invoice():
    merchant = MerchantFactory(name="Acme Tools")
    customer = CustomerFactory(merchant=merchant, email="ada@example.org")
    return make_invoice(merchant, customer=customer, issue=True)


@pytest.fixture
def no_tasks(monkeypatch):
    # The threads must race on the rows, not on a worker that sends as soon as one commits.
    monkeypatch.setattr("invoices.delivery._enqueue", lambda delivery: None)


def test_double_clicked_send_queues_one_email(invoice, no_tasks):
    require_postgres()
    refused: list[str] = []

    def send(index: int) -> None:
        try:
            invoice_send(invoice=invoice)
        except InvoiceStateError as error:
            refused.append(str(error))

    assert _run_in_threads(send, THREADS) == []
    assert EmailDelivery.objects.filter(invoice=invoice).count() == 1
    assert refused == ["The invoice is on its way already."] * (THREADS - 1)


def test_racing_workers_send_one_email(invoice, no_tasks):
    require_postgres()
    delivery = invoice_send(invoice=invoice)

    assert (
        _run_in_threads(lambda index: email_delivery_send(delivery_id=delivery.pk), THREADS) == []
    )
    assert len(mail.outbox) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (EmailStatus.SENT, 1)
    assert invoice.events.filter(type="email.sent").count() == 1


def test_racing_settlements_record_one_receipt(invoice, no_tasks):
    require_postgres()
    receipt = ReceiptInput(
        key="order-1", paid_at=timezone.now(), amount=Decimal("300.00"), method="USDT"
    )

    def settle(index: int) -> None:
        invoice_paid_deliver(invoice=invoice, receipt=receipt)

    assert _run_in_threads(settle, THREADS) == []
    assert Receipt.objects.filter(invoice=invoice).count() == 1
    assert EmailDelivery.objects.filter(invoice=invoice, kind=EmailKind.RECEIPT).count() == 1


def test_two_beats_at_once_queue_each_reminder_once(invoice, no_tasks):
    require_postgres()
    Invoice.objects.filter(pk=invoice.pk).update(
        due_date=timezone.localdate() + timedelta(days=1),
        issued_at=timezone.now() - timedelta(days=5),
    )

    assert _run_in_threads(lambda index: reminders_queue(), THREADS) == []
    assert EmailDelivery.objects.filter(invoice=invoice).count() == 1
