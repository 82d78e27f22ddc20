"""How an invoice reaches people: the invoice email and its reminders, receipts, notifications.

Every email is an `EmailDelivery` row written in the caller's transaction and sent by a Celery
task once that transaction commits. Sending is idempotent: the task first claims the row
(queued → sending, a conditional UPDATE) and only then talks to the provider, so a retried or
duplicated task finds nothing to claim and never sends twice. The outcome, sent or not sent
with the provider's error, is written to the row and to the invoice's timeline. Emails that
may go out at most once (each reminder, each receipt) have keys the database keeps unique.

The checkout app calls `invoice_paid_deliver`, `invoice_unresolved_deliver` and
`invoice_refund_claim_email` from the transactions that settle payments.
"""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from anymail.exceptions import AnymailError
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from invoices.emails import PAYER_REQUESTS, email_for_delivery
from invoices.models import (
    Actor,
    CreditNote,
    EmailDelivery,
    EmailKind,
    EmailStatus,
    Invoice,
    InvoiceEvent,
    InvoiceKind,
    InvoiceStatus,
    Receipt,
)
from invoices.pdf import PdfError
from invoices.services import InvoiceInput, InvoiceStateError, invoice_create, invoice_issue
from merchants.models import Membership, Merchant, Role, User

NO_RECIPIENT = (
    "This invoice has no customer email address, so it cannot be emailed. "
    "Download the PDF and pass it on yourself."
)
NO_CUSTOMER_FOR_SENDING = (
    "Choose a customer to send the invoice to, or use “Create only” and download the PDF."
)
# Statuses in which asking the customer to pay still makes sense.
SENDABLE = frozenset({InvoiceStatus.OPEN, InvoiceStatus.PROCESSING})
# A claim older than this with no outcome means the worker died mid-send: a person may retry.
SENDING_STALE = timedelta(minutes=15)
# Overdue reminders go out up to this many days after the due date, then not at all, so
# turning reminders on never mails invoices long forgotten.
OVERDUE_WINDOW_DAYS = 14

KIND_NOTES = {
    EmailKind.INVOICE: "Invoice",
    EmailKind.REMINDER_DUE: "Reminder before the due date",
    EmailKind.REMINDER_OVERDUE: "Overdue reminder",
    EmailKind.RECEIPT: "Receipt",
    EmailKind.MERCHANT_PAID: "Paid notification",
    EmailKind.MERCHANT_UNRESOLVED: "Needs-decision notification",
    EmailKind.REFUND_CLAIM: "Refund claim",
    EmailKind.CREDIT_NOTE: "Credit note",
    EmailKind.COMPLIANCE_HOLD: "Compliance hold notification",
}


@dataclass(frozen=True)
class TransferRef:
    """One on-chain transfer behind a payment, as printed on the receipt: the parts of the
    transfer snapshot (checkout.models.transfer_snapshot) a receipt shows, same units."""

    tx_hash: str | None  # None: found by reconciling a balance, no transaction to name
    network: str
    asset: str
    amount: Decimal  # whole tokens
    explorer_url: str = ""
    amount_base_units: str = ""

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any], *, network_name: str) -> "TransferRef":
        return cls(
            tx_hash=snapshot["tx_hash"],
            network=network_name,
            asset=snapshot["asset"],
            amount=Decimal(snapshot["amount"]),
            explorer_url=snapshot["explorer_url"] or "",
            amount_base_units=snapshot["amount_base_units"],
        )


@dataclass(frozen=True)
class ReceiptInput:
    """What the receipt of one settled payment says. `key` names the payment (its order
    number, say): recording the same key twice keeps the first receipt."""

    key: str
    paid_at: datetime
    amount: Decimal
    method: str
    order_number: str = ""
    reference: str = ""
    transfers: Sequence[TransferRef] = field(default_factory=tuple)


def customer_email(invoice: Invoice) -> str:
    customer = invoice.customer
    return customer.email.strip() if customer is not None and customer.email else ""


# The invoice email -----------------------------------------------------------------------------


def invoice_send(
    *, invoice: Invoice, by: User | None = None, actor: str = Actor.USER
) -> EmailDelivery:
    """Email the invoice with its PDF to the customer; again ("Resend") if it went out before."""
    with transaction.atomic():
        locked = (
            Invoice.objects.select_for_update(of=("self",))
            .select_related("customer")
            .get(pk=invoice.pk)
        )
        if locked.status == InvoiceStatus.DRAFT:
            raise InvoiceStateError("Issue the invoice before sending it.")
        if locked.status not in SENDABLE:
            raise InvoiceStateError(
                f"Only open invoices are sent; this one is {locked.get_status_display().lower()}."
            )
        email = customer_email(locked)
        if not email:
            raise ValidationError(NO_RECIPIENT)
        in_flight = locked.emails.filter(kind=EmailKind.INVOICE).filter(
            Q(status=EmailStatus.QUEUED)
            | Q(status=EmailStatus.SENDING, attempted_at__gte=timezone.now() - SENDING_STALE)
        )
        if in_flight.exists():
            raise InvoiceStateError("The invoice is on its way already.")
        delivery = _queue(
            invoice=locked,
            kind=EmailKind.INVOICE,
            # Every send is its own email; the lock above keeps a double click from making two.
            key=f"invoice:{locked.pk}:{uuid.uuid4().hex}",
            recipients=[email],
            by=by,
            actor=actor,
        )
    return delivery


def invoice_create_and_send(
    *, merchant: Merchant, data: InvoiceInput, by: User | None = None, actor: str = Actor.USER
) -> tuple[Invoice, EmailDelivery]:
    """Issue a new invoice and email it ("Create and send"), or do neither."""
    if data.customer is None or not data.customer.email:
        raise ValidationError({"customer": NO_CUSTOMER_FOR_SENDING})
    with transaction.atomic():
        invoice = invoice_create(merchant=merchant, data=data, by=by, actor=actor, issue=True)
        delivery = invoice_send(invoice=invoice, by=by, actor=actor)
    return invoice, delivery


def invoice_issue_and_send(
    *, invoice: Invoice, by: User | None = None, actor: str = Actor.USER
) -> tuple[Invoice, EmailDelivery]:
    """Issue a draft and email it ("Issue and send" in the editor), or do neither."""
    if not customer_email(invoice):
        raise ValidationError({"customer": NO_CUSTOMER_FOR_SENDING})
    with transaction.atomic():
        invoice = invoice_issue(invoice=invoice, by=by, actor=actor)
        delivery = invoice_send(invoice=invoice, by=by, actor=actor)
    return invoice, delivery


# Sending -----------------------------------------------------------------------------------------


def email_delivery_send(*, delivery_id: int) -> EmailDelivery | None:
    """Send one queued email. Returns None when there was nothing to send (already sent, or
    another worker has it), so running it twice for the same row sends once."""
    claimed = EmailDelivery.objects.filter(pk=delivery_id, status=EmailStatus.QUEUED).update(
        status=EmailStatus.SENDING,
        attempts=F("attempts") + 1,
        attempted_at=timezone.now(),
        error="",
    )
    if claimed != 1:
        return None
    delivery = EmailDelivery.objects.select_related(
        "invoice__merchant", "invoice__customer", "requested_by"
    ).get(pk=delivery_id)
    invoice = delivery.invoice
    if delivery.kind in PAYER_REQUESTS and invoice.status not in SENDABLE:
        status = invoice.get_status_display().lower()
        return _finish(delivery, EmailStatus.SKIPPED, error=f"The invoice is {status} by now.")
    subject = ""
    try:
        email = email_for_delivery(delivery)
        subject = email.subject
        message = email.message()
        message.send()
    except (AnymailError, OSError, PdfError) as error:
        # OSError covers SMTP (smtplib.SMTPException) and connection failures.
        return _finish(delivery, EmailStatus.FAILED, subject=subject, error=_describe(error))
    status_of_send = getattr(message, "anymail_status", None)
    message_id = getattr(status_of_send, "message_id", None) or ""
    return _finish(delivery, EmailStatus.SENT, subject=subject, message_id=str(message_id))


def email_delivery_retry(*, delivery: EmailDelivery, by: User | None = None) -> EmailDelivery:
    """Queue a failed email again (or one whose worker died mid-send). Sent ones stay sent."""
    with transaction.atomic():
        retried = EmailDelivery.objects.filter(
            Q(status=EmailStatus.FAILED)
            | Q(status=EmailStatus.SENDING, attempted_at__lt=timezone.now() - SENDING_STALE),
            pk=delivery.pk,
        ).update(status=EmailStatus.QUEUED, error="")
        if retried != 1:
            raise InvoiceStateError(
                "This email was sent or is on its way; there is nothing to retry."
            )
        delivery.refresh_from_db()
        _enqueue(delivery)
    return delivery


# Reminders ---------------------------------------------------------------------------------------


def reminders_queue(*, today: date | None = None) -> list[EmailDelivery]:
    """Queue the reminders due today: one a few days before the due date, one once overdue.

    Each is sent at most once per invoice (its key is unique); merchants who turned reminders
    off, invoices without a customer email, and invoices issued in the last day get none.
    """
    today = today or timezone.localdate()
    candidates = (
        Invoice.objects.filter(
            status=InvoiceStatus.OPEN,
            kind=InvoiceKind.ONE_TIME,
            due_date__isnull=False,
            customer__isnull=False,
            merchant__send_reminders=True,
            issued_at__lte=timezone.now() - timedelta(days=1),
        )
        .exclude(customer__email="")
        .select_related("customer")
        .order_by("pk")
    )
    ahead = timedelta(days=settings.REMINDER_DAYS_BEFORE_DUE)
    batches = (
        (
            EmailKind.REMINDER_DUE,
            candidates.filter(due_date__gt=today, due_date__lte=today + ahead),
        ),
        (
            EmailKind.REMINDER_OVERDUE,
            candidates.filter(
                due_date__lt=today, due_date__gte=today - timedelta(days=OVERDUE_WINDOW_DAYS)
            ),
        ),
    )
    queued = []
    for kind, invoices in batches:
        for invoice in invoices.exclude(emails__kind=kind):
            delivery = _queue_once(
                invoice=invoice,
                kind=kind,
                key=f"{kind}:{invoice.pk}",
                recipients=[customer_email(invoice)],
            )
            if delivery is not None:
                queued.append(delivery)
    return queued


# After payment -----------------------------------------------------------------------------------


def invoice_paid_deliver(
    *, invoice: Invoice, receipt: ReceiptInput, notify_merchant: bool = True
) -> Receipt:
    """Record the receipt of a settled payment, email it to the payer, tell the merchant.

    Call it in the transaction that made the invoice (or one payment of it) paid; the emails
    leave when it commits. Called again with the same key it returns the first receipt and
    sends nothing. A payer without an email address simply gets no receipt email (the
    payment page offers the PDF); `notify_merchant=False` when a person of the merchant's
    made the payment count themselves.
    """
    with transaction.atomic():
        locked = (
            Invoice.objects.select_for_update(of=("self",))
            .select_related("customer")
            .get(pk=invoice.pk)
        )
        existing = Receipt.objects.filter(invoice=locked, key=receipt.key).first()
        if existing is not None:
            return existing
        number = (locked.receipts.aggregate(n=Max("number"))["n"] or 0) + 1
        row = Receipt.objects.create(
            invoice=locked,
            number=number,
            key=receipt.key,
            order_number=receipt.order_number,
            paid_at=receipt.paid_at,
            amount=receipt.amount,
            currency=locked.currency,
            method=receipt.method,
            reference=receipt.reference,
            transfers=[_transfer_json(transfer) for transfer in receipt.transfers],
        )
        context = {"receipt": row.pk}
        if customer_email(locked):
            _queue_once(
                invoice=locked,
                kind=EmailKind.RECEIPT,
                key=f"receipt:{row.pk}",
                recipients=[customer_email(locked)],
                context=context,
            )
        if notify_merchant:
            _queue_once(
                invoice=locked,
                kind=EmailKind.MERCHANT_PAID,
                key=f"merchant_paid:{row.pk}",
                recipients=merchant_recipients(locked.merchant),
                context=context,
            )
    return row


def invoice_unresolved_deliver(*, invoice: Invoice, key: str, reason: str) -> EmailDelivery | None:
    """Tell the merchant a payment needs a decision (overpaid, late). Once per `key`."""
    return _queue_once(
        invoice=invoice,
        kind=EmailKind.MERCHANT_UNRESOLVED,
        key=f"merchant_unresolved:{invoice.pk}:{key}",
        recipients=merchant_recipients(invoice.merchant),
        context={"reason": reason},
    )


def invoice_refund_claim_email(
    *, invoice: Invoice, key: str, claim_url: str, received: str = ""
) -> EmailDelivery | None:
    """Ask the payer of a cancelled or failed invoice that had received money where to send
    it back. `claim_url` is the checkout's claim page; once per `key`."""
    if not claim_url.startswith(("https://", "http://")):
        raise ValueError("The claim link must be an http(s) URL.")
    return _queue_once(
        invoice=invoice,
        kind=EmailKind.REFUND_CLAIM,
        key=f"refund_claim:{invoice.pk}:{key}",
        recipients=[customer_email(invoice)],
        context={"claim_url": claim_url, "received": received},
    )


def invoice_compliance_hold_deliver(
    *, invoice: Invoice, key: str, reason: str
) -> EmailDelivery | None:
    """Tell the merchant's owners and the operator's admins that screening held a payment.
    Once per `key`."""
    admins = User.objects.filter(is_superuser=True, is_active=True).values_list("email", flat=True)
    recipients = sorted(set(merchant_recipients(invoice.merchant)) | set(admins))
    return _queue_once(
        invoice=invoice,
        kind=EmailKind.COMPLIANCE_HOLD,
        key=f"compliance_hold:{invoice.pk}:{key}",
        recipients=recipients,
        context={"reason": reason},
    )


def credit_note_deliver(*, credit_note: CreditNote) -> EmailDelivery | None:
    """The credit note to the customer, once."""
    invoice = credit_note.invoice
    return _queue_once(
        invoice=invoice,
        kind=EmailKind.CREDIT_NOTE,
        key=f"credit_note:{credit_note.pk}",
        recipients=[customer_email(invoice)],
        context={"credit_note": credit_note.pk},
    )


def merchant_recipients(merchant: Merchant) -> list[str]:
    """The owners: they run the business and get its notifications."""
    return sorted(
        Membership.objects.filter(
            merchant=merchant, role=Role.OWNER, user__is_active=True
        ).values_list("user__email", flat=True)
    )


# Internals ---------------------------------------------------------------------------------------


def _queue(
    *,
    invoice: Invoice,
    kind: str,
    key: str,
    recipients: list[str],
    context: dict[str, Any] | None = None,
    by: User | None = None,
    actor: str = "",
) -> EmailDelivery:
    delivery = EmailDelivery.objects.create(
        invoice=invoice,
        kind=kind,
        key=key,
        recipients=recipients,
        context={**(context or {}), "actor": actor or (Actor.USER if by else Actor.SYSTEM)},
        requested_by=by,
    )
    _enqueue(delivery)
    return delivery


def _queue_once(
    *,
    invoice: Invoice,
    kind: str,
    key: str,
    recipients: list[str],
    context: dict[str, Any] | None = None,
) -> EmailDelivery | None:
    """Queue an email that may exist once; None if its key was queued before. Nobody to send
    it to is recorded as skipped, so the merchant sees that the payer was not told."""
    recipients = [address for address in recipients if address]
    with transaction.atomic():
        delivery, created = EmailDelivery.objects.get_or_create(
            key=key,
            defaults={
                "invoice": invoice,
                "kind": kind,
                "recipients": recipients,
                "context": {**(context or {}), "actor": Actor.SYSTEM},
                "status": EmailStatus.QUEUED if recipients else EmailStatus.SKIPPED,
                "error": "" if recipients else "No email address to send it to.",
            },
        )
        if not created:
            return None
        if recipients:
            _enqueue(delivery)
        else:
            _event(delivery, invoice, "email.skipped", "No email address to send it to.")
    return delivery


def _enqueue(delivery: EmailDelivery) -> None:
    from invoices.tasks import email_send  # the tasks module imports this one

    delivery_id = delivery.pk
    transaction.on_commit(lambda: email_send.delay(delivery_id))


def _finish(
    delivery: EmailDelivery,
    status: str,
    *,
    subject: str = "",
    error: str = "",
    message_id: str = "",
) -> EmailDelivery:
    now = timezone.now()
    with transaction.atomic():
        EmailDelivery.objects.filter(pk=delivery.pk, status=EmailStatus.SENDING).update(
            status=status,
            subject=subject[:300],
            error=error,
            message_id=message_id[:200],
            sent_at=now if status == EmailStatus.SENT else None,
        )
        event_type = {
            EmailStatus.SENT: "email.sent",
            EmailStatus.FAILED: "email.failed",
            EmailStatus.SKIPPED: "email.skipped",
        }[EmailStatus(status)]
        _event(delivery, delivery.invoice, event_type, error)
    delivery.refresh_from_db()
    return delivery


def _event(delivery: EmailDelivery, invoice: Invoice, type: str, detail: str) -> InvoiceEvent:
    note = f"{KIND_NOTES[EmailKind(delivery.kind)]} to {', '.join(delivery.recipients) or 'nobody'}"
    return InvoiceEvent.objects.create(
        invoice=invoice,
        type=type,
        actor=delivery.context.get("actor") or Actor.SYSTEM,
        actor_user=delivery.requested_by,
        note=f"{note}: {detail}" if detail else note,
        data={"email": delivery.pk, "kind": delivery.kind, "to": delivery.recipients},
        to_status=invoice.status,
    )


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:1000]


def _transfer_json(transfer: TransferRef) -> dict[str, str | None]:
    # Printed as a link: only web addresses, never javascript: or the like.
    url = transfer.explorer_url if transfer.explorer_url.startswith(("https://", "http://")) else ""
    return {
        "tx_hash": transfer.tx_hash,
        "network": transfer.network,
        "asset": transfer.asset,
        "amount": format(transfer.amount.normalize(), "f"),
        "amount_base_units": transfer.amount_base_units or None,
        "explorer_url": url,
    }
