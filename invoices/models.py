import secrets
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django_countries.fields import CountryField

from customers.models import Customer
from invoices.rules import DiscountKind, TaxSpec
from merchants.fields import AmountField
from merchants.models import FeePayer, Merchant, WebhookEndpoint
from merchants.money import CURRENCY_CHOICES, format_money

# Money columns: 26 digits with 8 decimals hold MAX_AMOUNT at the finest currency precision.
MONEY_DIGITS = 26
MONEY_PLACES = 8


def new_public_token() -> str:
    return secrets.token_urlsafe(32)


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    PROCESSING = "processing", "Processing"
    PAID = "paid", "Paid"
    UNRESOLVED = "unresolved", "Unresolved"
    FAILED = "failed", "Failed"
    CLOSED = "closed", "Closed"
    VOID = "void", "Void"


S = InvoiceStatus
# The whole life of an invoice: a status may only move to the statuses listed for it.
# Services change status with a conditional UPDATE derived from this table, nowhere else.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.OPEN, S.VOID}),
    S.OPEN: frozenset({S.PROCESSING, S.PAID, S.UNRESOLVED, S.FAILED, S.CLOSED}),
    S.PROCESSING: frozenset({S.OPEN, S.PAID, S.UNRESOLVED, S.FAILED, S.CLOSED}),
    S.UNRESOLVED: frozenset({S.PAID, S.FAILED}),
    # Money is never ignored: a deposit that arrives after the end (late, or on top of a paid
    # invoice) reopens the question as Unresolved, for the merchant to accept or refund.
    # A paid invoice credited in full (its refund happens outside) is closed as such.
    S.PAID: frozenset({S.UNRESOLVED, S.CLOSED}),
    S.FAILED: frozenset({S.UNRESOLVED}),
    S.CLOSED: frozenset({S.UNRESOLVED}),
    S.VOID: frozenset(),
}
# Final for people: nobody issues, cancels or marks paid past these.
FINAL_STATUSES = frozenset({S.PAID, S.FAILED, S.CLOSED, S.VOID})


def sources_of(target: str) -> frozenset[str]:
    return frozenset(status for status, targets in TRANSITIONS.items() if target in targets)


class FailureReason(models.TextChoices):
    EXPIRED = "expired", "Expired"
    UNDERPAID = "underpaid", "Underpaid"
    PROCESSING_TIMEOUT = "processing_timeout", "Processing over 24 hours"
    CANCELLED = "cancelled", "Cancelled"
    COMPLIANCE_HOLD = "compliance_hold", "Compliance hold"


class RefundState(models.TextChoices):
    NONE = "", "Not refunded"
    PARTIAL = "partially_refunded", "Partially refunded"
    FULL = "refunded", "Refunded"


class InvoiceKind(models.TextChoices):
    ONE_TIME = "one_time", "One-time"
    PERMANENT = "permanent", "Permanent"


class PricingMode(models.TextChoices):
    NO_TIMER = "no_timer", "No timer: payer picks the currency, rate fixed when they confirm it"
    TIMER = "timer", "Timer: payer picks the currency before the timer ends"
    TIMER_FIXED_ASSET = "timer_fixed_asset", "Timer with one pre-selected currency"


PERCENT_DIGITS = 7
PERCENT_PLACES = 4


class TaxRate(models.Model):
    """A tax a merchant charges. Lines copy its name and percent, so editing or archiving a
    rate never changes an invoice that already used it; a rate in use is archived, not
    deleted."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="tax_rates")
    name = models.CharField(max_length=64, help_text="As printed, e.g. VAT or Sales tax.")
    percent = models.DecimalField(max_digits=PERCENT_DIGITS, decimal_places=PERCENT_PLACES)
    inclusive = models.BooleanField(
        "Included in prices",
        default=False,
        help_text="Prices already contain this tax (common for VAT on consumer prices).",
    )
    country = CountryField(blank=True, help_text="Where it applies; for your records.")
    is_default = models.BooleanField("Default for new lines", default=False)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "percent", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(percent__gte=0) & Q(percent__lte=100), name="tax_rate_percent_range"
            ),
            models.UniqueConstraint(
                fields=["merchant"],
                condition=Q(is_default=True, archived_at__isnull=True),
                name="tax_rate_one_default",
            ),
        ]

    def __str__(self) -> str:
        return self.spec.label + (" incl." if self.inclusive else "")

    @property
    def spec(self) -> TaxSpec:
        return TaxSpec(
            name=self.name, percent=self.percent, inclusive=self.inclusive, rate_id=self.pk
        )


class PaymentMethodKind(models.TextChoices):
    BANK_TRANSFER = "bank_transfer", "Bank transfer"
    OTHER = "other", "Other"


class PaymentMethod(models.Model):
    """A way to pay outside the stablecoin checkout (a bank transfer, a card terminal…),
    shown with its instructions; the merchant marks such payments paid by hand."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="payment_methods")
    name = models.CharField(max_length=80, help_text="As the payer sees it, e.g. SEPA transfer.")
    kind = models.CharField(
        max_length=16, choices=PaymentMethodKind.choices, default=PaymentMethodKind.BANK_TRANSFER
    )
    account_holder = models.CharField(max_length=200, blank=True)
    bank_name = models.CharField(max_length=200, blank=True)
    iban = models.CharField("IBAN / account number", max_length=64, blank=True)
    bic = models.CharField("BIC / SWIFT / routing", max_length=32, blank=True)
    instructions = models.TextField(
        max_length=2000,
        blank=True,
        help_text="E.g. “Put the invoice number in the transfer reference.”",
    )
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name

    def snapshot(self) -> dict[str, str | int]:
        """What an invoice prints of it; kept on the invoice when it is issued."""
        return {
            "id": self.pk,
            "name": self.name,
            "kind": self.kind,
            "account_holder": self.account_holder,
            "bank_name": self.bank_name,
            "iban": self.iban,
            "bic": self.bic,
            "instructions": self.instructions,
        }


class Invoice(models.Model):
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="invoices")
    number = models.PositiveIntegerField(editable=False)
    # The number as printed, prefix included, frozen at creation so later prefix changes
    # never rename an invoice that was already sent.
    reference = models.CharField(max_length=32, editable=False)
    public_token = models.CharField(
        max_length=64, unique=True, default=new_public_token, editable=False
    )
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="invoices", null=True, blank=True
    )
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices, default=S.DRAFT)
    failure_reason = models.CharField(max_length=32, choices=FailureReason.choices, blank=True)
    # What the confirmed refunds gave back of the money received (the checkout's refunds).
    refund_state = models.CharField(max_length=20, choices=RefundState.choices, blank=True)
    kind = models.CharField(
        max_length=16, choices=InvoiceKind.choices, default=InvoiceKind.ONE_TIME
    )
    pricing_mode = models.CharField(
        max_length=24, choices=PricingMode.choices, default=PricingMode.NO_TIMER
    )
    currency = models.CharField(max_length=8, choices=CURRENCY_CHOICES)
    # Asset codes the payer may use; empty means any supported asset.
    accepted_assets = models.JSONField(default=list, blank=True)
    fee_payer = models.CharField(max_length=16, choices=FeePayer.choices)
    subtotal = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    total = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0"))
    description = models.TextField(blank=True)
    due_date = models.DateField(null=True, blank=True)
    # The invoice-wide discount as entered, and what it came to (shared over the lines).
    discount_kind = models.CharField(
        max_length=8, choices=DiscountKind.CHOICES, default=DiscountKind.NONE, blank=True
    )
    discount_value = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    discount_total = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    # Every tax on the invoice, inclusive and exclusive, and the summary per rate:
    # [{"name", "percent", "inclusive", "taxable", "tax"}] with amounts as strings.
    tax_total = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    tax_summary = models.JSONField(default=list, blank=True)
    # Printed for the customer, all escaped wherever shown.
    notes = models.TextField(blank=True, help_text="Shown to the customer.")
    terms = models.TextField(blank=True)
    # Net N: issuing sets the due date N days after the issue date.
    terms_days = models.PositiveSmallIntegerField(null=True, blank=True)
    po_number = models.CharField("PO number", max_length=64, blank=True)
    footer = models.TextField(blank=True)
    payment_methods = models.ManyToManyField(PaymentMethod, blank=True, related_name="+")
    # The parties and payment instructions as they were at issue: an issued document never
    # changes when the merchant edits settings, customers or methods later.
    # {"seller": {...}, "buyer": {...} | None, "payment_methods": [...]}
    document = models.JSONField(default=dict, blank=True, editable=False)
    # Integration fields, editable at any time.
    foreign_id = models.CharField(max_length=128, blank=True)
    tracking_id = models.CharField(max_length=128, blank=True)
    callback_url = models.URLField(max_length=500, blank=True)
    payment_page_url = models.URLField(max_length=500, blank=True)
    payment_page_button = models.CharField(max_length=40, blank=True)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "number"], name="invoice_unique_number"),
            models.UniqueConstraint(
                fields=["merchant", "foreign_id"],
                condition=~Q(foreign_id=""),
                name="invoice_unique_foreign_id",
            ),
            models.CheckConstraint(condition=Q(total__gte=0), name="invoice_total_not_negative"),
        ]
        indexes = [
            models.Index(fields=["merchant", "status", "-created_at"], name="invoice_status_idx"),
            models.Index(fields=["merchant", "-created_at"], name="invoice_created_idx"),
            models.Index(fields=["merchant", "reference"], name="invoice_reference_idx"),
            # The dashboard's "paid in the last 30 days" reads only those rows.
            models.Index(fields=["merchant", "status", "finalized_at"], name="invoice_paid_idx"),
            # The list's search matches the start of reference, foreign_id and tracking_id
            # case-insensitively through expression indexes (UPPER(...) text_pattern_ops)
            # that migration invoices 0010 makes on PostgreSQL only: SQLite has no such
            # operator class, and its LIKE with Django's ESCAPE never uses an index.
        ]
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.reference

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_open_amount(self) -> bool:
        """A permanent invoice without items asks for whatever the payer sends."""
        return self.kind == InvoiceKind.PERMANENT and self.total == 0

    @property
    def total_display(self) -> str:
        return "Open amount" if self.is_open_amount else format_money(self.total, self.currency)

    @property
    def pay_url(self) -> str:
        """The payer's link. Built here, not reversed: the checkout app serves it and sits
        above invoices in the dependency order."""
        return f"{settings.SITE_URL}/pay/{self.public_token}/"

    @property
    def is_timed(self) -> bool:
        return self.pricing_mode != PricingMode.NO_TIMER

    @property
    def taxes(self) -> list[dict]:
        """The tax summary with its amounts as Decimals, for printing."""
        return [
            {**tax, "taxable": Decimal(tax["taxable"]), "tax": Decimal(tax["tax"])}
            for tax in self.tax_summary
        ]


class InvoiceStatusCount(models.Model):
    """How many invoices a merchant has in each status, kept by database triggers on the
    invoice table (migration invoices 0010) on every insert, status change and delete,
    whatever wrote them: the dashboard and the invoice list read a handful of these rows
    instead of counting a history that only grows. Never written by the application."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=InvoiceStatus.choices)
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "status"], name="status_count_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant_id} {self.status}: {self.n}"


class LineItem(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)
    quantity = models.DecimalField(max_digits=14, decimal_places=4)
    unit_price = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    # The line's net: quantity x unit price less the line's own discount.
    amount = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    discount_kind = models.CharField(
        max_length=8, choices=DiscountKind.CHOICES, default=DiscountKind.NONE, blank=True
    )
    discount_value = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    discount_amount = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    # This line's share of the invoice-wide discount.
    invoice_discount_amount = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )
    # The rate chosen, and a copy of it: the copy is what the invoice is computed from.
    tax_rate = models.ForeignKey(
        TaxRate, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    tax_name = models.CharField(max_length=64, blank=True)
    tax_percent = models.DecimalField(
        max_digits=PERCENT_DIGITS, decimal_places=PERCENT_PLACES, null=True, blank=True
    )
    tax_inclusive = models.BooleanField(default=False)
    tax_amount = AmountField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0")
    )

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="line_item_quantity_positive"),
            models.CheckConstraint(
                condition=Q(unit_price__gte=0), name="line_item_price_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tax(self) -> TaxSpec | None:
        if self.tax_percent is None:
            return None
        return TaxSpec(
            name=self.tax_name,
            percent=self.tax_percent,
            inclusive=self.tax_inclusive,
            rate_id=self.tax_rate_id,
        )

    @property
    def gross(self) -> Decimal:
        return self.amount + self.discount_amount


class Actor(models.TextChoices):
    USER = "user", "Dashboard"
    ADMIN = "admin", "Admin"
    API = "api", "API"
    SYSTEM = "system", "System"
    PAYER = "payer", "Payer"


class InvoiceEventQuerySet(models.QuerySet):
    def bulk_create(self, objs, *args, **kwargs):  # type: ignore[no-untyped-def]
        objs = list(objs)
        for event in objs:
            event.fill_merchant()
        return super().bulk_create(objs, *args, **kwargs)


class InvoiceEvent(models.Model):
    """One row per thing that happened to an invoice: the timeline, the audit trail, and (with
    the callbacks issue) the outbox, always written in the transaction that made the change."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="events")
    # The invoice's merchant, copied when the event is written (see `fill_merchant`): the
    # dashboard's activity feed reads a merchant's latest events from one index range, where
    # a join through the invoices walks every merchant's newer events, or all of its invoices.
    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, related_name="+", editable=False, db_index=False
    )
    type = models.CharField(max_length=48)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.CharField(max_length=16, choices=Actor.choices, default=Actor.SYSTEM)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    note = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = InvoiceEventQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(fields=["invoice", "created_at"], name="event_invoice_idx"),
            models.Index(
                fields=["merchant", "-created_at", "-id"], name="event_merchant_recent_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.type}"

    def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.fill_merchant()
        super().save(*args, **kwargs)

    def fill_merchant(self) -> None:
        # Events only ever belong to their invoice's merchant; every ORM write path (save,
        # create, bulk_create) comes through here, so no caller has to remember it.
        if self.merchant_id is None and self.invoice_id is not None:
            invoice = self.invoice
            self.merchant_id = invoice.merchant_id

    @property
    def title(self) -> str:
        return EVENT_TITLES.get(
            self.type, self.type.replace("_", " ").replace(".", " ").capitalize()
        )

    @property
    def actor_display(self) -> str:
        if self.actor_user_id is not None and self.actor_user is not None:
            return f"{self.actor_user} ({self.get_actor_display()})"
        return self.get_actor_display()


EVENT_TITLES = {
    "invoice.created": "Invoice created",
    "invoice.updated": "Draft edited",
    "invoice.issued": "Invoice issued",
    "invoice.settings_changed": "Integration settings changed",
    "invoice.voided": "Draft voided",
    "invoice.closed": "Invoice closed",
    "invoice.cancelled": "Invoice cancelled",
    "invoice.marked_paid": "Marked as paid (off-platform)",
    "email.sent": "Email sent",
    "email.failed": "Email not sent",
    "email.skipped": "Email skipped",
    "invoice.accepted": "Unresolved payment accepted",
    "invoice.deposit_received": "Deposit seen on chain",
    "invoice.deposit_confirmed": "Deposit confirmed",
    "invoice.paid": "Paid",
    "invoice.unresolved": "Needs your decision",
    "invoice.failed": "Failed",
    "deposit.reverted": "Deposit reverted by a chain reorganisation",
    "invoice.processing": "Payment processing",
    "invoice.reopened": "Open again: its only deposit was reverted",
    "payment.started": "Payer chose how to pay",
    "payment.expired": "Payment timer ended",
    "invoice.credited": "Credit note issued",
    "payment.requoted": "New price quoted (nothing had arrived yet)",
    "deposit.awaiting_valuation": "Deposit held: awaiting valuation",
    "deposit.valued": "Held deposit valued and credited",
    "refund.requested": "Refund requested",
    "refund.address_given": "Payer gave a refund address",
    "refund.sent": "Refund sent",
    "refund.not_paid": "Refund transaction did not pay it",
    "refund.confirmed": "Refund confirmed",
    "refund.declined": "Refund declined",
    "payment.compliance_hold": "Payment held by compliance screening",
    "payment.compliance_released": "Compliance hold released",
    "invoice.claimed": "Claimed to the account",
    "claim.failed": "Claim failed (funds stay uncollected)",
}


class EmailKind(models.TextChoices):
    INVOICE = "invoice", "Invoice"
    REMINDER_DUE = "reminder_due", "Reminder before due date"
    REMINDER_OVERDUE = "reminder_overdue", "Overdue reminder"
    RECEIPT = "receipt", "Receipt"
    MERCHANT_PAID = "merchant_paid", "Paid notification to you"
    MERCHANT_UNRESOLVED = "merchant_unresolved", "Needs-decision notification to you"
    REFUND_CLAIM = "refund_claim", "Refund claim"
    CREDIT_NOTE = "credit_note", "Credit note"
    COMPLIANCE_HOLD = "compliance_hold", "Compliance hold notification"


class EmailStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Not sent"
    # Never attempted: nobody to send to, or the invoice stopped needing it before its turn.
    SKIPPED = "skipped", "Skipped"


class EmailDelivery(models.Model):
    """One email about an invoice, from the moment it is asked for until the provider took it.

    The row is the email history shown on the invoice and the guard that makes sending
    idempotent: a worker claims the row (queued to sending) before it talks to the provider,
    and a retried task finds nothing left to claim. `key` is unique, so "at most once" emails
    (each reminder, each receipt) cannot even be queued twice.
    """

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="emails")
    kind = models.CharField(max_length=24, choices=EmailKind.choices)
    key = models.CharField(max_length=120, unique=True)
    recipients = models.JSONField(default=list)
    status = models.CharField(
        max_length=12, choices=EmailStatus.choices, default=EmailStatus.QUEUED
    )
    subject = models.CharField(max_length=300, blank=True)
    # What the email needs beyond the invoice, e.g. the receipt it carries or the claim link.
    context = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    message_id = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    attempted_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["invoice", "kind"], name="email_invoice_kind_idx")]
        verbose_name_plural = "email deliveries"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.invoice_id} to {', '.join(self.recipients)}"


class Receipt(models.Model):
    """The payer's proof of one settled payment, frozen when the money was accepted.

    The checkout app knows the orders and transfers; it hands the facts over once, so the
    receipt can be printed later without invoices ever importing checkout.
    """

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="receipts")
    number = models.PositiveSmallIntegerField()
    # The caller's name for the payment (an order number), so recording it twice is harmless.
    key = models.CharField(max_length=120)
    order_number = models.CharField(max_length=48, blank=True)
    paid_at = models.DateTimeField()
    amount = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    currency = models.CharField(max_length=8, choices=CURRENCY_CHOICES)
    method = models.CharField(max_length=200)
    reference = models.CharField(max_length=500, blank=True)
    # On-chain transfers: [{"tx_hash", "network", "asset", "amount", "explorer_url"}].
    transfers = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "number"], name="receipt_unique_number"),
            models.UniqueConstraint(fields=["invoice", "key"], name="receipt_unique_key"),
        ]

    def __str__(self) -> str:
        return self.reference_display

    @property
    def reference_display(self) -> str:
        return f"{self.invoice.reference}-R{self.number}"

    @property
    def amount_display(self) -> str:
        return format_money(self.amount, self.currency)


# What a credit note says of money already received. Money that arrived on chain goes back
# through the refund flow (the payer gives an address), and the invoice page links the note to
# it; money received otherwise (marked paid) goes back outside Stablebill.
OUTSIDE_REFUND = "Money was received: the refund happens outside Stablebill."
ON_CHAIN_REFUND = "Money was received on chain: it is refunded from the invoice's Refunds tab."


class CreditNote(models.Model):
    """A credit against an issued invoice, in a numbered series of its own (CN-00001).

    It credits whole lines at their payable amounts (after discounts, with exclusive tax),
    so the credit notes of an invoice never add up to more than its total.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="credit_notes")
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.PositiveIntegerField()
    reference = models.CharField(max_length=32)
    reason = models.TextField()
    currency = models.CharField(max_length=8, choices=CURRENCY_CHOICES)
    amount = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    tax = AmountField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, default=Decimal("0"))
    # [{"position", "name", "quantity", "amount", "tax"}] with amounts as strings.
    lines = models.JSONField(default=list)
    # Where money had arrived: how it goes back (outside Stablebill, unless a refund request
    # was opened from the credit note: checkout's RefundRequest.credit_note).
    refund = models.CharField(max_length=200, blank=True)
    document = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "number"], name="credit_note_unique_number"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="credit_note_amount_positive"),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def refunded_on_chain(self) -> bool:
        return self.refund == ON_CHAIN_REFUND

    @property
    def amount_display(self) -> str:
        return format_money(self.amount, self.currency)


class CallbackStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class CallbackDelivery(models.Model):
    """One callback event for one receiver: the outbox row.

    Written in the transaction of the change it announces. The body is fixed then, so every
    retry sends the same bytes under the same `webhook-id`; only the timestamp and signature
    are made anew for each attempt.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    # Null for a test event sent from settings.
    invoice = models.ForeignKey(
        Invoice, on_delete=models.CASCADE, null=True, blank=True, related_name="callbacks"
    )
    event = models.ForeignKey(
        InvoiceEvent, on_delete=models.CASCADE, null=True, blank=True, related_name="callbacks"
    )
    # Null when the receiver is the invoice's own callback URL.
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="deliveries",
    )
    url = models.URLField(max_length=500)
    event_type = models.CharField(max_length=48)
    message_id = models.CharField(max_length=40)
    payload = models.TextField()
    status = models.CharField(
        max_length=16, choices=CallbackStatus.choices, default=CallbackStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # A worker owns the delivery until then; one that dies mid-request leaves it to the sweep.
    leased_until = models.DateTimeField(null=True, blank=True)
    # When a task for it was last put on the broker. The sweep leaves it there that long
    # (CALLBACK_REQUEUE_SECONDS) instead of queueing it again every few seconds while the
    # workers are busy; cleared when a worker takes it up.
    queued_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="callback_due_idx"),
            models.Index(fields=["merchant", "-created_at"], name="callback_merchant_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} → {self.url}"


class CallbackAttempt(models.Model):
    """Every request we made for a delivery, answered or not."""

    delivery = models.ForeignKey(CallbackDelivery, on_delete=models.CASCADE, related_name="log")
    number = models.PositiveSmallIntegerField()
    url = models.URLField(max_length=500)
    event_type = models.CharField(max_length=48)
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.TextField(blank=True)
    error = models.CharField(max_length=300, blank=True)
    manual = models.BooleanField(default=False)

    class Meta:
        ordering = ["started_at", "pk"]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number} {self.status_code or self.error}"

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300
