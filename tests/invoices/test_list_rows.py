"""The invoice list's rows ({% invoice_rows %}) and the dashboard's ({% recent_invoice_rows %},
{% activity_items %}): each invoice's link, customer, badges, dates
and total, with everything the merchant or the API wrote escaped."""

from datetime import UTC, datetime

from django.urls import reverse

from invoices.forms import OnceDateInput
from invoices.models import Invoice, InvoiceEvent
from tests.factories import CustomerFactory, make_invoice


def test_a_row_shows_the_invoice_and_escapes_what_people_wrote(client_for, alice, acme, db):
    customer = CustomerFactory(merchant=acme, name="<b>Bold</b> & Co")
    invoice = make_invoice(acme, customer=customer, issue=True)
    Invoice.objects.filter(pk=invoice.pk).update(foreign_id="<script>x</script>")
    invoice.refresh_from_db()

    html = client_for(alice).get(reverse("invoice_list")).content.decode()

    detail = reverse("invoice_detail", args=[invoice.pk])
    assert f'<a class="ref" href="{detail}"><strong>{invoice.reference}</strong></a>' in html
    assert '<td class="hide-sm">&lt;b&gt;Bold&lt;/b&gt; &amp; Co</td>' in html
    assert '<div class="muted small mono">&lt;script&gt;x&lt;/script&gt;</div>' in html
    assert "<script>x" not in html
    assert '<span class="badge badge-open">Open</span>' in html
    assert "<strong>$300.00</strong>" in html


def test_a_row_without_customer_or_total_says_so(client_for, alice, acme, db):
    invoice = make_invoice(acme, issue=True)
    Invoice.objects.filter(pk=invoice.pk).update(kind="permanent", total=0)

    html = client_for(alice).get(reverse("invoice_list")).content.decode()

    assert ' <span class="tag">Permanent</span>' in html
    assert '<div class="sub-line show-sm">No customer</div>' in html
    assert '<td class="hide-sm">—</td>' in html
    assert "<strong>Open amount</strong>" in html


def test_rows_give_dates_in_the_sites_time_zone_as_templates_do(
    client_for, alice, acme, db, settings
):
    # 20:00 UTC on New Year's Day is already the 2nd at UTC+14.
    settings.TIME_ZONE = "Pacific/Kiritimati"
    invoice = make_invoice(acme, issue=True)
    late_evening = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)
    Invoice.objects.filter(pk=invoice.pk).update(created_at=late_evening)
    InvoiceEvent.objects.filter(invoice=invoice).update(created_at=late_evening)

    listed = client_for(alice).get(reverse("invoice_list")).content.decode()
    dashboard = client_for(alice).get(reverse("dashboard")).content.decode()

    assert '<td class="hide-md muted">Jan 2, 2026</td>' in listed
    assert "Jan 1, 2026" not in listed
    assert "</span>Jan 2</div>" in dashboard


def test_dashboard_rows_escape_what_people_wrote(client_for, alice, acme, db):
    customer = CustomerFactory(merchant=acme, name="<b>Bold</b> & Co")
    invoice = make_invoice(acme, customer=customer, issue=True)

    html = client_for(alice).get(reverse("dashboard")).content.decode()

    detail = reverse("invoice_detail", args=[invoice.pk])
    assert f'<a class="ref" href="{detail}"><strong>{invoice.reference}</strong></a>' in html
    assert '<td class="hide-sm">&lt;b&gt;Bold&lt;/b&gt; &amp; Co</td>' in html
    assert "<b>Bold" not in html
    assert (
        f'<li><a href="{detail}"><strong>{invoice.reference}</strong></a> · Invoice issued' in html
    )


def test_the_filters_show_the_values_asked_for_each_time(client_for, alice, acme, db):
    """The filter widgets are rendered once per value and reused (invoices.forms.RenderedOnce):
    each request still shows its own value, selected or typed."""
    make_invoice(acme, issue=True)
    client = client_for(alice)

    def filters(**query) -> str:
        html = client.get(reverse("invoice_list"), query).content.decode()
        start = html.index('<form class="filters"')
        return html[start : html.index("</form>", start)]

    for _ in range(2):
        opened = filters(status="open", created_from="2026-01-02")
        assert '<option value="open" selected>Open</option>' in opened
        assert '<option value="paid">Paid</option>' in opened
        assert 'name="created_from" value="2026-01-02"' in opened
        paid = filters(status="paid", created_from='not-a-date"><b>')
        assert '<option value="paid" selected>Paid</option>' in paid
        assert '<option value="open">Open</option>' in paid
        assert 'value="not-a-date&quot;&gt;&lt;b&gt;"' in paid
        assert 'name="created_from" value="2026-01-02"' not in paid


def test_the_filters_keep_a_bounded_number_of_renderings(client_for, alice, acme, db):
    client = client_for(alice)
    for day in range(OnceDateInput.KEEP + 40):
        client.get(reverse("invoice_list"), {"created_to": f"odd-{day}"})
    assert len(OnceDateInput.rendered) <= OnceDateInput.KEEP
