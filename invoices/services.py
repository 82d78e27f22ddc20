"""Every write to an invoice goes through here.

Status changes lock the invoice row, check the move against `TRANSITIONS`, and write the
`InvoiceEvent` in the same transaction, so the timeline can never disagree with the status.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from customers.models import Customer
from invoices.callbacks import callbacks_enqueue
from invoices.models import (
    FINAL_STATUSES,
    Actor,
    FailureReason,
    Invoice,
    InvoiceEvent,
    InvoiceKind,
    InvoiceStatus,
    LineItem,
    PricingMode,
    sources_of,
)
from invoices.rules import (
    LineItemInput,
    check_price,
    check_quantity,
    check_total,
    invoice_totals,
    line_amount,
)
from merchants.integrations import check_callback_url
from merchants.models import FeePayer, Merchant, User
from merchants.money import PAYMENT_ASSETS, Currency, UnknownCurrency, get_currency, price_gap

DUPLICATE_FOREIGN_ID = "Another invoice of yours already uses this foreign ID."


class InvoiceStateError(Exception):
    """The invoice is not in a status that allows the requested change."""


@dataclass
class InvoiceInput:
    """What a merchant writes on a draft."""

    currency: str
    items: list[LineItemInput] = field(default_factory=list)
    customer: Customer | None = None
    description: str = ""
    due_date: date | None = None
    kind: str = InvoiceKind.ONE_TIME
    pricing_mode: str = PricingMode.NO_TIMER
    accepted_assets: list[str] = field(default_factory=list)
    fee_payer: str = ""
    foreign_id: str = ""
    tracking_id: str = ""
    callback_url: str = ""
    payment_page_url: str = ""
    payment_page_button: str = ""


INTEGRATION_FIELDS = ("tracking_id", "callback_url", "payment_page_url", "payment_page_button")


def invoice_create(
    *,
    merchant: Merchant,
    data: InvoiceInput,
    by: User | None = None,
    actor: str = Actor.USER,
    issue: bool = False,
) -> Invoice:
    _validate(merchant=merchant, data=data)
    try:
        with transaction.atomic():
            # Lock the merchant row: the number is taken and the invoice inserted in one
            # transaction, so concurrent creations queue here and numbers neither repeat nor skip.
            locked = (
                Merchant.objects.select_for_update()
                .only("pk", "next_invoice_number", "invoice_prefix")
                .get(pk=merchant.pk)
            )
            number = locked.next_invoice_number
            Merchant.objects.filter(pk=merchant.pk).update(
                next_invoice_number=F("next_invoice_number") + 1
            )
            invoice = Invoice(
                merchant=merchant,
                number=number,
                reference=f"{locked.invoice_prefix}{number:05d}",
                created_by=by,
            )
            _apply(invoice=invoice, data=data, merchant=merchant)
            if issue:
                # Born open: the invoice.created callback then already shows what the payer
                # can pay, instead of a draft that changes a moment later.
                _check_issuable(invoice)
                invoice.status = InvoiceStatus.OPEN
                for key, value in _issue_updates(invoice).items():
                    setattr(invoice, key, value)
            invoice.save()
            _write_items(invoice=invoice, items=data.items)
            # The timeline still tells it as created, then issued; the callback's snapshot
            # (read from the row) shows the invoice as it is, open.
            _record(
                invoice=invoice,
                type="invoice.created",
                actor=actor,
                by=by,
                to_status=InvoiceStatus.DRAFT,
            )
            if issue:
                _record(
                    invoice=invoice,
                    type="invoice.issued",
                    actor=actor,
                    by=by,
                    from_status=InvoiceStatus.DRAFT,
                    to_status=InvoiceStatus.OPEN,
                )
    except IntegrityError:
        # Two requests with the same foreign ID raced past the check in _validate.
        foreign_id = data.foreign_id.strip()
        if foreign_id and Invoice.objects.filter(merchant=merchant, foreign_id=foreign_id).exists():
            raise ValidationError({"foreign_id": DUPLICATE_FOREIGN_ID}) from None
        raise
    return invoice


def invoice_update_draft(
    *, invoice: Invoice, data: InvoiceInput, by: User | None = None, actor: str = Actor.USER
) -> Invoice:
    _validate(merchant=invoice.merchant, data=data, invoice=invoice)
    try:
        with transaction.atomic():
            locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
            if locked.status != InvoiceStatus.DRAFT:
                raise InvoiceStateError(
                    "Only drafts can be edited; this invoice was already issued."
                )
            _apply(invoice=locked, data=data, merchant=invoice.merchant)
            locked.save()
            locked.items.all().delete()
            _write_items(invoice=locked, items=data.items)
            _record(invoice=locked, type="invoice.updated", actor=actor, by=by)
    except IntegrityError:
        raise ValidationError({"foreign_id": DUPLICATE_FOREIGN_ID}) from None
    return locked


def invoice_update_integration(
    *, invoice: Invoice, by: User | None = None, actor: str = Actor.USER, **fields: str
) -> Invoice:
    """Tracking ID, callback URL and payment-page button may change in any status."""
    unknown = set(fields) - set(INTEGRATION_FIELDS)
    if unknown:
        raise ValueError(f"Not editable here: {', '.join(sorted(unknown))}")
    cleaned = {key: value.strip() for key, value in fields.items()}
    _check_urls(cleaned)
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        changes = {
            key: {"from": getattr(locked, key), "to": value}
            for key, value in cleaned.items()
            if getattr(locked, key) != value
        }
        if not changes:
            return locked
        for key, change in changes.items():
            setattr(locked, key, change["to"])
        locked.save(update_fields=[*changes, "updated_at"])
        _record(
            invoice=locked,
            type="invoice.settings_changed",
            actor=actor,
            by=by,
            data={"changes": changes},
        )
    return locked


def invoice_update_items(
    *, invoice: Invoice, items: list[LineItemInput], by: User | None = None, actor: str = Actor.USER
) -> Invoice:
    """Change what an issued invoice asks for, while nobody has started to pay it."""
    currency = get_currency(invoice.currency)
    errors: dict[str, list[str]] = {}
    _check_items(items, currency, lambda key, message: errors.setdefault(key, []).append(message))
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        # The checkout takes this same row lock before it starts a payment, so no payment can
        # begin between the check below and the change.
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status == InvoiceStatus.DRAFT:
            data = InvoiceInput(currency=locked.currency, items=items)
            for key in (
                "customer", "description", "due_date", "kind", "pricing_mode",
                "accepted_assets", "fee_payer", "foreign_id", *INTEGRATION_FIELDS,
            ):  # fmt: skip
                setattr(data, key, getattr(locked, key))
            return invoice_update_draft(invoice=locked, data=data, by=by, actor=actor)
        if locked.status != InvoiceStatus.OPEN:
            raise InvoiceStateError(
                f"The amount of a {locked.get_status_display().lower()} invoice cannot change."
            )
        # `payments` is the checkout's relation; asked by name, so invoices need not import it.
        if locked.payments.exists():  # type: ignore[attr-defined]
            raise InvoiceStateError("A payment was started; the amount can no longer change.")
        subtotal, total = invoice_totals(items, currency)
        if locked.kind == InvoiceKind.ONE_TIME and total <= 0:
            raise ValidationError({"items": "A one-time invoice needs a positive total."})
        before = str(locked.total)
        locked.subtotal, locked.total = subtotal, total
        locked.save(update_fields=["subtotal", "total", "updated_at"])
        locked.items.all().delete()
        _write_items(invoice=locked, items=items)
        _record(
            invoice=locked,
            type="invoice.amount_changed",
            actor=actor,
            by=by,
            data={"from": before, "to": str(total)},
        )
    return locked


def invoice_issue(*, invoice: Invoice, by: User | None = None, actor: str = Actor.USER) -> Invoice:
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status == InvoiceStatus.DRAFT:
            _check_issuable(locked)
        return _move(
            invoice=locked,
            to=InvoiceStatus.OPEN,
            type="invoice.issued",
            actor=actor,
            by=by,
            updates=_issue_updates(locked),
            allowed=frozenset({InvoiceStatus.DRAFT}),
        )


def invoice_void(
    *, invoice: Invoice, by: User | None = None, actor: str = Actor.USER, note: str = ""
) -> Invoice:
    return _move(
        invoice=invoice, to=InvoiceStatus.VOID, type="invoice.voided", actor=actor, by=by, note=note
    )


def invoice_close(
    *, invoice: Invoice, by: User | None = None, actor: str = Actor.USER, note: str = ""
) -> Invoice:
    if invoice.kind != InvoiceKind.PERMANENT:
        raise InvoiceStateError(
            "Only permanent invoices are closed; one-time invoices close on payment."
        )
    return _move(
        invoice=invoice,
        to=InvoiceStatus.CLOSED,
        type="invoice.closed",
        actor=actor,
        by=by,
        note=note,
    )


def invoice_cancel(
    *, invoice: Invoice, by: User | None = None, actor: str = Actor.USER, note: str = ""
) -> Invoice:
    if invoice.status not in (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING):
        raise InvoiceStateError("Only open or processing invoices can be cancelled.")
    return _move(
        invoice=invoice,
        to=InvoiceStatus.FAILED,
        type="invoice.cancelled",
        actor=actor,
        by=by,
        note=note,
        updates={"failure_reason": FailureReason.CANCELLED},
        allowed=frozenset({InvoiceStatus.OPEN, InvoiceStatus.PROCESSING}),
    )


def invoice_mark_paid(
    *, invoice: Invoice, reference: str, by: User | None = None, actor: str = Actor.USER
) -> Invoice:
    """Record a payment that arrived outside the platform (bank wire, cash, another wallet).

    It changes the invoice only; no crypto holdings move, so the ledger is not touched.
    """
    reference = reference.strip()
    if not reference:
        raise ValidationError(
            {"reference": "Say how it was paid (e.g. the bank transfer reference)."}
        )
    if invoice.kind == InvoiceKind.PERMANENT:
        raise InvoiceStateError(
            "Permanent invoices stay open for more payments; close them instead."
        )
    if invoice.status == InvoiceStatus.DRAFT:
        raise InvoiceStateError("Issue the invoice before marking it as paid.")
    if invoice.status in FINAL_STATUSES:
        raise InvoiceStateError(f"The invoice is already {invoice.get_status_display().lower()}.")
    # Imported here: delivery builds on the services in this module.
    from invoices.delivery import ReceiptInput, invoice_paid_deliver

    with transaction.atomic():
        paid = _move(
            invoice=invoice,
            to=InvoiceStatus.PAID,
            type="invoice.marked_paid",
            actor=actor,
            by=by,
            note=reference,
            data={"reference": reference},
        )
        # The payer gets a receipt; the merchant needs no news of what it did itself.
        invoice_paid_deliver(
            invoice=paid,
            notify_merchant=False,
            receipt=ReceiptInput(
                key="off-platform",
                paid_at=paid.updated_at,
                amount=paid.total,
                method="Paid outside Stablebill",
                reference=reference,
            ),
        )
    return paid


def invoice_accept_unresolved(
    *, invoice: Invoice, note: str, by: User | None = None, actor: str = Actor.USER
) -> Invoice:
    """The merchant accepts an overpaid or late payment as settling the invoice."""
    note = note.strip()
    if not note:
        raise ValidationError(
            {"note": "Say why the payment is accepted (e.g. keep the extra as a tip)."}
        )
    return _move(
        invoice=invoice,
        to=InvoiceStatus.PAID,
        type="invoice.accepted",
        actor=actor,
        by=by,
        note=note,
        allowed=frozenset({InvoiceStatus.UNRESOLVED}),
    )


def invoice_payment_status(
    *,
    invoice: Invoice,
    to: str,
    type: str,
    note: str = "",
    data: dict[str, Any] | None = None,
    failure_reason: str = "",
) -> Invoice:
    """Move an invoice because of what happened to its payments (the checkout's settlement).

    The transition table still decides; an invoice already at `to` only gets the event.
    """
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status == to:
            _record(
                invoice=locked,
                type=type,
                actor=Actor.SYSTEM,
                by=None,
                note=note,
                data=data,
                from_status=to,
                to_status=to,
            )
            return locked
        updates = {"failure_reason": failure_reason} if failure_reason else {}
        return _move(
            invoice=locked,
            to=to,
            type=type,
            actor=Actor.SYSTEM,
            by=None,
            note=note,
            data=data,
            updates=updates,
        )


def invoice_record_event(
    *, invoice: Invoice, type: str, note: str = "", data: dict[str, Any] | None = None
) -> InvoiceEvent:
    """A timeline entry that changes no status (a deposit seen on an invoice already processing)."""
    return _record(invoice=invoice, type=type, actor=Actor.SYSTEM, by=None, note=note, data=data)


# Internals ---------------------------------------------------------------------------------


def _move(
    *,
    invoice: Invoice,
    to: str,
    type: str,
    actor: str,
    by: User | None,
    note: str = "",
    data: dict[str, Any] | None = None,
    updates: dict[str, Any] | None = None,
    allowed: frozenset[str] | None = None,
) -> Invoice:
    allowed = sources_of(to) if allowed is None else allowed & sources_of(to)
    now = timezone.now()
    fields: dict[str, Any] = {"status": to, "updated_at": now, **(updates or {})}
    if to in FINAL_STATUSES:
        fields["finalized_at"] = now
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status not in allowed:
            raise InvoiceStateError(
                f"A {locked.get_status_display().lower()} invoice cannot become "
                f"{InvoiceStatus(to).label.lower()}."
            )
        # Conditional UPDATE as a second guard: it changes nothing if the status moved meanwhile.
        changed = Invoice.objects.filter(pk=locked.pk, status=locked.status).update(**fields)
        if changed != 1:
            raise InvoiceStateError("The invoice changed meanwhile; reload and try again.")
        _record(
            invoice=locked,
            type=type,
            actor=actor,
            by=by,
            note=note,
            data=data or {},
            from_status=locked.status,
            to_status=to,
        )
        for key, value in fields.items():
            setattr(locked, key, value)
    return locked


def _record(
    *,
    invoice: Invoice,
    type: str,
    actor: str,
    by: User | None,
    note: str = "",
    data: dict[str, Any] | None = None,
    from_status: str = "",
    to_status: str = "",
) -> InvoiceEvent:
    event = InvoiceEvent.objects.create(
        invoice=invoice,
        type=type,
        actor=actor,
        actor_user=by,
        note=note,
        data=data or {},
        from_status=from_status,
        to_status=to_status or invoice.status,
    )
    # The outbox rows go in with the event: both commit with the change, or neither does.
    callbacks_enqueue(event=event)
    return event


def _issue_updates(invoice: Invoice) -> dict[str, Any]:
    now = timezone.now()
    updates: dict[str, Any] = {"issued_at": now}
    if invoice.pricing_mode != PricingMode.NO_TIMER:
        # The timer runs from the moment the invoice goes out, not from when a draft was begun.
        updates["expires_at"] = now + timedelta(minutes=settings.INVOICE_TIMER_MINUTES)
    return updates


def _check_issuable(invoice: Invoice) -> None:
    if invoice.kind == InvoiceKind.ONE_TIME and invoice.total <= 0:
        raise ValidationError("Add at least one priced line item before issuing the invoice.")


def _apply(*, invoice: Invoice, data: InvoiceInput, merchant: Merchant) -> None:
    currency = get_currency(data.currency)
    invoice.customer = data.customer
    invoice.currency = currency.code
    invoice.description = data.description.strip()
    invoice.due_date = data.due_date
    invoice.kind = data.kind
    invoice.pricing_mode = data.pricing_mode
    invoice.accepted_assets = list(data.accepted_assets)
    invoice.fee_payer = data.fee_payer or merchant.default_fee_payer
    invoice.foreign_id = data.foreign_id.strip()
    for key in INTEGRATION_FIELDS:
        setattr(invoice, key, getattr(data, key).strip())
    invoice.subtotal, invoice.total = invoice_totals(data.items, currency)


def _write_items(*, invoice: Invoice, items: list[LineItemInput]) -> None:
    currency = get_currency(invoice.currency)
    LineItem.objects.bulk_create(
        LineItem(
            invoice=invoice,
            position=position,
            name=item.name.strip(),
            description=item.description.strip(),
            quantity=item.quantity,
            unit_price=item.unit_price,
            amount=line_amount(item, currency),
        )
        for position, item in enumerate(items, start=1)
    )


def _check_urls(fields: dict[str, str]) -> None:
    validate = URLValidator(schemes=["https", "http"])
    errors = {}
    for key in ("callback_url", "payment_page_url"):
        if fields.get(key):
            try:
                validate(fields[key])
            except ValidationError:
                errors[key] = "Enter a full http(s) URL."
    if fields.get("callback_url") and "callback_url" not in errors:
        try:
            check_callback_url(fields["callback_url"], field="callback_url")
        except ValidationError as error:
            errors["callback_url"] = error.message_dict["callback_url"][0]
    if errors:
        raise ValidationError(errors)


def _check_items(
    items: list[LineItemInput], currency: Currency, add: Callable[[str, str], None]
) -> None:
    item_errors = False
    for index, item in enumerate(items):
        if not item.name.strip():
            add(f"items.{index}.name", "Name the item.")
            item_errors = True
        for key, check, value in (
            ("quantity", check_quantity, item.quantity),
            ("unit_price", lambda price: check_price(price, currency), item.unit_price),
        ):
            try:
                check(value)
            except ValidationError as error:
                item_errors = True
                for message in error.messages:
                    add(f"items.{index}.{key}", message)
    if not item_errors:
        try:
            check_total(invoice_totals(items, currency)[1], currency)
        except ValidationError as error:
            add("items", error.messages[0])


def _validate(*, merchant: Merchant, data: InvoiceInput, invoice: Invoice | None = None) -> None:
    """Refuse anything that must not be stored; every problem is reported at once, by field."""
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    try:
        currency = get_currency(data.currency)
    except UnknownCurrency:
        add("currency", f"Unknown currency {data.currency!r}.")
        raise ValidationError(errors) from None
    if invoice is None or invoice.currency != currency.code:
        gap = price_gap(currency.code)
        if gap:
            add("currency", f"{currency.code} cannot be priced right now: {gap}")

    if data.customer is not None and data.customer.merchant_id != merchant.pk:
        add("customer", "Choose one of your customers.")
    if data.kind not in InvoiceKind.values:
        add("kind", "Choose one-time or permanent.")
    if data.pricing_mode not in PricingMode.values:
        add("pricing_mode", "Choose a pricing mode.")
    if data.fee_payer and data.fee_payer not in FeePayer.values:
        add("fee_payer", "Choose who pays the fee.")
    unknown_assets = [code for code in data.accepted_assets if code not in PAYMENT_ASSETS]
    if unknown_assets:
        add("accepted_assets", f"Unknown payment asset: {', '.join(map(str, unknown_assets))}.")
    kept = set(invoice.accepted_assets) if invoice is not None else set()
    unpriced = [
        code
        for code in data.accepted_assets
        if code in PAYMENT_ASSETS and code not in kept and price_gap(code)
    ]
    if unpriced:
        add(
            "accepted_assets",
            f"{', '.join(unpriced)} cannot be priced right now: {price_gap(unpriced[0])}",
        )
    if len(set(data.accepted_assets)) != len(data.accepted_assets):
        add("accepted_assets", "Each asset may be listed once.")
    if data.pricing_mode == PricingMode.TIMER_FIXED_ASSET and len(data.accepted_assets) != 1:
        add("accepted_assets", "A pre-selected currency needs exactly one accepted asset.")
    # A past due date is refused when set, not when an old draft that already had it is saved.
    due_date_changed = invoice is None or invoice.due_date != data.due_date
    if data.due_date is not None and data.due_date < timezone.localdate() and due_date_changed:
        add("due_date", "The due date is in the past.")

    _check_items(data.items, currency, add)

    try:
        _check_urls({"callback_url": data.callback_url, "payment_page_url": data.payment_page_url})
    except ValidationError as error:
        for key, messages in error.message_dict.items():
            for message in messages:
                add(key, message)

    foreign_id = data.foreign_id.strip()
    if foreign_id:
        clash = Invoice.objects.filter(merchant=merchant, foreign_id=foreign_id)
        if invoice is not None:
            clash = clash.exclude(pk=invoice.pk)
        if clash.exists():
            add("foreign_id", DUPLICATE_FOREIGN_ID)
    if errors:
        raise ValidationError(errors)
