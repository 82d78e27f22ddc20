"""Payments (orders): one attempt of a payer to settle an invoice in one asset on one network."""

import secrets
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from invoices.callbacks import iso
from invoices.models import MONEY_DIGITS, MONEY_PLACES, CreditNote, Invoice
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
    # Compliance: a deposit from a screened-out sender holds the payment (its money is booked
    # to a held account, not the merchant's balance) until an admin releases it or the timer
    # ends and the invoice fails "compliance".
    held_since = models.DateTimeField(null=True, blank=True)
    hold_reason = models.CharField(max_length=300, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
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

    @property
    def is_held(self) -> bool:
        return self.held_since is not None and self.released_at is None


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


# Refunds ---------------------------------------------------------------------------------------


class RefundStatus(models.TextChoices):
    REQUESTED = "requested", "Waiting for the payer's address"
    ADDRESS_GIVEN = "address_given", "Address given"
    SENT = "sent", "Sent"
    CONFIRMED = "confirmed", "Confirmed"
    DECLINED = "declined", "Declined"


R = RefundStatus
REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    # Paid outside (a reference instead of a transaction) needs no address.
    R.REQUESTED: frozenset({R.ADDRESS_GIVEN, R.CONFIRMED, R.DECLINED}),
    R.ADDRESS_GIVEN: frozenset({R.SENT, R.CONFIRMED, R.DECLINED}),
    # Back to address given when the reported transaction turns out not to pay it (reverted,
    # reorganised away, another amount): the merchant sends again.
    R.SENT: frozenset({R.CONFIRMED, R.ADDRESS_GIVEN}),
    R.CONFIRMED: frozenset(),
    R.DECLINED: frozenset(),
}
# Requests that still hold their amount of the payment's money: a new one gets what is left.
ACTIVE_REFUND = frozenset({R.REQUESTED, R.ADDRESS_GIVEN, R.SENT, R.CONFIRMED})
# The payer may still give an address, the merchant may still send.
PAYABLE_REFUND = frozenset({R.ADDRESS_GIVEN, R.SENT})


class RefundKind(models.TextChoices):
    CANCELLED = "cancelled", "Invoice cancelled"
    UNDERPAID = "underpaid", "Underpaid"
    FAILED = "failed", "Payment failed"
    COMPLIANCE = "compliance", "Compliance hold"
    LATE = "late", "Paid after the payment ended"
    OVERPAYMENT = "overpayment", "Overpaid difference"
    MANUAL = "manual", "Refund by the merchant"


# At most one request of each of these per payment: the sweep that opens them runs often.
AUTOMATIC_KINDS = (
    RefundKind.CANCELLED,
    RefundKind.UNDERPAID,
    RefundKind.FAILED,
    RefundKind.COMPLIANCE,
)


def new_refund_token() -> str:
    return secrets.token_urlsafe(32)


class RefundRequest(models.Model):
    """Money of one payment going back to its payer, in the asset and network it came in."""

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="refunds")
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=16, choices=RefundKind.choices)
    # Shown to the payer on the refund page.
    reason = models.CharField(max_length=500)
    amount = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0)
    status = models.CharField(max_length=16, choices=RefundStatus.choices, default=R.REQUESTED)
    # The payer's link: /refund/<token>/.
    token = models.CharField(max_length=64, unique=True, default=new_refund_token, editable=False)
    address = models.CharField(max_length=42, blank=True)
    address_given_at = models.DateTimeField(null=True, blank=True)
    # The transaction that paid it (reported by the page, pasted, or found by the watcher).
    tx_hash = models.CharField(max_length=66, blank=True)
    log_index = models.IntegerField(null=True, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True)
    from_address = models.CharField(max_length=42, blank=True)
    # The watcher looks for an unreported transfer to the address from this block on.
    watch_from_block = models.PositiveBigIntegerField(null=True, blank=True)
    outside_reference = models.CharField(max_length=200, blank=True)
    decline_reason = models.CharField(max_length=500, blank=True)
    credit_note = models.ForeignKey(
        CreditNote, on_delete=models.SET_NULL, null=True, blank=True, related_name="refunds"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.UniqueConstraint(
                fields=["payment", "kind"],
                condition=Q(kind__in=AUTOMATIC_KINDS),
                name="refund_one_automatic_per_kind",
            ),
            # One on-chain transfer pays one refund, never two.
            models.UniqueConstraint(
                fields=["network", "tx_hash", "log_index"],
                condition=~Q(tx_hash=""),
                name="refund_unique_transfer",
            ),
        ]
        indexes = [models.Index(fields=["status", "network"], name="refund_status_idx")]

    def __str__(self) -> str:
        return f"Refund {self.pk} of {self.payment_id}"

    @property
    def amount_major(self) -> Decimal:
        return self.asset.to_major(self.amount)

    @property
    def claim_url(self) -> str:
        return f"{settings.SITE_URL}/refund/{self.token}/"

    @property
    def explorer_url(self) -> str:
        return self.network.tx_url(self.tx_hash) if self.tx_hash else ""

    @property
    def is_final(self) -> bool:
        return self.status in (R.CONFIRMED, R.DECLINED)


def refund_snapshot(refund: RefundRequest) -> dict:
    """A refund as callbacks and the API show it; amounts as in the transfer snapshot."""
    asset = refund.asset
    return {
        "id": refund.pk,
        "invoice_id": refund.invoice_id,
        "order_number": refund.payment.order_number,
        "kind": refund.kind,
        "reason": refund.reason,
        "status": refund.status,
        "network": refund.network.slug,
        "asset": asset.symbol,
        "decimals": asset.decimals,
        "amount": format(asset.to_major(refund.amount), "f"),
        "amount_base_units": str(int(refund.amount)),
        "address": refund.address or None,
        "tx_hash": refund.tx_hash or None,
        "explorer_url": refund.explorer_url or None,
        "outside_reference": refund.outside_reference or None,
        "decline_reason": refund.decline_reason or None,
        "claim_url": refund.claim_url,
        "credit_note": refund.credit_note_id,
        "created_at": iso(refund.created_at),
        "sent_at": iso(refund.sent_at),
        "finalized_at": iso(refund.finalized_at),
    }


# Screening -------------------------------------------------------------------------------------


class ScreeningResult(models.TextChoices):
    CLEAR = "clear", "Clear"
    HIT = "hit", "Hit"
    NO_LIST = "no_list", "No list to ask"


class Screening(models.Model):
    """One screening decision: which source said what about which address, and why it was
    asked (a deposit's sender, a refund address)."""

    address = models.CharField(max_length=42, db_index=True)
    source = models.CharField(max_length=80)
    result = models.CharField(max_length=12, choices=ScreeningResult.choices)
    detail = models.CharField(max_length=300, blank=True)
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="+")
    transfer = models.ForeignKey(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    refund = models.ForeignKey(
        RefundRequest, on_delete=models.CASCADE, null=True, blank=True, related_name="screenings"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # A deposit is screened once per source: retried rounds reuse the decision.
            models.UniqueConstraint(
                fields=["transfer", "source"],
                condition=Q(transfer__isnull=False),
                name="screening_once_per_transfer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.address} {self.source}: {self.result}"


class SanctionedAddress(models.Model):
    """The operator's local list of sanctioned addresses (manage.py sanctions_import)."""

    address = models.CharField(max_length=42, unique=True)
    list_name = models.CharField(max_length=80, default="local")
    imported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "sanctioned addresses"

    def __str__(self) -> str:
        return self.address


class PaymentHold(models.Model):
    """One compliance hold of a payment, from the screening hit that started it (its source
    and why) to the release that ended it (by whom), or to the payment's failure. A payment
    may be held again after a release, by a later deposit's hit: one row per hold."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="holds")
    number = models.PositiveIntegerField()  # 1, 2, ... per payment
    transfer = models.ForeignKey(Transfer, on_delete=models.PROTECT, related_name="+")
    source = models.CharField(max_length=80)
    detail = models.CharField(max_length=300, blank=True)
    # In the invoice's currency: what the hold moved from the merchant's balance to held (what
    # the order had credited when it started), and what its release moved back.
    moved = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal(0))
    released_amount = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal(0)
    )
    held_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["payment", "number"]
        constraints = [
            models.UniqueConstraint(fields=["payment", "number"], name="payment_hold_number"),
            # At most one open hold per payment.
            models.UniqueConstraint(
                fields=["payment"],
                condition=Q(released_at__isnull=True),
                name="payment_hold_one_open",
            ),
        ]

    def __str__(self) -> str:
        return f"Hold {self.number} of {self.payment_id}"
