"""The invoice counts per status the database keeps (invoices.status_counts): they follow
every way an invoice row is written, and the dashboard and list read them."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count
from django.urls import reverse

from invoices import status_counts
from invoices.models import Invoice, InvoiceStatus, InvoiceStatusCount
from invoices.selectors import invoice_count, invoice_status_counts
from invoices.services import invoice_cancel, invoice_void
from tests.factories import MerchantFactory, make_invoice

pytestmark = pytest.mark.django_db


def counted(merchant) -> dict[str, int]:
    return invoice_status_counts(merchant=merchant)


def truth(merchant) -> dict[str, int]:
    rows = (
        Invoice.objects.filter(merchant=merchant)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    return dict(rows.values_list("status", "n"))


def test_counts_follow_creating_issuing_and_status_changes(acme, globex, alice):
    drafts = [make_invoice(acme) for _ in range(2)]
    issued = [make_invoice(acme, issue=True) for _ in range(3)]
    make_invoice(globex, issue=True)
    assert counted(acme) == {"draft": 2, "open": 3}
    assert counted(globex) == {"open": 1}

    invoice_cancel(invoice=issued[0], by=alice)
    invoice_void(invoice=drafts[1], by=alice, note="made twice")
    drafts[0].delete()
    assert counted(acme) == truth(acme) == {"open": 2, "failed": 1, "void": 1}
    assert invoice_count(merchant=acme) == 4
    assert invoice_count(merchant=acme, status="open") == 2
    assert invoice_count(merchant=acme, status="paid") == 0
    assert counted(globex) == {"open": 1}


def test_counts_follow_bulk_writes_and_updates_around_the_services(acme):
    Invoice.objects.bulk_create(
        Invoice(
            merchant=acme,
            number=n,
            reference=f"B-{n}",
            currency="USD",
            fee_payer="merchant",
            status=InvoiceStatus.PAID if n % 3 else InvoiceStatus.OPEN,
            total=Decimal("1"),
        )
        for n in range(1, 31)
    )
    assert counted(acme) == {"paid": 20, "open": 10}
    Invoice.objects.filter(merchant=acme, status=InvoiceStatus.OPEN).update(
        status=InvoiceStatus.CLOSED
    )
    Invoice.objects.filter(merchant=acme, number__lte=6).update(description="no status change")
    Invoice.objects.filter(merchant=acme, number__gt=25).delete()
    assert counted(acme) == truth(acme) == {"paid": 17, "closed": 8}


def test_a_deleted_merchant_takes_its_counts_along(db):
    gone = MerchantFactory()
    make_invoice(gone, issue=True)
    gone.delete()
    assert not InvoiceStatusCount.objects.filter(merchant_id=gone.pk).exists()


def test_recount_rebuilds_the_counts_from_the_invoices(acme, globex):
    for merchant in (acme, globex):
        make_invoice(merchant)
        make_invoice(merchant, issue=True)
    InvoiceStatusCount.objects.update(n=99)
    status_counts.recount(connection)
    assert counted(acme) == truth(acme) == {"draft": 1, "open": 1}
    assert counted(globex) == truth(globex)


def test_migrate_puts_back_the_triggers_sqlite_drops_with_a_rebuilt_table(acme):
    if connection.vendor == "sqlite":
        status_counts.uninstall(connection)  # what rebuilding the table in a migration does
    call_command("migrate", verbosity=0)
    make_invoice(acme, issue=True)
    assert counted(acme) == truth(acme) == {"open": 1}


def test_the_list_counts_pages_from_the_kept_counts(client_for, alice, acme):
    for i in range(30):
        make_invoice(acme, issue=i % 2 == 0)
    client = client_for(alice)
    assert client.get(reverse("invoice_list")).context["page"].paginator.count == 30
    opened = client.get(reverse("invoice_list"), {"status": "open"})
    assert opened.context["page"].paginator.count == 15
    searched = client.get(reverse("invoice_list"), {"q": "INV-0001"})
    assert searched.context["page"].paginator.count == 10  # INV-00010 … INV-00019


def test_search_finds_the_number_without_its_prefix_and_ids_by_their_start(client_for, alice, acme):
    make_invoice(acme, foreign_id="ORDER-7731", tracking_id="TRK-1")
    second = make_invoice(acme, tracking_id="parcel-99")
    client = client_for(alice)

    def found(q: str) -> list[str]:
        page = client.get(reverse("invoice_list"), {"q": q}).context["page"]
        return [invoice.reference for invoice in page.object_list]

    assert found("2") == [second.reference]  # the number itself
    assert found("order-77") == ["INV-00001"]
    assert found("PARCEL") == [second.reference]
    assert found("7731") == []  # the middle of an ID is not its start


@pytest.mark.parametrize("n", [1, 30])
def test_invoice_list_search_query_count_does_not_grow_with_rows(
    client_for, alice, acme, django_assert_num_queries, n
):
    for i in range(n):
        make_invoice(acme, issue=i % 2 == 0)
    client = client_for(alice)
    # session, user, membership (and the switcher's businesses), matching customers, page
    # of invoices with customers: a first page that holds every match is its own count
    with django_assert_num_queries(5):
        response = client.get(reverse("invoice_list"), {"q": "INV-0000"})
    assert len(response.context["page"].object_list) == min(n, 9)
    assert response.context["page"].paginator.count == min(n, 9)


def test_a_search_with_more_than_a_page_counts_them_all(
    client_for, alice, acme, django_assert_num_queries
):
    for _ in range(27):
        make_invoice(acme, issue=True)
    client = client_for(alice)
    # as above, and a COUNT(*) for the pages: the first page read one row more than it shows
    with django_assert_num_queries(6):
        first = client.get(reverse("invoice_list"), {"q": "INV-000"}).context["page"]
    assert [len(first.object_list), first.paginator.count, first.paginator.num_pages] == [25, 27, 2]
    second = client.get(reverse("invoice_list"), {"q": "INV-000", "page": "2"}).context["page"]
    assert [i.reference for i in second.object_list] == ["INV-00002", "INV-00001"]
    # Page numbers that are not pages fall back as before: the last, the first.
    for asked, shown in (("9", 2), ("x", 1)):
        page = client.get(reverse("invoice_list"), {"q": "INV-000", "page": asked}).context["page"]
        assert page.number == shown
