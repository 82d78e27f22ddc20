"""Payments: quotes, starts, switches and their ends. Settlement lives in settlement.py."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, F, Max, Value, When
from django.utils import timezone

from checkout.models import (
    OPEN_PAYMENT,
    PAYMENT_TRANSITIONS,
    Payment,
    PaymentStatus,
    payment_snapshot,
)
from checkout.rates import Rate, RateUnavailable, is_volatile, provider
from invoices.models import Invoice, InvoiceKind, InvoiceStatus
from invoices.services import InvoiceStateError, invoice_payment_status, invoice_record_event
from merchants.models import FeePayer
from merchants.money import MAX_AMOUNT, price_gap, quantize
from merchants.validators import without_nul
from wallets.addresses import ForwarderUnavailable, deposit_address_allocate
from wallets.models import Asset, Network, Wallet

PAYABLE = frozenset({InvoiceStatus.OPEN, InvoiceStatus.PROCESSING})


class CheckoutError(Exception):
    """The payer asked for something the invoice does not allow; the message says what."""


class TooManyAttempts(CheckoutError):
    pass


@dataclass(frozen=True)
class Quote:
    asset: Asset
    network: Network
    invoice_amount: Decimal
    fee: Decimal
    payer_total: Decimal  # in the invoice's currency
    rate: Rate
    amount_due: int | None  # base units, rounded up; None for an open amount


def payable_assets(invoice: Invoice) -> list[Asset]:
    """The assets and networks this invoice can be paid with, in a stable order."""
    assets = Asset.objects.filter(
        enabled=True, network__in=Network.objects.active()
    ).select_related("network")
    if invoice.accepted_assets:
        assets = assets.filter(symbol__in=invoice.accepted_assets)
    if price_gap(invoice.currency):
        return []  # nothing can be quoted against a currency without a price
    # An asset without a real price source is not offered (admin's asset list says why).
    return [a for a in assets.order_by("symbol", "network__name") if not price_gap(a.symbol)]


def fee_for(amount: Decimal, currency: str) -> Decimal:
    return quantize(amount * settings.FEE_PERCENT / Decimal(100), currency)


def quote(*, invoice: Invoice, asset: Asset, amount: Decimal | None = None) -> Quote:
    """What the payer must send in `asset` to settle `amount` (default: the invoice total).

    The one conversion from invoice money to asset base units: rounded up, never down, so a
    payer who sends the quoted amount always pays at least what is due.
    """
    currency = invoice.currency
    invoice_amount = invoice.total if amount is None else quantize(amount, currency)
    try:
        rate = provider().rate(asset.symbol, currency)
    except RateUnavailable as error:
        raise CheckoutError(
            f"No exchange rate for {asset.symbol} right now. Try again shortly."
        ) from error
    if invoice.is_open_amount and amount is None:
        return Quote(asset, asset.network, Decimal(0), Decimal(0), Decimal(0), rate, None)
    fee = fee_for(invoice_amount, currency)
    payer_total = invoice_amount + fee if invoice.fee_payer == FeePayer.PAYER else invoice_amount
    base_units = (
        (payer_total / rate.value).scaleb(asset.decimals).to_integral_value(rounding=ROUND_CEILING)
    )
    return Quote(asset, asset.network, invoice_amount, fee, payer_total, rate, int(base_units))


def _check_payable(invoice: Invoice, asset: Asset) -> None:
    if invoice.status not in PAYABLE:
        raise CheckoutError(
            f"This invoice is {invoice.get_status_display().lower()} and takes no payment."
        )
    if invoice.expires_at is not None and timezone.now() >= invoice.expires_at:
        raise CheckoutError("The time to pay this invoice has run out.")
    if asset not in payable_assets(invoice):
        raise CheckoutError(f"This invoice does not accept {asset.symbol} on {asset.network.name}.")
    if not Wallet.objects.filter(merchant_id=invoice.merchant_id).exists():
        raise CheckoutError("The merchant has not set up a wallet yet; payment is not possible.")


def _count_attempt(invoice: Invoice) -> None:
    key = f"checkout:attempts:{invoice.pk}:{int(timezone.now().timestamp() // 60)}"
    cache.add(key, 0, timeout=120)
    if cache.incr(key) > settings.PAYMENT_ATTEMPTS_PER_MINUTE:
        raise TooManyAttempts(
            "Too many payment attempts on this invoice. Wait a minute and try again."
        )


def current_payment(invoice: Invoice) -> Payment | None:
    """The attempt the page shows: the open one, else for a one-time invoice the last one."""
    payments = Payment.objects.filter(invoice=invoice).select_related(
        "asset", "network", "deposit_address"
    )
    if invoice.kind == InvoiceKind.PERMANENT:
        return payments.filter(status__in=OPEN_PAYMENT).order_by("-pk").first()
    # One query either way: the open attempts first, the newest of them.
    opened = Case(When(status__in=OPEN_PAYMENT, then=Value(1)), default=Value(0))
    return payments.annotate(opened=opened).order_by("-opened", "-pk").first()


def payment_start(
    *, invoice: Invoice, asset: Asset, amount: Decimal | None = None, payer_note: str = ""
) -> Payment:
    """A payer chose how to pay: lock a rate, allocate a fresh address, open an order.

    One-time invoices have one open attempt at a time; choosing another asset switches it.
    """
    _check_payable(invoice, asset)
    if amount is not None:
        if not invoice.is_open_amount:
            raise CheckoutError("Only open-amount invoices take an amount from the payer.")
        # Finite and in range before rounding: quantize refuses what does not fit.
        if (
            not amount.is_finite()
            or not 0 < amount <= MAX_AMOUNT
            or quantize(amount, invoice.currency) <= 0
        ):
            raise CheckoutError("Enter the amount to pay: above zero, at most a trillion.")
    _count_attempt(invoice)
    # Free text from a public form: NUL bytes are refused by PostgreSQL, so they go here.
    payer_note = without_nul(payer_note).strip()[:500]
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        existing = Payment.objects.filter(invoice=locked, status__in=OPEN_PAYMENT).first()
        if existing is not None and locked.kind == InvoiceKind.ONE_TIME:
            return _switch(existing, asset, amount)
        q = quote(invoice=locked, asset=asset, amount=amount)
        number = (Payment.objects.filter(invoice=locked).aggregate(n=Max("number"))["n"] or 0) + 1
        payment = Payment.objects.create(
            invoice=locked,
            number=number,
            order_number=f"{locked.reference}-{number:02d}",
            asset=asset,
            network=asset.network,
            deposit_address=_allocate(locked, asset),
            invoice_amount=q.invoice_amount,
            fee=q.fee,
            fee_payer=locked.fee_payer,
            rate=q.rate.value,
            rate_source=q.rate.source,
            rate_at=q.rate.at,
            amount_due=q.amount_due,
            payer_note=payer_note,
            expires_at=locked.expires_at,
            requote_at=_requote_at(locked, asset),
        )
        invoice_record_event(
            invoice=locked,
            type="payment.started",
            note=payer_note,
            data={
                "order": payment.order_number,
                "asset": asset.symbol,
                "network": asset.network.slug,
            },
        )
    return payment


def _allocate(invoice: Invoice, asset: Asset):
    """A fresh deposit address for a payment in `asset` (a forwarder's depends on the
    network's factory)."""
    try:
        return deposit_address_allocate(merchant=invoice.merchant, network=asset.network)
    except ForwarderUnavailable as error:
        raise CheckoutError(str(error)) from None


def _switch(payment: Payment, asset: Asset, amount: Decimal | None) -> Payment:
    locked = Payment.objects.select_for_update().get(pk=payment.pk)
    if locked.received > 0 or locked.status != PaymentStatus.AWAITING:
        raise CheckoutError(
            "Money has already arrived for this payment; the currency can no longer change."
        )
    q = quote(invoice=locked.invoice, asset=asset, amount=amount)
    fields: dict[str, Any] = {
        "asset": asset,
        "network": asset.network,
        "invoice_amount": q.invoice_amount,
        "fee": q.fee,
        "rate": q.rate.value,
        "rate_source": q.rate.source,
        "rate_at": q.rate.at,
        "amount_due": q.amount_due,
        "requote_at": _requote_at(locked.invoice, asset),
    }
    current = locked.deposit_address
    if current.is_forwarder and current.factory != asset.network.deposit_factory:
        # A forwarder address exists only under its own factory; another network's factory
        # (at another address) needs another deposit address.
        fields["deposit_address"] = _allocate(locked.invoice, asset)
    for key, value in fields.items():
        setattr(locked, key, value)
    locked.save(update_fields=[*fields, "updated_at"])
    return locked


def _requote_at(invoice: Invoice, asset: Asset, now=None):
    """When a quote in `asset` must be renewed: volatile assets on invoices without a timer
    (a timer ends the quote anyway); None when the quote holds."""
    if invoice.expires_at is not None or not is_volatile(asset.symbol):
        return None
    return (now or timezone.now()) + timedelta(minutes=settings.QUOTE_VOLATILE_MINUTES)


def payments_requote(*, now=None) -> int:
    """Renew the quotes of volatile awaiting payments that ran out, while nothing has arrived.

    Money that arrived was quoted under the rate in force: once a deposit is seen the quote is
    final (the payment leaves `awaiting`, and `received` is checked under the same locks
    settlement takes: invoice, then payment). Without a rate now, the payment keeps its quote
    and is tried again on the next run."""
    now = now or timezone.now()
    renewed = 0
    due = Payment.objects.filter(status=PaymentStatus.AWAITING, requote_at__lte=now)
    for payment_id, invoice_id in due.values_list("pk", "invoice_id")[:500]:
        with transaction.atomic():
            invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
            payment = Payment.objects.select_for_update().select_related("asset").get(pk=payment_id)
            if (
                payment.status != PaymentStatus.AWAITING
                or payment.received > 0
                or payment.requote_at is None
                or payment.requote_at > now
            ):
                continue
            try:
                q = quote(invoice=invoice, asset=payment.asset, amount=_quoted_amount(payment))
            except CheckoutError:
                continue
            before = payment.amount_due
            Payment.objects.filter(pk=payment.pk).update(
                rate=q.rate.value,
                rate_source=q.rate.source,
                rate_at=q.rate.at,
                amount_due=q.amount_due,
                fee=q.fee,
                invoice_amount=q.invoice_amount,
                requote_at=_requote_at(invoice, payment.asset, now),
                updated_at=now,
            )
            invoice_record_event(
                invoice=invoice,
                type="payment.requoted",
                note=f"Order {payment.order_number}: new price {q.rate.value.normalize()} "
                f"{invoice.currency} per {payment.asset.symbol}.",
                data={
                    "order": payment.order_number,
                    "amount_due_before": None if before is None else str(before),
                    "amount_due": None if q.amount_due is None else str(q.amount_due),
                    "rate": format(q.rate.value.normalize(), "f"),
                },
            )
            renewed += 1
    return renewed


def _quoted_amount(payment: Payment) -> Decimal | None:
    # An open-amount invoice was quoted for the amount the payer chose; keep it.
    return payment.invoice_amount if payment.invoice.is_open_amount else None


def payment_move(*, payment: Payment, to: str, **fields: Any) -> bool:
    """Conditional status change by the transition table; False if it moved meanwhile."""
    sources = [s for s, targets in PAYMENT_TRANSITIONS.items() if to in targets]
    now = timezone.now()
    updates: dict[str, Any] = {"status": to, "updated_at": now, **fields}
    if to not in OPEN_PAYMENT:
        updates["finalized_at"] = now
    changed = Payment.objects.filter(
        pk=payment.pk, status=payment.status, status__in=sources
    ).update(**updates)
    if changed:
        for key, value in updates.items():
            setattr(payment, key, value)
    return bool(changed)


def payments_expire(*, now=None) -> int:
    """End what the timer ended: awaiting payments expire, and one-time timed invoices with
    nothing under way fail as expired. Payments with deposits still confirming are left to
    settlement: that money was sent in time. Safe to run twice at once: every change is
    conditional on the status it read."""
    now = now or timezone.now()
    ended = 0
    for payment in Payment.objects.filter(status=PaymentStatus.AWAITING, expires_at__lte=now):
        ended += payment_move(payment=payment, to=PaymentStatus.EXPIRED)
    stale = Invoice.objects.filter(
        status=InvoiceStatus.OPEN, expires_at__lte=now, kind=InvoiceKind.ONE_TIME
    ).exclude(payments__status__in=OPEN_PAYMENT)
    for invoice in stale:
        with transaction.atomic():
            # Re-read under the lock: a concurrent run may have failed it already, and moving
            # an invoice to the status it has would only record the event a second time.
            locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
            if locked.status != InvoiceStatus.OPEN:
                continue
            try:
                invoice_payment_status(
                    invoice=locked,
                    to=InvoiceStatus.FAILED,
                    type="invoice.failed",
                    failure_reason="expired",
                    note="The timer ended before the invoice was paid.",
                )
                ended += 1
            except InvoiceStateError:
                pass  # a deposit moved it first
    return ended


def payments_fail_stuck(*, now=None) -> int:
    """Fail payments whose deposits stayed unconfirmed past PROCESSING_TIMEOUT_HOURS."""
    now = now or timezone.now()
    limit = now - timedelta(hours=settings.PROCESSING_TIMEOUT_HOURS)
    failed = 0
    # A compliance hold ends its own way (settlement.payments_fail_held).
    for payment in Payment.objects.filter(
        status=PaymentStatus.PROCESSING, processing_since__lte=limit, held_since__isnull=True
    ):
        if payment_move(payment=payment, to=PaymentStatus.FAILED):
            failed += 1
            invoice = Invoice.objects.get(pk=payment.invoice_id)
            if invoice.status in PAYABLE:
                invoice_payment_status(
                    invoice=invoice,
                    to=InvoiceStatus.FAILED,
                    type="invoice.failed",
                    failure_reason="processing_timeout",
                    data={"payment": payment_snapshot(payment)},
                    note=f"Deposits stayed unconfirmed over {settings.PROCESSING_TIMEOUT_HOURS} h.",
                )
    return failed


def payments_cancel_ended() -> int:
    """Close the open payments of invoices that ended another way (cancelled, marked paid,
    closed). Their addresses stay watched: money sent later is still recorded, as Unresolved."""
    cancelled = 0
    ended = Payment.objects.filter(status__in=OPEN_PAYMENT, received=0).exclude(
        invoice__status__in=PAYABLE
    )
    for payment in ended:
        cancelled += payment_move(payment=payment, to=PaymentStatus.CANCELLED)
    # Part paid, every deposit confirmed, and the invoice ended (cancelled): no top-up is
    # coming, so the payer's page stops asking for one; the money goes back by a refund.
    # Held payments end their own way (settlement.payments_fail_held).
    short = (
        Payment.objects.filter(
            status=PaymentStatus.PROCESSING,
            received__gt=0,
            received=F("confirmed"),
            held_since__isnull=True,
        )
        .exclude(invoice__status__in=PAYABLE)
        .exclude(invoice__status=InvoiceStatus.UNRESOLVED)
    )
    for payment in short:
        if payment.amount_due is not None and payment.confirmed < payment.amount_due:
            cancelled += payment_move(payment=payment, to=PaymentStatus.UNDERPAID)
    return cancelled


def tolerance(amount_due: Decimal) -> Decimal:
    return (amount_due * settings.PAYMENT_TOLERANCE_BPS / Decimal(10_000)).to_integral_value(
        rounding=ROUND_HALF_UP
    )
