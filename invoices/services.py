"""Every write to an invoice goes through here.

Status changes lock the invoice row, check the move against `TRANSITIONS`, and write the
`InvoiceEvent` in the same transaction, so the timeline can never disagree with the status.
"""

import copy
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F
from django.utils import timezone

from customers.models import Customer
from invoices.callbacks import callbacks_enqueue
from invoices.document import document_snapshot
from invoices.models import (
    FINAL_STATUSES,
    ON_CHAIN_REFUND,
    OUTSIDE_REFUND,
    Actor,
    CreditNote,
    FailureReason,
    Invoice,
    InvoiceEvent,
    InvoiceKind,
    InvoiceStatus,
    LineItem,
    PaymentMethod,
    PricingMode,
    TaxRate,
    sources_of,
)
from invoices.rules import (
    NO_DISCOUNT,
    CreditableLine,
    Discount,
    InvoiceFigures,
    LineItemInput,
    check_credit_quantity,
    check_discount,
    check_line_amount,
    check_percent,
    check_price,
    check_quantity,
    check_total,
    compute_invoice,
    credit_line,
)
from invoices.selectors import credited_quantities
from merchants.integrations import check_callback_url
from merchants.models import FeePayer, Merchant, User, WebhookEndpoint
from merchants.money import (
    PAYMENT_ASSETS,
    Currency,
    UnknownCurrency,
    get_currency,
    price_gap,
    quantize,
)
from merchants.validators import without_nul

MAX_TERMS_DAYS = 365
TEXT_LIMITS = {"notes": 5000, "terms": 5000, "po_number": 64, "footer": 1000}
NEEDS_POSITIVE_TOTAL = "A one-time invoice needs a positive total."
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
    discount: Discount = NO_DISCOUNT
    notes: str = ""
    terms: str = ""
    terms_days: int | None = None
    po_number: str = ""
    footer: str = ""
    payment_methods: list[PaymentMethod] = field(default_factory=list)


INTEGRATION_FIELDS = ("tracking_id", "callback_url", "payment_page_url", "payment_page_button")


def invoice_create(
    *,
    merchant: Merchant,
    data: InvoiceInput,
    by: User | None = None,
    actor: str = Actor.USER,
    issue: bool = False,
    whole_for_snapshot: bool = False,
) -> Invoice:
    """A new invoice, numbered. `whole_for_snapshot`: return it with its items, methods and
    (no) credit notes already loaded, for one `invoice_snapshot` right away; not for keeping."""
    _validate(merchant=merchant, data=data)
    # Everything but the number is worked out before the transaction, so the merchant's
    # numbering lock (taken by the first statement in it) is held for a few inserts only.
    invoice = Invoice(merchant=merchant, created_by=by)
    _apply(invoice=invoice, data=data, merchant=merchant)
    if issue:
        # Born open: the invoice.created callback then already shows what the payer can pay,
        # instead of a draft that changes a moment later.
        _check_issuable(invoice)
        invoice.status = InvoiceStatus.OPEN
        for key, value in _issue_updates(invoice).items():
            setattr(invoice, key, value)
    rows = line_item_rows(
        invoice=invoice,
        items=data.items,
        currency=get_currency(invoice.currency),
        discount=data.discount,
    )
    methods = list(data.payment_methods)
    if issue:
        invoice.preview_methods = methods  # type: ignore[attr-defined]
        invoice.document = document_snapshot(invoice)
    links = [
        Invoice.payment_methods.through(invoice=invoice, paymentmethod=method) for method in methods
    ]
    # The timeline still tells it as created, then issued; the callback's snapshot shows the
    # invoice as it is, open.
    events = [
        _event(
            invoice=invoice,
            type="invoice.created",
            actor=actor,
            by=by,
            to_status=InvoiceStatus.DRAFT,
        )
    ]
    if issue:
        events.append(
            _event(
                invoice=invoice,
                type="invoice.issued",
                actor=actor,
                by=by,
                from_status=InvoiceStatus.DRAFT,
                to_status=InvoiceStatus.OPEN,
            )
        )
    try:
        written = None
        if _in_one_statement() and not connection.in_atomic_block and not invoice.callback_url:
            # Outside a transaction the statement is a transaction of its own: a creation
            # with no callback to write (no endpoint, no callback URL) is then one round trip
            # where BEGIN, the statement and COMMIT were three.
            written = _insert_whole(
                merchant=merchant,
                invoice=invoice,
                links=links,
                items=rows,
                events=events,
                unless_hooked=True,
            )
        if written is None:
            # Only a foreign ID can meet a unique violation worth answering (a twin
            # request): then the savepoint keeps the transaction usable to look the twin up.
            with transaction.atomic(savepoint=bool(invoice.foreign_id)):
                hooked = _number_and_insert(
                    merchant=merchant, invoice=invoice, links=links, items=rows, events=events
                )
                # Most merchants have no endpoint: the UPDATE said so, and a separate read
                # of none is left out. An endpoint added meanwhile misses this invoice
                # either way, as the lock is on the merchant row, not on its endpoints.
                endpoints = (
                    list(WebhookEndpoint.objects.filter(merchant_id=merchant.pk)) if hooked else []
                )
                whole = _whole(invoice, items=rows, methods=methods)
                for event in events:
                    callbacks_enqueue(event=event, invoice=whole, endpoints=endpoints)
        else:
            # No endpoint and no callback URL: callbacks_enqueue would write no outbox row.
            whole = _whole(invoice, items=rows, methods=methods)
    except IntegrityError:
        # Two requests with the same foreign ID raced past the check in _validate.
        foreign_id = invoice.foreign_id
        if foreign_id and Invoice.objects.filter(merchant=merchant, foreign_id=foreign_id).exists():
            raise ValidationError({"foreign_id": DUPLICATE_FOREIGN_ID}) from None
        raise
    return whole if whole_for_snapshot else invoice


def _whole(invoice: Invoice, *, items: list[LineItem], methods: list[PaymentMethod]) -> Invoice:
    """The new invoice whole (its items, its methods, no credit notes yet), for the callback's
    snapshot and, on request, the caller's, without reading it back. A copy: the caches
    would go stale on an invoice that lives on and changes."""
    whole = copy.copy(invoice)
    _prefetched(whole, "items", items)
    _prefetched(whole, "credit_notes", [])
    _prefetched(whole, "payment_methods", methods)
    return whole


def _in_one_statement() -> bool:
    """Whether a creation goes to the database as one statement (_insert_whole): on
    PostgreSQL, unless the operator asked for server-side binding (OPTIONS
    server_side_binding), under which the statement's untyped parameters are not tried."""
    return connection.vendor == "postgresql" and not connection.settings_dict["OPTIONS"].get(
        "server_side_binding"
    )


def _number_and_insert(
    *,
    merchant: Merchant,
    invoice: Invoice,
    links: list[Any],
    items: list[LineItem],
    events: list[InvoiceEvent],
) -> bool:
    """Number the invoice and insert it with its rows, inside the caller's transaction;
    whether the merchant has a webhook endpoint."""
    if _in_one_statement():
        hooked = _insert_whole(
            merchant=merchant,
            invoice=invoice,
            links=links,
            items=items,
            events=events,
            unless_hooked=False,
        )
        assert hooked is not None  # unless_hooked=False writes or raises
        return hooked
    number, prefix, hooked, invoice.pk = _take_invoice_number(merchant)
    invoice.number = number
    invoice.reference = f"{prefix}{number:05d}"
    invoice.save(force_insert=True)
    for obj in (*links, *items, *events):
        # Built before their invoice had its id: they take it now (fill_merchant needs it).
        obj.invoice = invoice
    if links:
        Invoice.payment_methods.through.objects.bulk_create(links)
    LineItem.objects.bulk_create(items)
    InvoiceEvent.objects.bulk_create(events)
    return hooked


def _take_invoice_number(merchant: Merchant) -> tuple[int, str, bool, int | None]:
    """The merchant's next invoice number, its prefix, whether it has a webhook endpoint and
    (on PostgreSQL) the new invoice's id from its sequence, counted on in the same statement.

    The UPDATE locks the merchant row until the transaction ends, so concurrent creations
    queue here and numbers neither repeat nor skip (a rolled-back creation gives its number
    back). One statement where a SELECT ... FOR UPDATE, an UPDATE and a read of the
    endpoints were three.
    """
    meta = Merchant._meta
    quote = connection.ops.quote_name
    counter = quote(str(meta.get_field("next_invoice_number").column))
    prefix = quote(str(meta.get_field("invoice_prefix").column))
    table = quote(meta.db_table)
    pk = quote(str(meta.pk.column))
    hooks = WebhookEndpoint._meta
    hooks_table = quote(hooks.db_table)
    hooks_merchant = quote(str(hooks.get_field("merchant").column))
    invoice_id = "NULL"
    params: list[Any] = [merchant.pk]
    if connection.vendor == "postgresql":
        invoice_id = "nextval(pg_get_serial_sequence(%s, %s))"
        params += [quote(Invoice._meta.db_table), str(Invoice._meta.pk.column)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {counter} = {counter} + 1 "  # noqa: S608
            f"WHERE {pk} = %s RETURNING {counter} - 1, {prefix}, EXISTS "
            f"(SELECT 1 FROM {hooks_table} WHERE {hooks_table}.{hooks_merchant} = {table}.{pk}), "
            f"{invoice_id}",
            params,
        )
        row = cursor.fetchone()
    if row is None:
        raise Merchant.DoesNotExist(f"Merchant {merchant.pk} is gone.")
    return int(row[0]), str(row[1]), bool(row[2]), row[3]


def _insert_whole(
    *,
    merchant: Merchant,
    invoice: Invoice,
    links: list[Any],
    items: list[LineItem],
    events: list[InvoiceEvent],
    unless_hooked: bool,
) -> bool | None:
    """Number a new invoice and insert it with its payment-method links, items and events,
    in one statement (PostgreSQL): whether the merchant has a webhook endpoint; the events
    come back with their ids (the outbox rows name them), the links and items without
    (nothing reads them by id). `unless_hooked`: write nothing for a merchant with an
    endpoint (None), as its outbox rows must commit with the invoice.

    Its first part, the UPDATE of the merchant's counter, locks the merchant row until the
    transaction ends, so concurrent creations queue there and numbers neither repeat nor
    skip (a failed creation gives its number back); the invoice's id comes from its
    sequence in the same part, and the INSERTs take both from it.
    """
    for event in events:
        event.merchant_id = invoice.merchant_id  # what fill_merchant does once it has the id
    sequence = [connection.ops.quote_name(Invoice._meta.db_table), Invoice._meta.pk.column]
    params: list[Any] = [merchant.pk, *sequence]
    params.append(_rows_json(_row(invoice)))
    for rows in (links, items, events):
        params.append(_rows_json([_row(obj) for obj in rows]))
    sql = _creation_sql(unless_hooked=unless_hooked)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        if unless_hooked:
            return None  # hooked (or gone: the transactional way says so)
        raise Merchant.DoesNotExist(f"Merchant {merchant.pk} is gone.")
    invoice.number, invoice.reference, hooked, invoice.pk, event_ids = row
    for obj in (*links, *items, *events):
        # Built before their invoice had its id: they take it now, as bulk_create does.
        prepare = obj._prepare_related_fields_for_save  # type: ignore[attr-defined]
        prepare(operation_name="bulk_create")
    for obj in (invoice, *links, *items, *events):
        obj._state.adding = False
        obj._state.db = connection.alias
    for event, event_id in zip(events, event_ids, strict=True):
        event.pk = event_id
    return bool(hooked)


# Columns the creation statement fills from its UPDATE rather than from parameters.
_FROM_NUMBERING: dict[type[models.Model], tuple[str, ...]] = {
    Invoice: ("id", "number", "reference")
}


@functools.cache
def _written_fields(model: type[models.Model]) -> list[Any]:
    """The fields of `model` a creation writes from parameters, in column order: all but the
    id and the invoice (or the number and reference, for the invoice), which come from the
    numbering UPDATE."""
    skip = _FROM_NUMBERING.get(model, ("id", "invoice"))
    return [
        f
        for f in model._meta.concrete_fields
        if not f.generated and f.name not in skip  # type: ignore[attr-defined]
    ]


def _row(obj: models.Model) -> dict[str, Any]:
    """A new row's values as save and bulk_create write them (auto_now_add filled in), by
    column."""
    row = {}
    for f in _written_fields(type(obj)):
        value = f.pre_save(obj, add=True)
        if hasattr(value, "resolve_expression"):
            raise TypeError(f"{f}: an expression has no place in a new row's values")
        # A JSONField's value goes into the JSON as it is (none of ours has an encoder).
        is_json = isinstance(f, models.JSONField)
        row[f.column] = value if is_json else f.get_db_prep_save(value, connection)
    return row


def _as_json(value: Any) -> Any:
    # The column types' text forms, as PostgreSQL reads them back in jsonb_populate_record.
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # and datetime, aware: with its offset
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not written by a creation")


def _rows_json(rows: list[dict[str, Any]] | dict[str, Any]) -> str:
    return json.dumps(rows, default=_as_json, ensure_ascii=False, separators=(",", ":"))


@functools.cache
def _creation_sql(*, unless_hooked: bool) -> str:
    """The creation statement, built once per process.

    Each table's rows travel as one JSON parameter, read into the table's own row type by
    jsonb_populate_record(set): every value is read as its column's type reads it (a value
    too long for its column is refused, a price rounded to the column's scale, as in a plain
    INSERT), and the statement's text is the same whatever the number of items, where a
    parameter per value made one text per shape, of hundreds of parameters to bind.
    """
    quote = connection.ops.quote_name
    meta = Merchant._meta
    table = quote(meta.db_table)
    pk = quote(str(meta.pk.column))
    counter = quote(str(meta.get_field("next_invoice_number").column))
    prefix = quote(str(meta.get_field("invoice_prefix").column))
    hooks = WebhookEndpoint._meta
    hooks_table = quote(hooks.db_table)
    hooks_merchant = quote(str(hooks.get_field("merchant").column))
    hooks_match = f"{hooks_table}.{hooks_merchant} = {table}.{pk}"
    has_hooks = f"EXISTS (SELECT 1 FROM {hooks_table} WHERE {hooks_match})"  # noqa: S608
    number = f"({counter} - 1)"
    guard = f" AND NOT {has_hooks}" if unless_hooked else ""
    # The reference as f"{prefix}{number:05d}" writes it: zero-padded to five digits at least.
    reference = f"{prefix} || lpad({number}::text, greatest(5, length({number}::text)), '0')"
    ctes = [
        f"m AS (UPDATE {table} SET {counter} = {counter} + 1 WHERE {pk} = %s{guard} "  # noqa: S608
        f"RETURNING {number} AS number, {reference} AS reference, {has_hooks} AS hooked, "
        "nextval(pg_get_serial_sequence(%s, %s)) AS id)"
    ]

    def columns(model: type[models.Model], prefix: str = "") -> str:
        return ", ".join(prefix + quote(str(f.column)) for f in _written_fields(model))

    invoice = Invoice._meta
    ends = ", ".join(
        quote(str(invoice.get_field(name).column))  # type: ignore[union-attr]
        for name in _FROM_NUMBERING[Invoice]
    )
    ctes.append(
        f"i AS (INSERT INTO {quote(invoice.db_table)} ({ends}, {columns(Invoice)}) "  # noqa: S608
        f"SELECT m.id, m.number, m.reference, {columns(Invoice, 'r.')} FROM m, "
        f"jsonb_populate_record(NULL::{quote(invoice.db_table)}, %s::jsonb) AS r)"
    )
    for name, model in (
        ("l", Invoice.payment_methods.through),
        ("it", LineItem),
        ("e", InvoiceEvent),
    ):
        db_table = quote(model._meta.db_table)
        fk = quote(str(model._meta.get_field("invoice").column))
        # In the order given, so the events' ids follow the timeline.
        returning = f" RETURNING {quote(str(model._meta.pk.column))}" if name == "e" else ""
        ctes.append(
            f"{name} AS (INSERT INTO {db_table} ({fk}, {columns(model)}) "  # noqa: S608
            f"SELECT m.id, {columns(model, 'r.')} FROM m, "
            f"jsonb_populate_recordset(NULL::{db_table}, %s::jsonb) WITH ORDINALITY AS r "
            f"ORDER BY r.ordinality{returning})"
        )
    event_pk = quote(str(InvoiceEvent._meta.pk.column))
    event_ids = f"ARRAY(SELECT e.{event_pk} FROM e ORDER BY e.{event_pk})"  # noqa: S608
    answer = f"SELECT m.number, m.reference, m.hooked, m.id, {event_ids} FROM m"  # noqa: S608
    return f"WITH {', '.join(ctes)} {answer}"


def _prefetched(instance: Any, name: str, rows: list[Any]) -> None:
    """Fill a related manager's cache with rows already in hand, as prefetch_related would,
    so reading them back (`invoice.items.all()`) costs no query."""
    queryset = getattr(instance, name).get_queryset()
    queryset._result_cache = list(rows)
    queryset._prefetch_done = True
    instance._prefetched_objects_cache = getattr(instance, "_prefetched_objects_cache", {})
    instance._prefetched_objects_cache[name] = queryset


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
            locked.payment_methods.set(data.payment_methods)
            locked.items.all().delete()
            _write_items(invoice=locked, items=data.items, discount=data.discount)
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
    discount = Discount(invoice.discount_kind, invoice.discount_value)
    _check_items(
        items,
        currency,
        lambda key, message: errors.setdefault(key, []).append(message),
        merchant=invoice.merchant,
        discount=discount,
    )
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
                "notes", "terms", "terms_days", "po_number", "footer",
            ):  # fmt: skip
                setattr(data, key, getattr(locked, key))
            data.discount = discount
            data.payment_methods = list(locked.payment_methods.all())
            return invoice_update_draft(invoice=locked, data=data, by=by, actor=actor)
        if locked.status != InvoiceStatus.OPEN:
            raise InvoiceStateError(
                f"The amount of a {locked.get_status_display().lower()} invoice cannot change."
            )
        # `payments` is the checkout's relation; asked by name, so invoices need not import it.
        if locked.payments.exists():  # type: ignore[attr-defined]
            raise InvoiceStateError("A payment was started; the amount can no longer change.")
        figures = compute_invoice(items, currency, discount)
        total = figures.total
        if locked.kind == InvoiceKind.ONE_TIME and total <= 0:
            raise ValidationError({"items": NEEDS_POSITIVE_TOTAL})
        before = str(locked.total)
        invoice_apply_figures(invoice=locked, figures=figures)
        locked.save(update_fields=[*FIGURE_FIELDS, "updated_at"])
        locked.items.all().delete()
        _write_items(invoice=locked, items=items, discount=discount)
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
        updates = _issue_updates(locked)
        updates["document"] = document_snapshot(locked)
        return _move(
            invoice=locked,
            to=InvoiceStatus.OPEN,
            type="invoice.issued",
            actor=actor,
            by=by,
            updates=updates,
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
    *,
    invoice: Invoice,
    reference: str,
    method: PaymentMethod | None = None,
    by: User | None = None,
    actor: str = Actor.USER,
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
    if method is not None and method.merchant_id != invoice.merchant_id:
        raise ValidationError({"method": "Choose one of your payment methods."})
    method_name = method.name if method is not None else "Paid outside Stablebill"
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
            data={
                "reference": reference,
                "method": method_name,
                "method_id": method.pk if method is not None else None,
            },
        )
        # The payer gets a receipt; the merchant needs no news of what it did itself.
        invoice_paid_deliver(
            invoice=paid,
            notify_merchant=False,
            receipt=ReceiptInput(
                key="off-platform",
                paid_at=paid.updated_at,
                amount=paid.total,
                method=method_name,
                reference=reference,
            ),
        )
    return paid


def invoice_accept_unresolved(
    *, invoice: Invoice, note: str, by: User | None = None, actor: str = Actor.USER
) -> Invoice:
    """The merchant accepts an overpaid or late payment as settling the invoice."""
    note = without_nul(note).strip()
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
    *,
    invoice: Invoice,
    type: str,
    note: str = "",
    data: dict[str, Any] | None = None,
    actor: str = Actor.SYSTEM,
    by: User | None = None,
) -> InvoiceEvent:
    """A timeline entry that changes no status (a deposit seen on an invoice already processing)."""
    return _record(invoice=invoice, type=type, actor=actor, by=by, note=note, data=data)


def invoice_set_refund_state(*, invoice: Invoice, state: str) -> None:
    """Refunded or partially refunded, as the checkout's confirmed refunds add up; call it in
    the refund's transaction."""
    Invoice.objects.filter(pk=invoice.pk).update(refund_state=state, updated_at=timezone.now())
    invoice.refund_state = state


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


def _event(
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
    return InvoiceEvent(
        invoice=invoice,
        type=type,
        actor=actor,
        actor_user=by,
        note=note,
        data=data or {},
        from_status=from_status,
        to_status=to_status or invoice.status,
    )


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
    event = _event(
        invoice=invoice,
        type=type,
        actor=actor,
        by=by,
        note=note,
        data=data,
        from_status=from_status,
        to_status=to_status,
    )
    event.save(force_insert=True)
    # The outbox rows go in with the event: both commit with the change, or neither does.
    callbacks_enqueue(event=event)
    return event


def _issue_updates(invoice: Invoice) -> dict[str, Any]:
    now = timezone.now()
    updates: dict[str, Any] = {"issued_at": now}
    if invoice.terms_days is not None:
        # Net N counts from the day the invoice goes out, in the site's time zone.
        updates["due_date"] = timezone.localdate(now) + timedelta(days=invoice.terms_days)
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
    for key in ("notes", "terms", "po_number", "footer"):
        setattr(invoice, key, getattr(data, key).strip())
    invoice.terms_days = data.terms_days
    invoice.discount_kind = data.discount.kind if data.discount else ""
    invoice.discount_value = data.discount.value if data.discount else Decimal(0)
    invoice_apply_figures(
        invoice=invoice, figures=compute_invoice(data.items, currency, data.discount)
    )


FIGURE_FIELDS = ("subtotal", "discount_total", "tax_total", "tax_summary", "total")


def invoice_apply_figures(*, invoice: Invoice, figures: InvoiceFigures) -> None:
    """Set the computed totals on an (unsaved) invoice; the caller saves."""
    invoice.subtotal = figures.subtotal
    invoice.discount_total = figures.discount
    invoice.tax_total = figures.tax_total
    invoice.tax_summary = tax_summary(figures)
    invoice.total = figures.total


def tax_summary(figures: InvoiceFigures) -> list[dict[str, Any]]:
    return [
        {
            "name": tax.name,
            "percent": format(tax.percent.normalize(), "f"),
            "inclusive": tax.inclusive,
            "taxable": str(tax.taxable),
            "tax": str(tax.tax),
        }
        for tax in figures.taxes
    ]


def _write_items(
    *, invoice: Invoice, items: list[LineItemInput], discount: Discount = NO_DISCOUNT
) -> None:
    currency = get_currency(invoice.currency)
    LineItem.objects.bulk_create(
        line_item_rows(invoice=invoice, items=items, currency=currency, discount=discount)
    )


def line_item_rows(
    *, invoice: Invoice, items: list[LineItemInput], currency: Currency, discount: Discount
) -> list[LineItem]:
    """Unsaved rows with every computed figure; the editor's preview shows them unsaved."""
    figures = compute_invoice(items, currency, discount)
    return [
        LineItem(
            invoice=invoice,
            position=position,
            name=item.name.strip(),
            description=item.description.strip(),
            quantity=item.quantity,
            unit_price=item.unit_price,
            amount=line.net,
            discount_kind=item.discount.kind if item.discount else "",
            discount_value=item.discount.value if item.discount else Decimal(0),
            discount_amount=line.discount,
            invoice_discount_amount=line.invoice_discount,
            tax_rate_id=item.tax.rate_id if item.tax else None,
            tax_name=item.tax.name if item.tax else "",
            tax_percent=item.tax.percent if item.tax else None,
            tax_inclusive=item.tax.inclusive if item.tax else False,
            tax_amount=line.tax,
        )
        for position, (item, line) in enumerate(zip(items, figures.lines, strict=True), start=1)
    ]


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
    items: list[LineItemInput],
    currency: Currency,
    add: Callable[[str, str], None],
    *,
    merchant: Merchant,
    discount: Discount = NO_DISCOUNT,
) -> None:
    item_errors = False
    for index, item in enumerate(items):
        if not item.name.strip():
            add(f"items.{index}.name", "Name the item.")
            item_errors = True
        # Each line is judged on its own, so one request learns of every line's problem.
        line_ok = True
        for key, check, value in (
            ("quantity", check_quantity, item.quantity),
            ("unit_price", lambda price: check_price(price, currency), item.unit_price),
        ):
            try:
                check(value)
            except ValidationError as error:
                line_ok = False
                for message in error.messages:
                    add(f"items.{index}.{key}", message)
        if line_ok:
            try:
                check_line_amount(item.quantity, item.unit_price, currency)
            except ValidationError as error:
                line_ok = False
                add(f"items.{index}.unit_price", error.messages[0])
        if item.tax is not None:
            try:
                check_percent(item.tax.percent, what="The tax rate")
            except ValidationError as error:
                item_errors = True
                add(f"items.{index}.tax_rate", error.messages[0])
        if item.discount and line_ok:
            try:
                check_discount(item.discount, item.quantity * item.unit_price, currency)
            except ValidationError as error:
                line_ok = False
                add(f"items.{index}.discount_value", error.messages[0])
        item_errors = item_errors or not line_ok
    rate_ids = {item.tax.rate_id for item in items if item.tax and item.tax.rate_id}
    if rate_ids:
        known = set(
            TaxRate.objects.filter(merchant=merchant, pk__in=rate_ids).values_list("pk", flat=True)
        )
        for index, item in enumerate(items):
            if item.tax and item.tax.rate_id and item.tax.rate_id not in known:
                item_errors = True
                add(f"items.{index}.tax_rate", "Choose one of your tax rates.")
    if item_errors:
        return
    subtotal = compute_invoice(items, currency).subtotal
    try:
        check_total(subtotal, currency, what="The subtotal")
    except ValidationError as error:
        add("items", error.messages[0])
        return
    if discount:
        try:
            check_discount(discount, subtotal, currency)
        except ValidationError as error:
            add("discount_value", error.messages[0])
            return
    try:
        check_total(compute_invoice(items, currency, discount).total, currency)
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

    _check_items(data.items, currency, add, merchant=merchant, discount=data.discount)
    if data.terms_days is not None and not 0 <= data.terms_days <= MAX_TERMS_DAYS:
        add("terms_days", f"Payment terms run from 0 to {MAX_TERMS_DAYS} days.")
    for key, limit in TEXT_LIMITS.items():
        if len(getattr(data, key)) > limit:
            add(key, f"At most {limit} characters.")
    methods = {method.pk for method in data.payment_methods}
    if methods:
        usable = set(
            PaymentMethod.objects.filter(
                merchant=merchant, pk__in=methods, archived_at__isnull=True
            ).values_list("pk", flat=True)
        )
        if usable != methods:
            add("payment_methods", "Choose among your active payment methods.")

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


# Tax rates and payment methods --------------------------------------------------------------


def tax_rate_save(*, rate: TaxRate) -> TaxRate:
    """Create or update a rate; making it the default takes the flag from the previous one."""
    rate.full_clean(exclude=["merchant"], validate_constraints=False)
    with transaction.atomic():
        if rate.is_default:
            TaxRate.objects.filter(merchant=rate.merchant, is_default=True).exclude(
                pk=rate.pk
            ).update(is_default=False)
        rate.save()
    return rate


def tax_rate_remove(*, rate: TaxRate) -> bool:
    """Delete a rate no line ever used; archive one in use, so every invoice that names it
    keeps it. True when the rate was deleted."""
    with transaction.atomic():
        if LineItem.objects.filter(tax_rate=rate).exists():
            TaxRate.objects.filter(pk=rate.pk).update(archived_at=timezone.now(), is_default=False)
            return False
        rate.delete()
        return True


def payment_method_save(*, method: PaymentMethod) -> PaymentMethod:
    method.full_clean(exclude=["merchant"])
    method.save()
    return method


def payment_method_remove(*, method: PaymentMethod) -> bool:
    """Issued invoices keep their own copy of a method's instructions; drafts simply stop
    offering it. A method an invoice was marked paid with stays, archived, for the record."""
    with transaction.atomic():
        if Invoice.payment_methods.through.objects.filter(paymentmethod=method).exists():
            PaymentMethod.objects.filter(pk=method.pk).update(archived_at=timezone.now())
            return False
        method.delete()
        return True


# Credit notes ------------------------------------------------------------------------------

CREDITABLE = frozenset(
    {InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.PAID, InvoiceStatus.UNRESOLVED}
)


def credit_note_issue(
    *,
    invoice: Invoice,
    reason: str,
    quantities: Mapping[int, Decimal | None] | None = None,
    positions: list[int] | None = None,
    by: User | None = None,
    actor: str = Actor.USER,
) -> CreditNote:
    """Credit an issued invoice: `quantities` maps line positions to the units to credit
    (None: what is left of the line), `positions` credits what is left of those lines, and
    neither credits everything left.
    Amounts follow `rules.credit_line`; no line is ever credited beyond its quantity across
    all credit notes. An invoice credited in full is closed; its customer gets the note."""
    from invoices.delivery import credit_note_deliver  # delivery builds on these services

    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why the invoice is credited."})
    with transaction.atomic():
        # Merchant first, then invoice, like invoice_create: one lock order, no deadlock.
        merchant = (
            Merchant.objects.select_for_update()
            .only("pk", "next_credit_note_number")
            .get(pk=invoice.merchant_id)
        )
        # What is left to credit is read under the invoice's lock, so two credit notes
        # racing for the same units are decided one after the other.
        locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
        if locked.status not in CREDITABLE:
            raise InvoiceStateError(
                f"A {locked.get_status_display().lower()} invoice cannot be credited."
            )
        items = {item.position: item for item in locked.items.all()}
        credited = credited_quantities(locked)
        left = {p: item.quantity - credited.get(p, Decimal(0)) for p, item in items.items()}
        chosen = _credit_choice(left, quantities=quantities, positions=positions)
        currency = get_currency(locked.currency)
        lines = [
            _credit_line(
                items[position], credited=credited.get(position, Decimal(0)), quantity=quantity
            )
            for position, quantity in sorted(chosen.items())
        ]
        amount = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
        if amount <= 0:
            raise ValidationError(
                {
                    "lines": ValidationError(
                        "The chosen lines add up to nothing to credit.", code="nothing_to_credit"
                    )
                }
            )
        number = merchant.next_credit_note_number
        Merchant.objects.filter(pk=merchant.pk).update(
            next_credit_note_number=F("next_credit_note_number") + 1
        )
        note = CreditNote.objects.create(
            merchant_id=merchant.pk,
            invoice=locked,
            number=number,
            reference=f"CN-{number:05d}",
            reason=reason,
            currency=currency.code,
            amount=amount,
            tax=sum((Decimal(line["tax"]) for line in lines), Decimal(0)),
            lines=lines,
            refund=credit_refund_note(locked),
            document=locked.document or document_snapshot(locked),
            created_by=by,
        )
        full = all(left[p] == chosen.get(p, Decimal(0)) for p in items)
        data = {
            "credit_note": note.pk,
            "reference": note.reference,
            "amount": str(amount),
            "full": full,
        }
        if full and locked.status != InvoiceStatus.CLOSED:
            _move(
                invoice=locked,
                to=InvoiceStatus.CLOSED,
                type="invoice.credited",
                actor=actor,
                by=by,
                note=reason,
                data=data,
                allowed=frozenset(
                    {InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.PAID}
                ),
            )
        else:
            _record(
                invoice=locked, type="invoice.credited", actor=actor, by=by, note=reason, data=data
            )
        credit_note_deliver(credit_note=note)
    return note


def credit_refund_note(invoice: Invoice) -> str:
    """What a credit note says of the money back: nothing if none was received."""
    receipts = list(invoice.receipts.only("transfers"))
    if any(receipt.transfers for receipt in receipts):
        return ON_CHAIN_REFUND
    return OUTSIDE_REFUND if receipts else ""


def _credit_choice(
    left: dict[int, Decimal],
    *,
    quantities: Mapping[int, Decimal | None] | None,
    positions: list[int] | None,
) -> dict[int, Decimal]:
    """Position -> units to credit, checked against what is left; field errors by line."""
    if quantities is None and positions is None:
        rest = {p: units for p, units in left.items() if units > 0}
        if not rest:
            raise InvoiceStateError("Every line of this invoice is credited already.")
        return rest
    if quantities is None:
        unknown = [p for p in positions or [] if left.get(p, Decimal(0)) <= 0]
        if unknown or not positions:
            raise ValidationError(
                {"lines": "Choose lines that are on the invoice and not credited yet."}
            )
        return {p: left[p] for p in positions}
    errors: dict[str, list[ValidationError]] = {}
    chosen: dict[int, Decimal] = {}
    for position, units in quantities.items():
        key = f"lines.{position}.quantity"
        if position not in left:
            errors[key] = [ValidationError("This invoice has no such line.", code="no_such_line")]
            continue
        if units is None and left[position] <= 0:
            errors[key] = [
                ValidationError("Nothing is left to credit on this line.", code="nothing_left")
            ]
            continue
        chosen[position] = left[position] if units is None else units
        try:
            check_credit_quantity(chosen[position], remaining=left[position])
        except ValidationError as error:
            errors[key] = error.error_list
    if errors:
        raise ValidationError(errors)
    if not chosen:
        raise ValidationError({"lines": "Choose what to credit."})
    return chosen


def _credit_line(item: LineItem, *, credited: Decimal, quantity: Decimal) -> dict[str, Any]:
    """The credit note's copy of what it credits of one line."""
    currency = get_currency(item.invoice.currency)
    figures = credit_line(
        CreditableLine(
            position=item.position,
            quantity=item.quantity,
            net=item.amount,
            invoice_discount=item.invoice_discount_amount,
            tax=item.tax_amount,
            tax_inclusive=item.tax_inclusive,
        ),
        credited=credited,
        quantity=quantity,
        currency=currency,
    )
    return {
        "position": item.position,
        "name": item.name,
        "quantity": format(quantity.normalize(), "f"),
        "of": format(item.quantity.normalize(), "f"),
        "unit_price": str(quantize(item.unit_price, currency)),
        "amount": str(figures.amount),
        "tax": str(figures.tax),
    }
