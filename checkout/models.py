"""Payments (orders): one attempt of a payer to settle an invoice in one asset on one network."""

from decimal import Decimal

from django.db import models
from django.db.models import Q

from invoices.callbacks import iso
from invoices.models import MONEY_DIGITS, MONEY_PLACES, Invoice
from merchants.fields import AmountField
from merchants.models import FeePayer
from merchants.money import quantize
from wallets.models import BASE_UNIT_DIGITS, Asset, DepositAddress, Network, Transfer


class PaymentStatus(models.TextChoices):
    AWAITING = "awaiting", "Awaiting payment"
    PROCESSING = "processing", "Processing"
    PAID = "paid", "Paid"
    OVERPAID = "overpaid", "Overpaid"
    UNDERPAID = "underpaid", "Underpaid"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


P = PaymentStatus
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    P.AWAITING: frozenset({P.PROCESSING, P.EXPIRED, P.CANCELLED}),
    # Back to awaiting when a reorg takes the only deposit away.
    P.PROCESSING: frozenset({P.AWAITING, P.PAID, P.OVERPAID, P.UNDERPAID, P.FAILED, P.CANCELLED}),
    # A deposit after the end still counts: it tops a paid payment up into overpaid, or lands on
    # an ended one, which then holds money the merchant must accept or refund.
    P.PAID: frozenset({P.OVERPAID}),
    P.EXPIRED: frozenset({P.UNDERPAID, P.PAID, P.OVERPAID}),
    P.UNDERPAID: frozenset({P.PAID, P.OVERPAID}),
    P.FAILED: frozenset(),
    P.OVERPAID: frozenset(),
    P.CANCELLED: frozenset({P.UNDERPAID, P.PAID, P.OVERPAID}),
}
OPEN_PAYMENT = frozenset({P.AWAITING, P.PROCESSING})


class Payment(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    # Per invoice: a permanent invoice gets order 1, 2, 3… one per payment.
    number = models.PositiveIntegerField()
    order_number = models.CharField(max_length=48, db_index=True)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    # One address per payment, never shared; switching asset keeps it (EVM addresses are the
    # same on every network), so a switch never hands out more addresses.
    deposit_address = models.OneToOneField(
        DepositAddress, on_delete=models.PROTECT, related_name="payment"
    )
    status = models.CharField(max_length=16, choices=PaymentStatus.choices, default=P.AWAITING)
    # In the invoice's currency: what this payment settles, and the fee on it.
    invoice_amount = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    fee = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal(0))
    fee_payer = models.CharField(max_length=16, choices=FeePayer.choices)
    # Invoice-currency units for one unit of the asset, fixed when the quote was made.
    rate = AmountField(max_digits=40, decimal_places=18)
    rate_source = models.CharField(max_length=60)
    rate_at = models.DateTimeField()
    # On-chain integers in the asset's base units. amount_due is None for an open amount.
    amount_due = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0, null=True, blank=True)
    received = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0, default=Decimal(0))
    confirmed = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0, default=Decimal(0))
    payer_note = models.CharField(max_length=500, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # A quote in a volatile asset on an invoice without a timer is renewed at this time while
    # nothing has arrived (services.payments_requote); None: the quote holds.
    requote_at = models.DateTimeField(null=True, blank=True)
    processing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "number"], name="payment_unique_number"),
            models.CheckConstraint(
                condition=Q(received__gte=0), name="payment_received_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(confirmed__gte=0), name="payment_confirmed_not_negative"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "expires_at"], name="payment_status_expiry_idx"),
            models.Index(fields=["status", "requote_at"], name="payment_status_requote_idx"),
        ]

    def __str__(self) -> str:
        return self.order_number

    @property
    def amount_due_major(self) -> Decimal | None:
        return None if self.amount_due is None else self.asset.to_major(self.amount_due)

    @property
    def received_major(self) -> Decimal:
        return self.asset.to_major(self.received)

    @property
    def outstanding(self) -> Decimal | None:
        """Base units still to send, never negative; None for an open amount."""
        if self.amount_due is None:
            return None
        return max(Decimal(0), self.amount_due - self.received)

    @property
    def outstanding_major(self) -> Decimal | None:
        due = self.outstanding
        return None if due is None else self.asset.to_major(due)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_PAYMENT


def payment_snapshot(payment: Payment) -> dict:
    """A payment as the API and callbacks show it: amounts as strings, chain amounts both in
    base units (exact integers) and in whole tokens."""
    asset = payment.asset
    return {
        "order_number": payment.order_number,
        "status": payment.status,
        "asset": asset.symbol,
        "network": payment.network.slug,
        "address": payment.deposit_address.address,
        "decimals": asset.decimals,
        "amount_due": None if payment.amount_due is None else str(payment.amount_due),
        "amount_due_major": (
            None if payment.amount_due is None else str(asset.to_major(payment.amount_due))
        ),
        "received": str(payment.received),
        "confirmed": str(payment.confirmed),
        "invoice_amount": str(quantize(payment.invoice_amount, payment.invoice.currency)),
        "fee": str(quantize(payment.fee, payment.invoice.currency)),
        "fee_payer": payment.fee_payer,
        "rate": format(payment.rate.normalize(), "f"),
        "rate_source": payment.rate_source,
        "rate_at": iso(payment.rate_at),
        "expires_at": iso(payment.expires_at),
        "requote_at": iso(payment.requote_at),
        "created_at": iso(payment.created_at),
        "finalized_at": iso(payment.finalized_at),
    }


def transfer_snapshot(transfer: Transfer, *, order_number: str) -> dict:
    """One transfer as the API, callbacks and receipts show it. `amount` is always whole
    tokens (a decimal string) and `amount_base_units` the exact integer beside it; `tx_hash`
    is null when the deposit was found by reconciling a balance rather than in a transaction
    the node could name."""
    asset = transfer.asset
    return {
        "id": transfer.pk,
        "order_number": order_number,
        "network": transfer.network.slug,
        "asset": asset.symbol,
        "decimals": asset.decimals,
        "tx_hash": transfer.tx_hash if transfer.has_tx_hash else None,
        "log_index": transfer.log_index,
        "block_number": transfer.block_number,
        "from_address": transfer.from_address or None,
        "to_address": transfer.to_address,
        "amount": format(asset.to_major(transfer.amount), "f"),
        "amount_base_units": str(int(transfer.amount)),
        "status": transfer.status,
        "confirmations": transfer.confirmations,
        "awaiting_valuation": transfer.awaiting_valuation,
        "explorer_url": transfer.explorer_url or None,
        "seen_at": iso(transfer.seen_at),
        "confirmed_at": iso(transfer.confirmed_at),
    }
