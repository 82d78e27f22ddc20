"""From transfers seen on chain to payment and invoice statuses, and into the ledger.

`checkout.tasks.watch_network` hands every scan report here. A payment's received and
confirmed totals are recomputed from its transfers each time, never incremented, so running
settlement twice (a retried task, two workers) changes nothing the second time. Each confirmed
transfer is posted to the ledger once, under the key "deposit:<transfer id>".
"""

import logging
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from checkout.models import OPEN_PAYMENT, Payment, PaymentStatus, payment_snapshot
from checkout.rates import RateUnavailable, provider
from checkout.services import PAYABLE, payment_move, tolerance
from invoices.delivery import (
    ReceiptInput,
    TransferRef,
    invoice_paid_deliver,
    invoice_unresolved_deliver,
)
from invoices.models import Invoice, InvoiceEvent, InvoiceKind, InvoiceStatus
from invoices.services import InvoiceStateError, invoice_payment_status, invoice_record_event
from merchants.fields import exact_sum
from merchants.models import FeePayer
from merchants.money import quantize
from wallets.ledger import (
    Leg,
    fees_account,
    fx_account,
    holdings_account,
    ledger_post,
    merchant_account,
)
from wallets.models import Transfer, TransferStatus
from wallets.scanner import ScanReport

logger = logging.getLogger(__name__)
P = PaymentStatus
ENDED_BEFORE_MONEY = frozenset({P.EXPIRED, P.UNDERPAID, P.PAID, P.CANCELLED})


def settle_report(report: ScanReport) -> None:
    for transfer_id in [*report.new, *report.revived, *report.orphaned, *report.confirmed]:
        settle_transfer(transfer_id)


def settle_pending(*, network_id: int | None = None) -> int:
    """Settle every transfer whose current status was not handled yet, whatever the scan
    reports said: the safety net for a worker that died between scanning and settling."""
    pending = Transfer.objects.exclude(handled_status=F("status"))
    if network_id is not None:
        pending = pending.filter(network_id=network_id)
    ids = list(pending.order_by("block_number", "log_index").values_list("pk", flat=True)[:1000])
    for transfer_id in ids:
        settle_transfer(transfer_id)
    return len(ids)


def settle_transfer(transfer_id: int) -> None:
    transfer = Transfer.objects.select_related("asset", "network").get(pk=transfer_id)
    payment = Payment.objects.filter(deposit_address_id=transfer.deposit_address_id).first()
    if payment is None:
        logger.warning("Transfer %s reached an address no payment uses", transfer)
        _mark_handled(transfer)
        return
    with transaction.atomic():
        payment = (
            Payment.objects.select_for_update()
            .select_related("asset", "invoice")
            .get(pk=payment.pk)
        )
        # Re-read under the payment's lock: a twin worker (or the same transfer listed twice
        # in one report, new and confirmed) may have settled this very status already.
        transfer = Transfer.objects.select_related("asset", "network").get(pk=transfer_id)
        if transfer.handled_status == transfer.status:
            return
        _announce(payment, transfer)
        if transfer.status == TransferStatus.CONFIRMED:
            _post_to_ledger(payment, transfer)
        invoice_was = payment.invoice.status
        was = _recompute(payment)
        if transfer.status == TransferStatus.CONFIRMED:
            _flag_late_money(payment, transfer, was, invoice_was)
        _mark_handled(transfer)


def _mark_handled(transfer: Transfer) -> None:
    # Conditional: if the scanner moved the transfer meanwhile, it stays pending for next time.
    Transfer.objects.filter(pk=transfer.pk, status=transfer.status).update(
        handled_status=transfer.status
    )


def _event_once(
    invoice: Invoice, type: str, transfer: Transfer, payment: Payment, note: str = ""
) -> None:
    data = {
        "transfer": transfer.pk,
        "tx": transfer.tx_hash,
        "amount": str(transfer.amount_major),
        "units": str(transfer.amount),
        "asset": transfer.asset.symbol,
        "network": transfer.network.slug,
        "payment": payment_snapshot(payment),
    }
    if not InvoiceEvent.objects.filter(
        invoice=invoice, type=type, data__transfer=transfer.pk
    ).exists():
        invoice_record_event(invoice=invoice, type=type, note=note, data=data)


def _announce(payment: Payment, transfer: Transfer) -> None:
    invoice = payment.invoice
    # The totals first, so the payment in the events (and their callbacks) counts this transfer.
    _update_totals(payment)
    if transfer.status == TransferStatus.ORPHANED:
        _event_once(
            invoice,
            "deposit.reverted",
            transfer,
            payment,
            "A chain reorganisation removed this deposit.",
        )
    else:
        _event_once(invoice, "invoice.deposit_received", transfer, payment)
    if transfer.status == TransferStatus.CONFIRMED:
        _event_once(invoice, "invoice.deposit_confirmed", transfer, payment)


def _credit_value(payment: Payment, transfer: Transfer) -> Decimal:
    """What the transfer is worth in the invoice's currency, at the payment's locked rate
    (another asset than quoted is valued at today's rate), rounded down: never over-credit."""
    rate = payment.rate
    if transfer.asset_id != payment.asset_id:
        try:
            rate = provider().rate(transfer.asset.symbol, payment.invoice.currency).value
        except RateUnavailable:
            rate = Decimal(0)
    value = transfer.amount_major * rate
    return value.quantize(
        Decimal(1).scaleb(-_decimals(payment.invoice.currency)), rounding=ROUND_DOWN
    )


def _decimals(currency: str) -> int:
    from merchants.money import get_currency

    return get_currency(currency).decimals


def _post_to_ledger(payment: Payment, transfer: Transfer) -> None:
    invoice = payment.invoice
    value = _credit_value(payment, transfer)
    percent = settings.FEE_PERCENT
    if payment.fee_payer == FeePayer.PAYER:
        fee = quantize(value * percent / (Decimal(100) + percent), invoice.currency)
    else:
        fee = quantize(value * percent / Decimal(100), invoice.currency)
    received = transfer.amount_major
    symbol = transfer.asset.symbol
    legs = [
        Leg(holdings_account(transfer.network.slug), symbol, -received),
        Leg(fx_account(), symbol, received),
        Leg(fx_account(), invoice.currency, -value),
        Leg(merchant_account(invoice.merchant), invoice.currency, value - fee),
        Leg(fees_account(), invoice.currency, fee),
    ]
    ledger_post(
        kind="deposit",
        idempotency_key=f"deposit:{transfer.pk}",
        reference=payment.order_number,
        memo=f"{received} {symbol} on {transfer.network.name}, tx {transfer.tx_hash}",
        legs=legs,
    )


def _sum(transfers, status=None) -> Decimal:
    if status is not None:
        transfers = transfers.filter(status=status)
    return exact_sum(transfers, "amount")


def _flag_late_money(payment: Payment, transfer: Transfer, was: str, invoice_was: str) -> None:
    """Money is never ignored: a confirmed deposit that came after its payment or its invoice
    had ended, or in another asset than quoted, makes the invoice Unresolved for the merchant
    to accept or refund (it is credited like any deposit). The verdict in _recompute already
    does so when it moves the payment; this catches what it leaves where it was: a failed or
    overpaid payment, one still underpaid, an invoice cancelled or marked paid meanwhile.
    A paid payment that stays paid on a live or paid invoice is a top-up within the
    tolerance and needs no decision."""
    other_asset = transfer.asset_id != payment.asset_id or transfer.network_id != payment.network_id
    after_the_end = was not in OPEN_PAYMENT or invoice_was not in PAYABLE
    within_tolerance = was == payment.status == P.PAID and invoice_was in (
        *PAYABLE,
        InvoiceStatus.PAID,
    )
    if not other_asset and (not after_the_end or within_tolerance):
        return
    invoice = Invoice.objects.get(pk=payment.invoice_id)
    if invoice.status == InvoiceStatus.UNRESOLVED:
        return  # the question is open already; the deposit's own events tell the rest
    _invoice_to(
        invoice,
        InvoiceStatus.UNRESOLVED,
        "invoice.unresolved",
        payment=payment,
        note=f"{transfer.amount_major} {transfer.asset.symbol} arrived for order "
        f"{payment.order_number} after it ended or in another asset; accept it or refund it.",
    )


def _live_transfers(payment: Payment):
    return Transfer.objects.filter(deposit_address_id=payment.deposit_address_id).exclude(
        status=TransferStatus.ORPHANED
    )


def _update_totals(payment: Payment) -> tuple[Decimal, Decimal]:
    """Received and confirmed totals from the transfers, written to the payment."""
    same_asset = _live_transfers(payment).filter(
        asset_id=payment.asset_id, network_id=payment.network_id
    )
    received, confirmed = _sum(same_asset), _sum(same_asset, TransferStatus.CONFIRMED)
    Payment.objects.filter(pk=payment.pk).update(received=received, confirmed=confirmed)
    payment.received, payment.confirmed = received, confirmed
    return received, confirmed


def _recompute(payment: Payment) -> str:
    """Bring the payment (and its invoice) in line with its transfers; returns the payment's
    status before."""
    transfers = _live_transfers(payment)
    received, confirmed = _update_totals(payment)
    other_confirmed = (
        transfers.exclude(asset_id=payment.asset_id)
        .filter(status=TransferStatus.CONFIRMED)
        .exists()
    )
    invoice = Invoice.objects.get(pk=payment.invoice_id)
    now = timezone.now()
    was = payment.status

    if was == P.AWAITING and received > 0:
        payment_move(payment=payment, to=P.PROCESSING, processing_since=now)
        _invoice_to(invoice, InvoiceStatus.PROCESSING, "invoice.processing", payment=payment)
    elif was == P.PROCESSING and received == 0:
        if invoice.status not in PAYABLE:
            # The invoice ended (cancelled, marked paid) while the deposit was confirming; with
            # the deposit gone there is nothing left to wait for, and no address to show.
            payment_move(payment=payment, to=P.CANCELLED, processing_since=None)
            return was
        payment_move(payment=payment, to=P.AWAITING, processing_since=None)
        if not invoice.payments.filter(status=P.PROCESSING).exists():
            _invoice_to(invoice, InvoiceStatus.OPEN, "invoice.reopened", payment=payment)
        return was

    if received == 0 or received != confirmed:
        return was  # nothing yet, or deposits still confirming
    due = payment.amount_due
    expired = payment.expires_at is not None and now >= payment.expires_at
    if due is None:
        verdict = P.PAID
    elif confirmed > due + tolerance(due):
        verdict = P.OVERPAID
    elif confirmed >= due - tolerance(due):
        verdict = P.PAID
    elif (
        expired
        or payment.status in (P.EXPIRED, P.UNDERPAID, P.CANCELLED)
        # The invoice ended another way (cancelled, marked paid): no top-up is coming.
        or invoice.status not in PAYABLE
    ):
        verdict = P.UNDERPAID
    else:
        return was  # partly paid, the timer still runs: the payer may top up
    if verdict == payment.status:
        return was
    # Late: the payment had ended, or the invoice ended another way (cancelled, marked paid,
    # closed) while the deposit was confirming. Either way the merchant must decide.
    late = payment.status in ENDED_BEFORE_MONEY or invoice.status not in PAYABLE
    if not payment_move(payment=payment, to=verdict):
        return was
    if late or other_confirmed:
        _needs_decision(
            invoice, payment, "Money arrived after the payment ended; accept it or refund it."
        )
    elif verdict == P.PAID:
        # The receipt to the payer and the notice to the merchant leave on commit, once.
        invoice_paid_deliver(invoice=invoice, receipt=_receipt(payment))
        # A permanent invoice stays open for the next payer; the order is what got paid.
        paid = InvoiceStatus.PAID if invoice.kind == InvoiceKind.ONE_TIME else InvoiceStatus.OPEN
        _invoice_to(
            invoice, paid, "invoice.paid", payment=payment, note=f"Order {payment.order_number}"
        )
    elif verdict == P.OVERPAID:
        _needs_decision(
            invoice,
            payment,
            f"Order {payment.order_number} received more than due; "
            "accept it or refund the difference.",
        )
    elif verdict == P.UNDERPAID:
        _invoice_to(
            invoice,
            InvoiceStatus.FAILED,
            "invoice.failed",
            payment=payment,
            failure_reason="underpaid",
            note=f"Order {payment.order_number} received less than due before the timer ended; "
            "the money is credited and refundable.",
        )
    return was


def _needs_decision(invoice: Invoice, payment: Payment, reason: str) -> None:
    """Unresolved: the merchant accepts the money or refunds it, and is told so once."""
    _invoice_to(
        invoice, InvoiceStatus.UNRESOLVED, "invoice.unresolved", payment=payment, note=reason
    )
    invoice_unresolved_deliver(invoice=invoice, key=payment.order_number, reason=reason)


def _receipt(payment: Payment) -> ReceiptInput:
    transfers = Transfer.objects.filter(
        deposit_address_id=payment.deposit_address_id, status=TransferStatus.CONFIRMED
    ).select_related("network", "asset")
    return ReceiptInput(
        key=payment.order_number,
        paid_at=timezone.now(),
        amount=payment.invoice_amount,
        method=f"{payment.asset.symbol} on {payment.network.name}",
        order_number=payment.order_number,
        transfers=[
            TransferRef(
                tx_hash=t.tx_hash,
                network=t.network.name,
                asset=t.asset.symbol,
                amount=t.amount_major,
                explorer_url=t.explorer_url,
            )
            for t in transfers
        ],
    )


def _invoice_to(
    invoice: Invoice,
    to: str,
    type: str,
    *,
    payment: Payment,
    note: str = "",
    failure_reason: str = "",
) -> None:
    # The payment as it stands now goes into the event, so its callback can say what was paid.
    payment.refresh_from_db()
    data = {"payment": payment_snapshot(payment)}
    try:
        invoice_payment_status(
            invoice=invoice, to=to, type=type, note=note, data=data, failure_reason=failure_reason
        )
    except InvoiceStateError as error:
        # E.g. a permanent invoice the merchant closed: record what happened, change nothing.
        logger.info("Invoice %s stays %s: %s", invoice, invoice.status, error)
        invoice_record_event(invoice=invoice, type=type, note=note, data=data)


__all__ = ["OPEN_PAYMENT", "settle_report", "settle_transfer"]
