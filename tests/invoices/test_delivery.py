"""Emails about invoices: what goes out, to whom, once, and what happens when the provider fails."""

import io
import os
import time
from datetime import date, timedelta
from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.core import mail
from django.core.exceptions import ValidationError
from django.utils import timezone
from pypdf import PdfReader

from config.celery import app
from invoices.delivery import (
    NO_RECIPIENT,
    ReceiptInput,
    TransferRef,
    email_delivery_retry,
    email_delivery_send,
    invoice_paid_deliver,
    invoice_refund_claim_email,
    invoice_send,
    invoice_unresolved_deliver,
    reminders_queue,
)
from invoices.models import EmailDelivery, EmailKind, EmailStatus, Invoice, InvoiceEvent, Receipt
from invoices.services import InvoiceStateError, invoice_cancel, invoice_mark_paid
from invoices.tasks import email_send, send_reminders
from merchants.models import Role
from tests.factories import CustomerFactory, MembershipFactory, make_invoice

pytestmark = pytest.mark.django_db

INJECTION = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def day(value: date | None) -> str:
    """A date as the emails print it: Nov 5, 2026."""
    assert value is not None
    return f"{value:%b} {value.day}, {value.year}"


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


@pytest.fixture
def invoice(acme, acme_customer, alice):
    return make_invoice(
        acme,
        customer=acme_customer,
        issue=True,
        by=alice,
        due_date=timezone.localdate() + timedelta(days=10),
        items=[("Design workshop", "2", "150.00"), ("Hosting", "12", "9.99")],
    )


@pytest.fixture
def send(django_capture_on_commit_callbacks):
    """Queue with a service and let the commit hooks run, as after a real request."""

    def run(service, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return service(**kwargs)

    return run


@pytest.fixture
def fake_postmark(settings):
    from tests.fake_esp import start_fake_postmark

    state, server = start_fake_postmark()
    settings.MAILERS = state.settings()
    yield state
    server.shutdown()


# The invoice email ------------------------------------------------------------------------------


def test_invoice_email_goes_to_the_customer_with_both_bodies_and_the_pdf(
    invoice, alice, send, mailoutbox
):
    delivery = send(invoice_send, invoice=invoice, by=alice)

    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["ada@example.org"]
    assert message.from_email == "Acme Tools <billing@localhost>"
    assert message.subject == (
        f"Invoice {invoice.reference} from Acme Tools: $419.88, due {day(invoice.due_date)}"
    )
    assert "Hello Ada Lovelace," in message.body
    assert "- Design workshop x 2: $300.00" in message.body
    assert "- Hosting x 12: $119.88" in message.body
    assert "Total: $419.88" in message.body
    assert invoice.pay_url in message.body
    html, mimetype = message.alternatives[0]
    assert mimetype == "text/html"
    assert f'href="{invoice.pay_url}"' in html
    assert "Pay $419.88" in html
    assert "Design workshop" in html
    [(filename, content, content_type)] = message.attachments
    assert (filename, content_type) == (f"{invoice.reference}.pdf", "application/pdf")
    text = pdf_text(content)
    assert invoice.reference in text
    assert "$419.88" in text

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.recipients) == (
        EmailStatus.SENT,
        1,
        ["ada@example.org"],
    )
    assert delivery.subject == message.subject
    assert delivery.sent_at is not None
    event = invoice.events.latest("pk")
    assert (event.type, event.actor, event.actor_user, event.note) == (
        "email.sent",
        "user",
        alice,
        "Invoice to ada@example.org",
    )


def test_send_task_run_twice_sends_once(invoice, alice, send, mailoutbox):
    delivery = send(invoice_send, invoice=invoice, by=alice)
    assert len(mailoutbox) == 1

    # The broker delivers the task again (a retry, a redelivery after a lost ack).
    email_send.apply(args=[delivery.pk])
    email_send.delay(delivery.pk)

    assert len(mailoutbox) == 1
    assert EmailDelivery.objects.get(pk=delivery.pk).attempts == 1
    assert invoice.events.filter(type="email.sent").count() == 1


def test_worker_that_died_after_claiming_leaves_nothing_to_send_twice(
    invoice, alice, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=False):
        delivery = invoice_send(invoice=invoice, by=alice)
    # A worker claimed it and died before it could write the outcome.
    EmailDelivery.objects.filter(pk=delivery.pk).update(
        status=EmailStatus.SENDING, attempted_at=timezone.now()
    )

    assert email_delivery_send(delivery_id=delivery.pk) is None
    assert mailoutbox == []
    with pytest.raises(InvoiceStateError):
        email_delivery_retry(delivery=delivery)


def test_stale_claim_may_be_retried_by_a_person(invoice, alice, send, mailoutbox):
    delivery = send(invoice_send, invoice=invoice, by=alice)
    EmailDelivery.objects.filter(pk=delivery.pk).update(
        status=EmailStatus.SENDING, attempted_at=timezone.now() - timedelta(minutes=16)
    )
    send(email_delivery_retry, delivery=delivery, by=alice)
    assert len(mailoutbox) == 2
    assert EmailDelivery.objects.get(pk=delivery.pk).status == EmailStatus.SENT


def test_resend_makes_a_second_email(invoice, alice, send, mailoutbox):
    first = send(invoice_send, invoice=invoice, by=alice)
    second = send(invoice_send, invoice=invoice, by=alice)
    assert first.pk != second.pk
    assert len(mailoutbox) == 2
    assert invoice.events.filter(type="email.sent").count() == 2


def test_send_while_one_is_queued_is_refused(
    invoice, alice, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=False):
        invoice_send(invoice=invoice, by=alice)
        with pytest.raises(InvoiceStateError, match="on its way already"):
            invoice_send(invoice=invoice, by=alice)
    assert EmailDelivery.objects.count() == 1


def test_invoice_without_customer_cannot_be_sent(acme, alice):
    invoice = make_invoice(acme, issue=True)
    with pytest.raises(ValidationError) as error:
        invoice_send(invoice=invoice, by=alice)
    assert error.value.messages == [NO_RECIPIENT]
    assert EmailDelivery.objects.count() == 0


@pytest.mark.parametrize("status", ["draft", "paid", "void"])
def test_only_open_invoices_are_sent(acme, acme_customer, alice, status):
    invoice = make_invoice(acme, customer=acme_customer, issue=status != "draft")
    Invoice.objects.filter(pk=invoice.pk).update(status=status)
    with pytest.raises(InvoiceStateError):
        invoice_send(invoice=invoice, by=alice)
    assert EmailDelivery.objects.count() == 0


def test_invoice_paid_before_its_email_left_is_skipped(
    invoice, alice, django_capture_on_commit_callbacks, mailoutbox
):
    with django_capture_on_commit_callbacks(execute=False):
        delivery = invoice_send(invoice=invoice, by=alice)
    Invoice.objects.filter(pk=invoice.pk).update(status="paid")

    email_delivery_send(delivery_id=delivery.pk)

    assert mailoutbox == []
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == (EmailStatus.SKIPPED, "The invoice is paid by now.")


# Provider failures (the real anymail backend against a local fake of Postmark's API) -------------


def test_esp_accepting_the_email_records_its_message_id(invoice, alice, send, fake_postmark):
    delivery = send(invoice_send, invoice=invoice, by=alice)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.message_id) == (EmailStatus.SENT, "pm-1")
    [payload] = fake_postmark.received
    assert payload["To"] == "ada@example.org"
    assert payload["Subject"].startswith(f"Invoice {invoice.reference} from Acme Tools")
    assert [a["Name"] for a in payload["Attachments"]] == [f"{invoice.reference}.pdf"]


def test_esp_refusal_leaves_the_email_not_sent_with_the_error_and_a_retry(
    invoice, alice, send, fake_postmark
):
    fake_postmark.mode = "refuse"
    delivery = send(invoice_send, invoice=invoice, by=alice)

    delivery.refresh_from_db()
    assert delivery.status == EmailStatus.FAILED
    assert delivery.error == "All message recipients were rejected or invalid"
    assert delivery.sent_at is None
    failed = invoice.events.latest("pk")
    assert failed.type == "email.failed"
    assert failed.note == (
        "Invoice to ada@example.org: All message recipients were rejected or invalid"
    )
    # The invoice itself is untouched: still open, still payable.
    assert Invoice.objects.get(pk=invoice.pk).status == "open"

    fake_postmark.mode = "ok"
    send(email_delivery_retry, delivery=delivery, by=alice)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error, delivery.attempts) == (EmailStatus.SENT, "", 2)
    assert len(fake_postmark.received) == 2
    assert list(
        invoice.events.filter(type__startswith="email.").values_list("type", flat=True)
    ) == [
        "email.failed",
        "email.sent",
    ]


def test_esp_error_is_shown_with_the_providers_words(invoice, alice, send, fake_postmark):
    fake_postmark.mode = "bad_sender"
    delivery = send(invoice_send, invoice=invoice, by=alice)
    delivery.refresh_from_db()
    assert delivery.status == EmailStatus.FAILED
    assert "The 'From' address is not a confirmed Sender Signature." in delivery.error
    assert "422" in delivery.error


def test_esp_down_is_a_failure_too(invoice, alice, send, fake_postmark):
    fake_postmark.mode = "down"
    delivery = send(invoice_send, invoice=invoice, by=alice)
    delivery.refresh_from_db()
    assert delivery.status == EmailStatus.FAILED
    assert "503" in delivery.error


def test_sent_email_cannot_be_retried(invoice, alice, send, mailoutbox):
    delivery = send(invoice_send, invoice=invoice, by=alice)
    with pytest.raises(InvoiceStateError, match="nothing to retry"):
        email_delivery_retry(delivery=delivery, by=alice)
    assert len(mailoutbox) == 1


# Injection ----------------------------------------------------------------------------------------


def test_customer_and_merchant_text_is_escaped_in_the_html_and_kept_plain_in_the_text(
    acme, alice, send, mailoutbox
):
    acme.name = "Acme <b>Tools</b>\r\nBcc: victim@example.org"
    acme.save()
    customer = CustomerFactory(merchant=acme, name=INJECTION, email="eve@example.org")
    invoice = make_invoice(
        acme,
        customer=customer,
        issue=True,
        description=INJECTION,
        items=[(INJECTION, "1", "10.00")],
    )
    send(invoice_send, invoice=invoice, by=alice)

    [message] = mailoutbox
    html = message.alternatives[0][0]
    assert "<script>" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "Acme &lt;b&gt;Tools&lt;/b&gt;" in html
    # Plain text is not HTML: it says what was typed, unescaped.
    assert INJECTION in message.body
    # Headers stay one line each: no Bcc smuggled in through the name.
    assert "\n" not in message.subject and "\r" not in message.subject
    assert message.bcc == []
    assert message.message()["Bcc"] is None
    assert "Bcc: victim@example.org" in message.subject  # shown as text, harmless


# Reminders ------------------------------------------------------------------------------------------


def _issued_days_ago(invoice: Invoice, days: int) -> None:
    Invoice.objects.filter(pk=invoice.pk).update(issued_at=timezone.now() - timedelta(days=days))


def _due(acme, customer, days: int, **fields) -> Invoice:
    invoice = make_invoice(acme, customer=customer, issue=True, **fields)
    Invoice.objects.filter(pk=invoice.pk).update(
        due_date=timezone.localdate() + timedelta(days=days)
    )
    _issued_days_ago(invoice, 7)
    return Invoice.objects.get(pk=invoice.pk)


def test_reminders_go_out_before_due_and_when_overdue_once_each(
    acme, acme_customer, send, mailoutbox
):
    soon = _due(acme, acme_customer, 2)
    later = _due(acme, acme_customer, 9)
    late = _due(acme, acme_customer, -1)

    queued = send(reminders_queue)
    again = send(reminders_queue)

    assert sorted((d.invoice_id, d.kind) for d in queued) == sorted(
        [(soon.pk, EmailKind.REMINDER_DUE), (late.pk, EmailKind.REMINDER_OVERDUE)]
    )
    assert again == []
    assert later.emails.count() == 0
    subjects = sorted(m.subject for m in mailoutbox)
    assert subjects == [
        f"Overdue: invoice {late.reference} from Acme Tools was due {day(late.due_date)}",
        f"Reminder: invoice {soon.reference} from Acme Tools is due {day(soon.due_date)}",
    ]
    reminder = next(m for m in mailoutbox if m.subject.startswith("Reminder"))
    assert reminder.to == ["ada@example.org"]
    assert "is due on" in reminder.body and "in 2 days" in reminder.body
    assert reminder.attachments[0][0] == f"{soon.reference}.pdf"
    overdue = next(m for m in mailoutbox if m.subject.startswith("Overdue"))
    assert "and is still open" in overdue.alternatives[0][0]

    # Days later the overdue one is not repeated, and the soon one turns overdue once.
    Invoice.objects.filter(pk=soon.pk).update(due_date=timezone.localdate() - timedelta(days=1))
    assert [(d.invoice_id, d.kind) for d in send(reminders_queue)] == [
        (soon.pk, EmailKind.REMINDER_OVERDUE)
    ]
    assert send(reminders_queue) == []
    assert len(mailoutbox) == 3


def test_no_reminders_when_the_merchant_turned_them_off(acme, acme_customer, send):
    _due(acme, acme_customer, 1)
    acme.send_reminders = False
    acme.save()
    assert send(reminders_queue) == []


def test_no_reminders_for_paid_drafts_fresh_or_customerless_invoices(acme, acme_customer, send):
    paid = _due(acme, acme_customer, 1)
    Invoice.objects.filter(pk=paid.pk).update(status="paid")
    fresh = _due(acme, acme_customer, 1)
    _issued_days_ago(fresh, 0)
    _due(acme, None, 1)
    long_overdue = _due(acme, acme_customer, -15)
    draft = make_invoice(acme, customer=acme_customer)
    Invoice.objects.filter(pk=draft.pk).update(due_date=timezone.localdate())

    assert send(reminders_queue) == []
    assert long_overdue.emails.count() == 0


def test_the_beat_task_sends_the_reminders(acme, acme_customer, send, mailoutbox):
    _due(acme, acme_customer, 3)
    send(send_reminders.delay)
    assert len(mailoutbox) == 1


# After payment ----------------------------------------------------------------------------------------


def test_marking_paid_sends_the_payer_a_receipt_with_its_pdf(invoice, alice, send, mailoutbox):
    send(invoice_mark_paid, invoice=invoice, reference="WIRE-7", by=alice)

    receipt = Receipt.objects.get()
    assert (receipt.number, receipt.key, receipt.amount, receipt.currency, receipt.reference) == (
        1,
        "off-platform",
        Decimal("419.88"),
        "USD",
        "WIRE-7",
    )
    [message] = mailoutbox  # the merchant did it and needs no notification
    assert message.to == ["ada@example.org"]
    assert message.subject == (
        f"Receipt for invoice {invoice.reference} from Acme Tools: $419.88 paid"
    )
    assert "received your payment of $419.88" in message.body
    [(filename, content, _)] = message.attachments
    assert filename == f"{invoice.reference}-R1-receipt.pdf"
    text = pdf_text(content)
    assert "Receipt" in text and f"{invoice.reference}-R1" in text and "WIRE-7" in text


def test_paid_on_chain_sends_a_receipt_with_transactions_and_tells_the_owners(
    invoice, acme, alice, send, mailoutbox
):
    MembershipFactory(merchant=acme, role=Role.OWNER, user__email="otto@acme.test")
    MembershipFactory(merchant=acme, role=Role.STAFF, user__email="sam@acme.test")
    tx = "0x" + "ab" * 32
    receipt = ReceiptInput(
        key="order-1",
        order_number=f"{invoice.reference}-1",
        paid_at=timezone.now(),
        amount=Decimal("419.88"),
        method="USDC on Base",
        transfers=[
            TransferRef(
                tx_hash=tx,
                network="Base",
                asset="USDC",
                amount=Decimal("419.880000"),
                explorer_url=f"https://basescan.org/tx/{tx}",
                amount_base_units="419880000",
            )
        ],
    )
    first = send(invoice_paid_deliver, invoice=invoice, receipt=receipt)
    again = send(invoice_paid_deliver, invoice=invoice, receipt=receipt)

    assert again.pk == first.pk
    assert first.transfers == [
        {
            "tx_hash": tx,
            "network": "Base",
            "asset": "USDC",
            "amount": "419.88",
            "amount_base_units": "419880000",
            "explorer_url": f"https://basescan.org/tx/{tx}",
        }
    ]
    assert sorted((m.to, m.subject) for m in mailoutbox) == [
        (
            ["ada@example.org"],
            f"Receipt for invoice {invoice.reference} from Acme Tools: $419.88 paid",
        ),
        (
            ["alice@acme.test", "otto@acme.test"],
            f"Paid: {invoice.reference}, $419.88 from Ada Lovelace",
        ),
    ]
    payer = next(m for m in mailoutbox if m.to == ["ada@example.org"])
    assert tx in payer.body
    assert f"https://basescan.org/tx/{tx}" in payer.alternatives[0][0]
    text = pdf_text(payer.attachments[0][1])
    assert "USDC on Base" in text and tx[:20] in text.replace("\n", "")
    owners = next(m for m in mailoutbox if m.to != ["ada@example.org"])
    assert f"http://testserver/invoices/{invoice.pk}/" in owners.body
    assert owners.attachments == []


def test_receipt_link_to_a_script_url_is_dropped(invoice, send):
    receipt = ReceiptInput(
        key="order-x",
        paid_at=timezone.now(),
        amount=Decimal("1"),
        method="USDT",
        transfers=[
            TransferRef(
                tx_hash="0x1",
                network="X",
                asset="USDT",
                amount=Decimal(1),
                explorer_url="javascript:alert(1)",
            )
        ],
    )
    row = send(invoice_paid_deliver, invoice=invoice, receipt=receipt)
    assert row.transfers[0]["explorer_url"] == ""


def test_a_receipt_for_eth_found_by_balance_says_it_has_no_transaction(invoice, send, mailoutbox):
    receipt = ReceiptInput(
        key="order-eth",
        paid_at=timezone.now(),
        amount=Decimal("30"),
        method="ETH on Base",
        transfers=[
            TransferRef(
                tx_hash=None,
                network="Base",
                asset="ETH",
                amount=Decimal("0.01"),
                amount_base_units=str(10**16),
            )
        ],
    )
    row = send(invoice_paid_deliver, invoice=invoice, receipt=receipt)
    assert row.transfers[0]["tx_hash"] is None
    payer = next(m for m in mailoutbox if m.to == ["ada@example.org"])
    assert "none of its own (0.01 ETH found in the address balance)" in payer.body
    assert "None" not in payer.body
    text = pdf_text(payer.attachments[0][1]).replace("\n", " ")
    assert "found in the address balance" in text


def test_unresolved_payment_tells_the_owners_once(invoice, send, mailoutbox):
    send(invoice_unresolved_deliver, invoice=invoice, key="order-2", reason="Overpaid by 5 USDC.")
    assert send(invoice_unresolved_deliver, invoice=invoice, key="order-2", reason="again") is None

    [message] = mailoutbox
    assert message.to == ["alice@acme.test"]
    assert message.subject == f"Needs your decision: {invoice.reference} (Ada Lovelace)"
    assert "Overpaid by 5 USDC." in message.body
    assert "Overpaid by 5 USDC." in message.alternatives[0][0]


def test_refund_claim_email_goes_to_the_payer_once(invoice, alice, send, mailoutbox):
    invoice_cancel(invoice=invoice, by=alice)
    invoice.refresh_from_db()
    claim = "http://testserver/claim/abc/"
    send(
        invoice_refund_claim_email,
        invoice=invoice,
        key="order-1",
        claim_url=claim,
        received="100.00 USDC",
    )
    send(invoice_refund_claim_email, invoice=invoice, key="order-1", claim_url=claim)

    [message] = mailoutbox
    assert message.to == ["ada@example.org"]
    assert message.subject == f"Claim your refund for invoice {invoice.reference} from Acme Tools"
    assert "was cancelled after your payment of 100.00 USDC arrived" in message.body
    assert claim in message.body
    assert f'href="{claim}"' in message.alternatives[0][0]


def test_refund_claim_without_payer_email_is_recorded_as_skipped(acme, send, mailoutbox):
    invoice = make_invoice(acme, issue=True)
    delivery = send(
        invoice_refund_claim_email, invoice=invoice, key="o", claim_url="https://x.example/c"
    )
    assert mailoutbox == []
    assert (delivery.status, delivery.error) == (
        EmailStatus.SKIPPED,
        "No email address to send it to.",
    )
    event = invoice.events.latest("pk")
    assert (event.type, event.note) == (
        "email.skipped",
        "Refund claim to nobody: No email address to send it to.",
    )


def test_refund_claim_refuses_a_non_web_link(invoice):
    with pytest.raises(ValueError):
        invoice_refund_claim_email(invoice=invoice, key="o", claim_url="javascript:alert(1)")


# Through a real worker ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_invoice_email_is_sent_by_a_worker_after_commit(acme, alice):
    customer = CustomerFactory(merchant=acme, email="ada@example.org")
    invoice = make_invoice(acme, customer=customer, issue=True)
    app.conf.task_always_eager = False
    try:
        with start_worker(app, perform_ping_check=False, pool="solo", shutdown_timeout=10):
            if os.environ.get("CI"):
                assert app.conf.broker_url.startswith("redis://")
            delivery = invoice_send(invoice=invoice, by=alice)
            deadline = time.monotonic() + 20
            while not mail.outbox and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        app.conf.task_always_eager = True
    assert [m.to for m in mail.outbox] == [["ada@example.org"]]
    assert EmailDelivery.objects.get(pk=delivery.pk).status == EmailStatus.SENT
    assert InvoiceEvent.objects.filter(invoice=invoice, type="email.sent").count() == 1


def test_open_amount_invoice_email_asks_for_no_particular_amount(acme, alice, send, mailoutbox):
    customer = CustomerFactory(merchant=acme, name="Grace", email="grace@example.org")
    invoice = make_invoice(acme, customer=customer, issue=True, kind="permanent", items=[])
    send(invoice_send, invoice=invoice, by=alice)

    [message] = mailoutbox
    assert message.subject == f"Invoice {invoice.reference} from Acme Tools"
    assert f"Acme Tools sent you invoice {invoice.reference}." in message.body
    assert ">Pay now</a>" in message.alternatives[0][0]
