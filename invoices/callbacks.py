"""Callbacks: the outbox of invoice events and their signed delivery.

`callbacks_enqueue` runs inside the transaction that records an event, so a change and the
news of it commit together or not at all. Delivery happens after commit, in Celery; a worker
leases a row before its request, so a worker that dies mid-request leaves the row to the
periodic sweep instead of losing it. Retries follow `RETRY_DELAYS`, under one `webhook-id`.
"""

import json
import logging
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from invoices.document import document_of
from invoices.models import (
    CallbackAttempt,
    CallbackDelivery,
    CallbackStatus,
    CreditNote,
    Invoice,
    InvoiceEvent,
)
from merchants.integrations import (
    TEST_EVENT,
    invoice_callback_signer,
    signature_headers,
    webhook_disabled_notify,
    webhook_endpoint_disable,
)
from merchants.models import SigningSecret, WebhookEndpoint
from merchants.money import quantize
from merchants.outbound import BlockedURL, OutboundResponse, post

logger = logging.getLogger(__name__)

# Seconds to wait before each attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
RETRY_DELAYS = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
# Our internal event types and the callback type each one is announced as. An unresolved
# payment the merchant accepts makes the invoice paid, so the receiver hears `invoice.paid`.
CALLBACK_TYPES = {
    "invoice.created": "invoice.created",
    "invoice.deposit_received": "invoice.deposit_received",
    "invoice.deposit_confirmed": "invoice.deposit_confirmed",
    "invoice.paid": "invoice.paid",
    "invoice.accepted": "invoice.paid",
    "invoice.unresolved": "invoice.unresolved",
    "invoice.failed": "invoice.failed",
    "invoice.cancelled": "invoice.cancelled",
    "invoice.marked_paid": "invoice.marked_paid",
    "invoice.closed": "invoice.closed",
    "invoice.credited": "invoice.credited",
    "deposit.reverted": "deposit.reverted",
    "refund.requested": "refund.requested",
    "refund.sent": "refund.sent",
    "refund.confirmed": "refund.confirmed",
    # Funds of forwarder deposit addresses claimed to the merchant's account (checkout.claims).
    "invoice.claimed": "invoice.claimed",
}
EXCERPT_CHARS = 1000


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def invoice_snapshot(invoice: Invoice) -> dict[str, Any]:
    """The invoice as the API and callbacks show it. Amounts are strings: JSON numbers would
    be read as floats by most clients."""
    customer = invoice.customer
    document = document_of(invoice)

    def money(value: Decimal) -> str:
        return str(quantize(value, invoice.currency))

    return {
        "id": invoice.pk,
        "reference": invoice.reference,
        "status": invoice.status,
        "failure_reason": invoice.failure_reason or None,
        "kind": invoice.kind,
        "pricing_mode": invoice.pricing_mode,
        "currency": invoice.currency,
        "subtotal": money(invoice.subtotal),
        "discount": (
            {
                "kind": invoice.discount_kind,
                "value": format(invoice.discount_value.normalize(), "f"),
                "amount": money(invoice.discount_total),
            }
            if invoice.discount_kind
            else None
        ),
        "tax_total": money(invoice.tax_total),
        "taxes": [
            {**tax, "taxable": money(Decimal(tax["taxable"])), "tax": money(Decimal(tax["tax"]))}
            for tax in invoice.tax_summary
        ],
        "total": money(invoice.total),
        "open_amount": invoice.is_open_amount,
        "accepted_assets": list(invoice.accepted_assets),
        "fee_payer": invoice.fee_payer,
        "description": invoice.description,
        "due_date": iso(invoice.due_date),
        "customer": (
            {
                "id": customer.pk,
                "name": customer.name,
                "email": customer.email,
                "company": customer.company,
            }
            if customer is not None
            else None
        ),
        "items": [
            {
                "name": item.name,
                "description": item.description,
                "quantity": format(item.quantity.normalize(), "f"),
                "unit_price": money(item.unit_price),
                "discount": (
                    {
                        "kind": item.discount_kind,
                        "value": format(item.discount_value.normalize(), "f"),
                        "amount": money(item.discount_amount),
                    }
                    if item.discount_kind
                    else None
                ),
                "amount": money(item.amount),
                "tax": (
                    {
                        "name": item.tax_name,
                        "percent": format(item.tax_percent.normalize(), "f"),
                        "inclusive": item.tax_inclusive,
                        "rate_id": item.tax_rate_id,
                        "amount": money(item.tax_amount),
                    }
                    if item.tax_percent is not None
                    else None
                ),
            }
            for item in invoice.items.all()
        ],
        "notes": invoice.notes,
        "terms": invoice.terms,
        "terms_days": invoice.terms_days,
        "po_number": invoice.po_number or None,
        "footer": invoice.footer,
        "seller": {k: v for k, v in document["seller"].items() if k != "display_name"},
        "buyer": document["buyer"],
        "payment_methods": document["payment_methods"],
        "credit_notes": [credit_note_snapshot(note) for note in invoice.credit_notes.all()],
        "foreign_id": invoice.foreign_id or None,
        "tracking_id": invoice.tracking_id or None,
        "callback_url": invoice.callback_url or None,
        "payment_page_url": invoice.payment_page_url or None,
        "payment_page_button": invoice.payment_page_button or None,
        "pay_url": invoice.pay_url,
        "created_at": iso(invoice.created_at),
        "issued_at": iso(invoice.issued_at),
        "expires_at": iso(invoice.expires_at),
        "finalized_at": iso(invoice.finalized_at),
    }


def credit_note_snapshot(note: CreditNote) -> dict[str, Any]:
    """A credit note as the API and the `invoice.credited` callback show it."""

    def money(value: Any) -> str:
        return str(quantize(Decimal(value), note.currency))

    return {
        "id": note.pk,
        "reference": note.reference,
        "amount": money(note.amount),
        "tax": money(note.tax),
        "reason": note.reason,
        "lines": [
            {
                "position": line["position"],
                "name": line["name"],
                "quantity": line["quantity"],
                # Notes from before partial credits credited whole lines.
                "of_quantity": line.get("of", line["quantity"]),
                "amount": money(line["amount"]),
                "tax": money(line["tax"]),
            }
            for line in note.lines
        ],
        "refund": note.refund or None,
        "created_at": iso(note.created_at),
    }


def _payload(*, type: str, invoice: Invoice, event: InvoiceEvent) -> str:
    data = event.data or {}
    transfer = data.get("transfer")
    if transfer is not None and not isinstance(transfer, dict):
        # Events written before the shared transfer snapshot: the same names and units.
        transfer = {
            "id": transfer,
            "tx_hash": data.get("tx") or None,
            "amount": data.get("amount"),
            "amount_base_units": data.get("units"),
            "asset": data.get("asset"),
            "network": data.get("network"),
        }
    body: dict[str, Any] = {
        "type": type,
        "timestamp": iso(event.created_at),
        "data": {
            "invoice": invoice_snapshot(invoice),
            "foreign_id": invoice.foreign_id or None,
            "tracking_id": invoice.tracking_id or None,
            "payment": data.get("payment"),
            "transfer": transfer,
            "refund": data.get("refund"),
            "note": event.note or None,
            **({"claim": data["claim"]} if "claim" in data else {}),
        },
    }
    if type == "invoice.credited":
        note = invoice.credit_notes.get(pk=data["credit_note"])
        body["data"]["credit_note"] = {**credit_note_snapshot(note), "full": data["full"]}
    return json.dumps(body, cls=DjangoJSONEncoder, separators=(",", ":"))


def callbacks_enqueue(
    *,
    event: InvoiceEvent,
    invoice: Invoice | None = None,
    endpoints: list[WebhookEndpoint] | None = None,
) -> list[CallbackDelivery]:
    """Write the outbox rows for an event; call it inside the event's transaction.

    `invoice`: the invoice as it now is, when the caller holds it whole (a creation, with its
    items in hand); otherwise the row is read, so the callback shows what was committed.
    `endpoints`: the merchant's webhook endpoints, when the caller read them already.
    """
    type = CALLBACK_TYPES.get(event.type)
    if type is None:
        return []
    if invoice is None:
        invoice = Invoice.objects.select_related("customer").get(pk=event.invoice_id)
    if endpoints is None:
        endpoints = list(WebhookEndpoint.objects.filter(merchant_id=invoice.merchant_id))
    targets: list[tuple[WebhookEndpoint | None, str]] = [
        (endpoint, endpoint.url) for endpoint in endpoints if endpoint.wants(type)
    ]
    if invoice.callback_url:
        targets.append((None, invoice.callback_url))
    if not targets:
        return []
    payload = _payload(type=type, invoice=invoice, event=event)
    now = timezone.now()
    deliveries = CallbackDelivery.objects.bulk_create(
        CallbackDelivery(
            merchant_id=invoice.merchant_id,
            invoice=invoice,
            event=event,
            endpoint=endpoint,
            url=url,
            event_type=type,
            # One id per event: a receiver listening on two URLs sees the same message twice.
            message_id=f"msg_{event.pk}",
            payload=payload,
            next_attempt_at=now,
            queued_at=now,
        )
        for endpoint, url in targets
    )
    _dispatch_on_commit([delivery.pk for delivery in deliveries])
    return deliveries


def callback_test_send(*, endpoint: WebhookEndpoint) -> CallbackDelivery:
    """A `webhook.test` event to one endpoint, so a merchant can check their receiver."""
    now = timezone.now()
    body = {
        "type": TEST_EVENT,
        "timestamp": now.isoformat(),
        "data": {"message": "A test event from Stablebill.", "endpoint": endpoint.url},
    }
    delivery = CallbackDelivery.objects.create(
        merchant_id=endpoint.merchant_id,
        endpoint=endpoint,
        url=endpoint.url,
        event_type=TEST_EVENT,
        message_id="msg_test_" + secrets.token_hex(8),
        payload=json.dumps(body, separators=(",", ":")),
        next_attempt_at=now,
        queued_at=now,
    )
    _dispatch_on_commit([delivery.pk])
    return delivery


def callback_redeliver(*, delivery: CallbackDelivery) -> CallbackDelivery:
    """Send again now, whatever happened before (a merchant fixed their receiver)."""
    now = timezone.now()
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        status=CallbackStatus.PENDING, next_attempt_at=now, leased_until=None, queued_at=now
    )
    _dispatch_on_commit([delivery.pk], manual=True)
    delivery.refresh_from_db()
    return delivery


def _dispatch_on_commit(ids: list[int], *, manual: bool = False) -> None:
    from invoices.tasks import callback_deliver

    def send(pk: int) -> None:
        callback_deliver.delay(pk, manual)

    for pk in ids:
        transaction.on_commit(partial(send, pk))


def _lease_seconds() -> int:
    # Longer than one request can take, so a live worker never loses its lease.
    return settings.CALLBACK_TIMEOUT_SECONDS * 3 + 30


def callback_deliver(
    *, delivery_id: int, now: datetime | None = None, manual: bool = False
) -> CallbackAttempt | None:
    """Make one attempt if the delivery is due and nobody else holds it; None otherwise."""
    now = now or timezone.now()
    claimed = (
        CallbackDelivery.objects.filter(
            Q(leased_until__isnull=True) | Q(leased_until__lt=now),
            pk=delivery_id,
            status=CallbackStatus.PENDING,
            next_attempt_at__lte=now,
        ).update(
            leased_until=now + timedelta(seconds=_lease_seconds()),
            attempts=F("attempts") + 1,
            # Out of the broker now: from here the lease says whether someone is on it.
            queued_at=None,
        )
        == 1
    )
    if not claimed:
        return None
    delivery = CallbackDelivery.objects.select_related("endpoint", "merchant").get(pk=delivery_id)
    if delivery.endpoint is not None and not delivery.endpoint.enabled:
        CallbackDelivery.objects.filter(pk=delivery.pk).update(
            status=CallbackStatus.CANCELLED, leased_until=None, last_error="Endpoint disabled."
        )
        return None
    signer: SigningSecret = delivery.endpoint or invoice_callback_signer(merchant=delivery.merchant)
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/json",
        **signature_headers(signer=signer, message_id=delivery.message_id, body=body, now=now),
    }
    try:
        response = post(delivery.url, body=body, headers=headers)
    except BlockedURL as error:
        response = OutboundResponse(status=None, excerpt="", duration_ms=0, error=str(error))
    return _record_attempt(delivery=delivery, response=response, now=now, manual=manual)


def _record_attempt(
    *, delivery: CallbackDelivery, response: OutboundResponse, now: datetime, manual: bool
) -> CallbackAttempt:
    code = response.status
    error = response.error
    if code is not None and 300 <= code < 400:
        error = f"Redirect to {response.location or '?'} not followed."
    delivered = code is not None and 200 <= code < 300
    gone = code == 410
    with transaction.atomic():
        attempt = CallbackAttempt.objects.create(
            delivery=delivery,
            number=delivery.attempts,
            url=delivery.url,
            event_type=delivery.event_type,
            started_at=now,
            status_code=code,
            duration_ms=response.duration_ms,
            response_excerpt=response.excerpt[:EXCERPT_CHARS],
            error=error[:300],
            manual=manual,
        )
        fields: dict[str, Any] = {
            "leased_until": None,
            # A retry is queued by the sweep when it comes due.
            "queued_at": None,
            "last_status_code": code,
            "last_error": error[:300],
        }
        if delivered:
            fields |= {"status": CallbackStatus.DELIVERED, "delivered_at": now}
        elif gone or delivery.attempts >= len(RETRY_DELAYS):
            fields |= {"status": CallbackStatus.FAILED, "next_attempt_at": None}
        else:
            delay = RETRY_DELAYS[delivery.attempts]
            fields["next_attempt_at"] = now + timedelta(seconds=delay)
        CallbackDelivery.objects.filter(pk=delivery.pk).update(**fields)
        if gone:
            _receiver_gone(delivery=delivery, now=now)
    return attempt


def _receiver_gone(*, delivery: CallbackDelivery, now: datetime) -> None:
    """410 Gone: the receiver asks us to stop. Stop, and say so where the merchant looks."""
    reason = f"The receiver answered 410 Gone on {now:%Y-%m-%d %H:%M} UTC."
    pending = CallbackDelivery.objects.filter(status=CallbackStatus.PENDING, url=delivery.url)
    if delivery.endpoint_id is not None:
        if webhook_endpoint_disable(endpoint_id=delivery.endpoint_id, reason=reason):
            webhook_disabled_notify(
                merchant_id=delivery.merchant_id, url=delivery.url, reason=reason
            )
        pending = pending.filter(endpoint_id=delivery.endpoint_id)
    else:
        pending = pending.filter(invoice=delivery.invoice, endpoint=None)
    pending.update(status=CallbackStatus.CANCELLED, last_error=reason, next_attempt_at=None)


def _due(now: datetime):
    return CallbackDelivery.objects.filter(
        Q(leased_until__isnull=True) | Q(leased_until__lt=now),
        status=CallbackStatus.PENDING,
        next_attempt_at__lte=now,
    )


def callbacks_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Deliveries whose time has come and whose lease (if any) ran out: retries that are due,
    deliveries whose task never ran (a broker outage) and those whose worker died mid-request."""
    now = now or timezone.now()
    return list(_due(now).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])


def callbacks_queue_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Put a task on the broker for each due delivery that has none waiting there; the ids.

    A delivery queued on commit, or by an earlier sweep, is left alone for
    CALLBACK_REQUEUE_SECONDS: re-queueing it every sweep while the workers are busy is how
    the broker filled with hundreds of duplicates. After that long its task is taken as lost
    (a broker restart) and queued again. Each row is claimed by compare-and-set, so two
    sweeps at once queue it once.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.CALLBACK_REQUEUE_SECONDS)
    not_queued = Q(queued_at__isnull=True) | Q(queued_at__lt=stale)
    candidates = list(
        _due(now)
        .filter(not_queued)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    with transaction.atomic():
        queued = [
            pk
            for pk in candidates
            if _due(now).filter(not_queued, pk=pk).update(queued_at=now) == 1
        ]
        _dispatch_on_commit(queued)
    return queued


def callbacks_deliver_due(*, now: datetime | None = None) -> int:
    """Attempt every due delivery here and now; the count of attempts made."""
    now = now or timezone.now()
    attempted = 0
    for pk in callbacks_due(now=now):
        if callback_deliver(delivery_id=pk, now=now) is not None:
            attempted += 1
    return attempted
