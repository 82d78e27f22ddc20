"""The dashboard and the invoice list cost a fixed number of queries however long the history,
and the dashboard's activity feed reads the merchant's own events (InvoiceEvent.merchant)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from invoices.models import InvoiceEvent
from invoices.services import invoice_cancel
from tests.factories import make_invoice

pytestmark = pytest.mark.django_db


def _history(merchant, n: int) -> None:
    for i in range(n):
        make_invoice(merchant, issue=i % 2 == 0)


@pytest.mark.parametrize("n", [1, 12])
def test_dashboard_query_count_does_not_grow_with_history(
    client_for, alice, acme, globex, django_assert_num_queries, n
):
    _history(acme, n)
    _history(globex, 3)
    client = client_for(alice)
    # session, user, membership (with the person's other businesses, for the switcher),
    # status counts, outstanding + paid recently + overdue (one query), recent invoices with
    # customers, activity with invoices and actors
    with django_assert_num_queries(7):
        response = client.get(reverse("dashboard"))
    assert response.status_code == 200
    assert len(response.context["summary"].recent_invoices) == min(n, 6)


@pytest.mark.parametrize("n", [1, 30])
def test_invoice_list_query_count_does_not_grow_with_history(
    client_for, alice, acme, django_assert_num_queries, n
):
    _history(acme, n)
    client = client_for(alice)
    # session, user, membership (and the switcher's businesses), kept counts, page of
    # invoices with customers
    with django_assert_num_queries(5):
        response = client.get(reverse("invoice_list"))
    assert len(response.context["page"].object_list) == min(n, 25)


def test_activity_shows_the_merchants_own_latest_events_only(client_for, alice, acme, globex):
    ours = make_invoice(acme, issue=True)
    invoice_cancel(invoice=ours, by=alice)
    # Another business is busier and its events are newer than all of ours.
    for _ in range(10):
        make_invoice(globex, issue=True)
    theirs = InvoiceEvent.objects.filter(merchant=globex)
    theirs.update(created_at=timezone.now() + timedelta(hours=1))

    summary = client_for(alice).get(reverse("dashboard")).context["summary"]
    events = summary.recent_events
    assert [e.invoice_id for e in events] == [ours.pk] * len(events)
    assert [e.type for e in events] == list(
        InvoiceEvent.objects.filter(invoice=ours)
        .order_by("-created_at", "-pk")
        .values_list("type", flat=True)
    )
    assert events[0].type == "invoice.cancelled"


def test_every_way_of_writing_an_event_records_its_invoices_merchant(acme, globex):
    ours, theirs = make_invoice(acme), make_invoice(globex)
    created = InvoiceEvent.objects.create(invoice=ours, type="invoice.note")
    saved = InvoiceEvent(invoice_id=theirs.pk, type="invoice.note")
    saved.save()
    bulk = InvoiceEvent.objects.bulk_create(
        [InvoiceEvent(invoice=ours, type="invoice.note"), InvoiceEvent(invoice=theirs, type="x")]
    )
    assert [created.merchant_id, saved.merchant_id] == [acme.pk, globex.pk]
    assert [e.merchant_id for e in bulk] == [acme.pk, globex.pk]
    # The services' own events too, and the stored rows say the same.
    stored = InvoiceEvent.objects.values_list("invoice__merchant_id", "merchant_id")
    assert stored.count() > 4
    assert all(invoice_merchant == merchant for invoice_merchant, merchant in stored)


def test_dashboard_figures_per_currency(acme, globex):
    """Outstanding and paid-in-30-days per currency, exact, and the overdue count, from the
    one query that reads them all: open-amount invoices owe nothing, drafts and old payments
    count for neither, another merchant's invoices for nothing."""
    from datetime import date
    from decimal import Decimal

    from invoices.models import Invoice, InvoiceKind
    from invoices.selectors import dashboard_summary

    def invoice(merchant, currency: str, price: str, **fields):
        made = make_invoice(merchant, currency=currency, items=[("Thing", "1", price)])
        Invoice.objects.filter(pk=made.pk).update(**fields)

    now, today = timezone.now(), timezone.localdate()
    invoice(acme, "USD", "10.10", status="open", due_date=today - timedelta(days=1))
    invoice(acme, "USD", "0.20", status="processing")
    invoice(acme, "EUR", "5.00", status="unresolved", due_date=today + timedelta(days=1))
    invoice(acme, "USD", "0.00", status="open", kind=InvoiceKind.PERMANENT, total=0,
            due_date=date(2020, 1, 1))  # fmt: skip
    invoice(acme, "USD", "7.00", status="paid", finalized_at=now - timedelta(days=2))
    invoice(acme, "GBP", "3.30", status="paid", finalized_at=now - timedelta(days=29))
    invoice(acme, "USD", "99.00", status="paid", finalized_at=now - timedelta(days=31))
    invoice(acme, "USD", "50.00", status="draft", due_date=today - timedelta(days=9))
    invoice(globex, "USD", "1000.00", status="open", due_date=today - timedelta(days=9))

    summary = dashboard_summary(merchant=acme)

    assert [(t.currency, t.amount, t.count) for t in summary.outstanding] == [
        ("EUR", Decimal("5.00"), 1),
        ("USD", Decimal("10.30"), 2),
    ]
    assert [(t.currency, t.amount, t.count) for t in summary.paid_recently] == [
        ("GBP", Decimal("3.30"), 1),
        ("USD", Decimal("7.00"), 1),
    ]
    assert summary.overdue_count == 2  # the open-amount invoice is late too
    assert summary.status_counts["paid"] == 3


def test_switcher_lists_every_business_of_the_person_without_a_query_of_its_own(
    client_for, alice, acme, globex, django_assert_num_queries
):
    from tests.factories import MembershipFactory

    MembershipFactory(merchant=globex, user=alice)
    client = client_for(alice)
    client.post(reverse("merchant_switch"), {"merchant_id": globex.pk})
    with django_assert_num_queries(7):
        response = client.get(reverse("dashboard"))
    html = response.content.decode()
    assert response.context["merchant"] == globex
    assert f'<option value="{acme.pk}" >Acme Tools</option>' in html
    assert f'<option value="{globex.pk}" selected>Globex</option>' in html


@pytest.mark.parametrize(
    ("status", "reason", "refund", "html"),
    [
        ("open", "", "", '<span class="badge badge-open">Open</span>'),
        (
            "failed",
            "processing_timeout",
            "",
            '<span class="badge badge-failed">Failed · processing over 24 hours</span>',
        ),
        (
            "paid",
            "",
            "partially_refunded",
            '<span class="badge badge-paid">Paid</span> '
            '<span class="badge badge-refund">Partially refunded</span>',
        ),
    ],
)
def test_status_badges_show_status_reason_and_refund(status, reason, refund, html):
    from django.template import engines

    from invoices.models import Invoice

    invoice = Invoice(status=status, failure_reason=reason, refund_state=refund)
    rendered = engines["django"].from_string('{% include "_status.html" %}')
    assert rendered.render({"invoice": invoice}) == html + "\n"
