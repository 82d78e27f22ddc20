import decimal
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import connections
from django.db.models import Case, Prefetch, Q, QuerySet, Value, When
from django.utils import timezone

from customers.models import Customer
from invoices.compiled import (
    STAND_IN_DATE,
    STAND_IN_DATETIME,
    STAND_IN_ID,
    Compiled,
    fields_of,
    instances,
)
from invoices.models import EmailDelivery, Invoice, InvoiceEvent, InvoiceStatus, InvoiceStatusCount
from merchants.fields import PRECISION, exact_totals_from_rows, exact_totals_query
from merchants.models import Merchant, User
from merchants.validators import parse_id

OUTSTANDING = (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.UNRESOLVED)
SEARCH_CUSTOMERS = 500


def invoice_scope(*, merchant: Merchant) -> QuerySet[Invoice]:
    return Invoice.objects.filter(merchant=merchant)


def email_scope(*, merchant: Merchant) -> QuerySet[EmailDelivery]:
    return EmailDelivery.objects.filter(invoice__merchant=merchant)


def invoice_list(
    *,
    merchant: Merchant,
    status: str = "",
    customer_id: int | None = None,
    created_from: date | None = None,
    created_to: date | None = None,
    query: str = "",
    overdue: bool = False,
) -> QuerySet[Invoice]:
    invoices = invoice_scope(merchant=merchant).select_related("customer")
    if overdue:
        invoices = invoices.filter(status__in=OUTSTANDING, due_date__lt=timezone.localdate())
    if status:
        invoices = invoices.filter(status=status)
    if customer_id is not None:
        invoices = invoices.filter(customer_id=customer_id)
    if created_from is not None:
        invoices = invoices.filter(created_at__date__gte=created_from)
    if created_to is not None:
        invoices = invoices.filter(created_at__date__lte=created_to)
    query = query.strip()
    if query:
        # The start of the number, foreign or tracking ID (an index range each, see
        # invoices.status_counts), the number itself, or anything in a customer's name,
        # email or company: the merchant's customers are searched, not the invoice history.
        customers = Customer.objects.filter(merchant=merchant).filter(
            Q(name__icontains=query) | Q(email__icontains=query) | Q(company__icontains=query)
        )
        # The ids themselves, not a subquery: PostgreSQL ORs index scans together only
        # over plain conditions (a subquery there turns the whole OR into a scan of every
        # invoice). Past SEARCH_CUSTOMERS matches the subquery serves, scan and all.
        found = list(customers.values_list("pk", flat=True)[: SEARCH_CUSTOMERS + 1])
        by_customer = (
            Q(customer__in=customers.values("pk"))
            if len(found) > SEARCH_CUSTOMERS
            else Q(customer_id__in=found)
        )
        matches = (
            Q(reference__istartswith=query)
            | Q(foreign_id__istartswith=query)
            | Q(tracking_id__istartswith=query)
            | by_customer
        )
        if (number := parse_id(query, limit=999_999_999)) is not None:
            matches |= Q(number=number)
        invoices = invoices.filter(matches)
    return invoices.order_by("-created_at", "-pk")


# The dashboard's and the list's queries, compiled once (see invoices.compiled): each page
# runs them on every visit, and building them cost more than running them.
_STATUS_COUNTS = Compiled(
    lambda merchant_id: InvoiceStatusCount.objects.filter(
        merchant_id=merchant_id, n__gt=0
    ).values_list("status", "n"),
    merchant_id=STAND_IN_ID,
)


def invoice_status_counts(*, merchant: Merchant) -> dict[str, int]:
    """How many invoices the merchant has in each status (kept by triggers, one small read)."""
    return dict(_STATUS_COUNTS.rows(merchant_id=merchant.pk))  # type: ignore[arg-type]


def invoice_count(*, merchant: Merchant, status: str = "") -> int:
    counts = invoice_status_counts(merchant=merchant)
    return counts.get(status, 0) if status else sum(counts.values())


def invoice_detail(*, merchant: Merchant, pk: int) -> Invoice:
    """The invoice with everything its page shows, in a fixed number of queries."""
    events = InvoiceEvent.objects.select_related("actor_user").order_by("-created_at", "-pk")
    emails = EmailDelivery.objects.select_related("requested_by").order_by("-created_at", "-pk")
    return (
        invoice_scope(merchant=merchant)
        .select_related("customer", "created_by")
        .prefetch_related(
            "items",
            "receipts",
            "payment_methods",
            "credit_notes",
            Prefetch("events", queryset=events),
            Prefetch("emails", emails),
        )
        .get(pk=pk)
    )


@dataclass(frozen=True)
class CurrencyTotal:
    currency: str
    amount: Decimal
    count: int


@dataclass(frozen=True)
class DashboardSummary:
    status_counts: dict[str, int]
    outstanding: list[CurrencyTotal]
    paid_recently: list[CurrencyTotal]
    overdue_count: int
    recent_invoices: list[Invoice]
    recent_events: list[InvoiceEvent]


_RECENT_INVOICES = Compiled(
    lambda merchant_id: (
        Invoice.objects.filter(merchant_id=merchant_id)
        .order_by("-created_at", "-pk")
        .values_list(*fields_of(Invoice), *fields_of(Customer, "customer__"))[:6]
    ),
    merchant_id=STAND_IN_ID,
)
# The merchant's latest events from one range of event_merchant_recent_idx: their invoices
# are joined by primary key afterwards, eight rows whatever the history.
_RECENT_EVENTS = Compiled(
    lambda merchant_id: (
        InvoiceEvent.objects.filter(merchant_id=merchant_id)
        .order_by("-created_at", "-pk")
        .values_list(
            *fields_of(InvoiceEvent),
            *fields_of(Invoice, "invoice__"),
            *fields_of(User, "actor_user__"),
        )[:8]
    ),
    merchant_id=STAND_IN_ID,
)


def dashboard_summary(*, merchant: Merchant, days: int = 30) -> DashboardSummary:
    counts = invoice_status_counts(merchant=merchant)
    since = timezone.now() - timedelta(days=days)
    outstanding, paid, overdue = _money_figures(merchant, since, timezone.localdate())
    recent = list(
        instances(_RECENT_INVOICES.rows(merchant_id=merchant.pk), Invoice, [("customer", Customer)])
    )
    events = list(
        instances(
            _RECENT_EVENTS.rows(merchant_id=merchant.pk),
            InvoiceEvent,
            [("invoice", Invoice), ("actor_user", User)],
        )
    )
    return DashboardSummary(counts, outstanding, paid, overdue, recent, events)  # type: ignore[arg-type]


_FIGURE_KEYS = ["figure", "currency", "late"]


def _figure_rows(merchant_id: int, since: datetime, today: date) -> QuerySet:
    """The rows of the dashboard's money figures: the outstanding invoices and those paid
    since `since`, through invoice_status_idx and invoice_paid_idx, each with its figure
    and whether it is late."""
    is_outstanding = Q(status__in=OUTSTANDING)
    # Open-amount invoices ask for nothing in particular; they add no outstanding total.
    figure = Case(
        When(is_outstanding & Q(total__gt=0), then=Value("owed")),
        When(is_outstanding, then=Value("")),
        default=Value("paid"),
    )
    late = Case(When(is_outstanding & Q(due_date__lt=today), then=True), default=False)
    # The merchant inside each branch of the OR, so that each is one index range (SQLite
    # unions them; with the merchant outside, it read every invoice of the merchant).
    mine = Q(merchant_id=merchant_id)
    rows = Invoice.objects.filter(
        (mine & is_outstanding) | (mine & Q(status=InvoiceStatus.PAID, finalized_at__gte=since))
    ).annotate(figure=figure, late=late)
    return exact_totals_query(rows, _FIGURE_KEYS, "total")


_MONEY_FIGURES = Compiled(
    _figure_rows, merchant_id=STAND_IN_ID, since=STAND_IN_DATETIME, today=STAND_IN_DATE
)


def _money_figures(
    merchant: Merchant, since: datetime, today: date
) -> tuple[list[CurrencyTotal], list[CurrencyTotal], int]:
    """Outstanding and recently paid totals per currency, and the overdue count, in one query
    over the rows they read instead of one query each: each query costs the page more in
    building and running it than the few rows cost to read."""
    rows = _MONEY_FIGURES.rows(merchant_id=merchant.pk, since=since, today=today)
    grouped = connections["default"].vendor != "sqlite"
    figures: dict[str, dict[str, CurrencyTotal]] = {"owed": {}, "paid": {}}
    overdue = 0
    for row in exact_totals_from_rows(rows, _FIGURE_KEYS, grouped=grouped):
        if row["late"]:
            overdue += row["n"]
        if row["figure"]:
            # A currency's late and not-late rows are two groups: added here, exactly.
            known = figures[row["figure"]].get(row["currency"])
            total, n = row["total"] or Decimal(0), row["n"]
            if known is not None:
                with decimal.localcontext(prec=PRECISION):
                    total, n = known.amount + total, known.count + n
            figures[row["figure"]][row["currency"]] = CurrencyTotal(row["currency"], total, n)
    outstanding, paid = (sorted(figures[k].values(), key=lambda t: t.currency) for k in figures)
    return outstanding, paid, overdue


def invoice_held_deposits(*, invoice: Invoice) -> list[dict]:
    """Deposits of the invoice held as awaiting valuation and not valued since, from its
    events (the invoice knows its money through them): the transfer snapshots. Reads the
    events invoice_detail prefetched, so the page costs no extra query."""
    held: dict[int, dict] = {}
    events = sorted(
        (
            e
            for e in invoice.events.all()
            if e.type in ("deposit.awaiting_valuation", "deposit.valued")
        ),
        key=lambda e: (e.created_at, e.pk),
    )
    for event in events:
        transfer = (event.data or {}).get("transfer") or {}
        if not isinstance(transfer, dict) or "id" not in transfer:
            continue
        if event.type == "deposit.valued":
            held.pop(transfer["id"], None)
        else:
            held[transfer["id"]] = transfer
    return list(held.values())


def credited_quantities(invoice: Invoice) -> dict[int, Decimal]:
    """Units credited so far per line position, over every credit note of the invoice."""
    credited: dict[int, Decimal] = {}
    for note in invoice.credit_notes.all():
        for line in note.lines:
            position = line["position"]
            credited[position] = credited.get(position, Decimal(0)) + Decimal(line["quantity"])
    return credited
