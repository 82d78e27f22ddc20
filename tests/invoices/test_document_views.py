"""Pages for the document parts: business settings, tax rates, payment methods, the editor
with taxes and discounts, and mark-as-paid by a method."""

from decimal import Decimal

import pytest
from django.urls import reverse

from invoices.models import Invoice, LineItem, PaymentMethod, TaxRate
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create
from tests.invoices.test_views import _counts, _editor_data, _messages

pytestmark = pytest.mark.django_db

D = Decimal


def _settings(**overrides) -> dict:
    return {
        "name": "Acme Tools",
        "default_currency": "EUR",
        "default_fee_payer": "merchant",
        "invoice_prefix": "INV-",
        "brand_colour": "#4f46e5",
        "paper_size": "A4",
        **overrides,
    }


def test_business_settings_save_the_seller_details(client_for, alice, acme):
    response = client_for(alice).post(
        reverse("merchant_settings"),
        _settings(
            legal_name="Acme Tools GmbH",
            address_line1="Torstraße 1",
            postal_code="10115",
            city="Berlin",
            country="DE",
            tax_id="DE123456789",
            registration_number="HRB 1",
            contact_email="billing@acme.example",
            contact_phone="+49 30 1",
            invoice_footer="Managing director: W. Coyote",
            default_terms_days="30",
        ),
    )

    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.address_lines == ["Torstraße 1", "10115 Berlin", "Germany"]
    assert (acme.legal_name, acme.tax_id, acme.default_terms_days) == (
        "Acme Tools GmbH",
        "DE123456789",
        30,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("country", "XX"), ("contact_email", "not-an-email"), ("default_terms_days", "366")],
)
def test_bad_seller_details_are_refused_and_nothing_changes(client_for, alice, acme, field, value):
    response = client_for(alice).post(reverse("merchant_settings"), _settings(**{field: value}))

    assert response.status_code == 200
    assert field in response.context["form"].errors
    acme.refresh_from_db()
    assert acme.default_currency == "USD"


def test_tax_rates_are_added_and_one_default_at_a_time(client_for, alice, acme):
    client = client_for(alice)
    client.post(reverse("tax_rate_list"), {"name": "VAT", "percent": "20", "is_default": "on"})
    response = client.post(
        reverse("tax_rate_list"),
        {"name": "VAT", "percent": "7", "inclusive": "on", "country": "DE", "is_default": "on"},
    )

    assert response.status_code == 302
    assert list(
        TaxRate.objects.filter(merchant=acme).values_list("percent", "inclusive", "is_default")
    ) == [(D("7"), True, True), (D("20"), False, False)]


@pytest.mark.parametrize(
    ("percent", "message"),
    [
        ("100.01", "The rate may be at most 100%."),
        ("-5", "The rate cannot be negative."),
        ("abc", "Enter a number."),
    ],
)
def test_absurd_tax_percents_are_refused(client_for, alice, acme, percent, message):
    response = client_for(alice).post(reverse("tax_rate_list"), {"name": "X", "percent": percent})

    assert response.status_code == 422
    assert message in response.context["form"].errors["percent"]
    assert not TaxRate.objects.exists()


def test_removing_a_rate_in_use_archives_it(client_for, alice, acme):
    rate = TaxRate.objects.create(merchant=acme, name="VAT", percent=D("20"))
    invoice_create(
        merchant=acme,
        issue=True,
        data=InvoiceInput(
            currency="USD", items=[LineItemInput("x", D("1"), D("10"), tax=rate.spec)]
        ),
    )

    response = client_for(alice).post(reverse("tax_rate_delete", kwargs={"pk": rate.pk}))

    assert _messages(response) == ["Tax rate VAT 20% removed; invoices that use it keep it."]
    rate.refresh_from_db()
    assert rate.archived_at is not None
    assert LineItem.objects.get().tax_name == "VAT"
    page = client_for(alice).get(reverse("tax_rate_list")).content.decode()
    assert reverse("tax_rate_edit", kwargs={"pk": rate.pk}) not in page


def test_payment_methods_are_added_and_removed(client_for, alice, acme):
    client = client_for(alice)
    response = client.post(
        reverse("payment_method_list"),
        {"name": "SEPA", "kind": "bank_transfer", "iban": "DE89370400440532013000"},
    )
    assert response.status_code == 302
    method = PaymentMethod.objects.get(merchant=acme)

    client.post(reverse("payment_method_delete", kwargs={"pk": method.pk}))

    assert not PaymentMethod.objects.filter(pk=method.pk).exists()


def test_editor_saves_taxes_and_discounts(client_for, bob, acme, acme_customer):
    rate = TaxRate.objects.create(merchant=acme, name="VAT", percent=D("20"))
    method = PaymentMethod.objects.create(merchant=acme, name="SEPA")
    data = _editor_data(
        acme_customer,
        **{
            "items-0-discount_kind": "percent",
            "items-0-discount_value": "10",
            "items-0-tax_rate": str(rate.pk),
            "items-1-discount_kind": "amount",
            "items-1-discount_value": "19.88",
            "discount_kind": "amount",
            "discount_value": "10",
            "notes": "Thank you",
            "terms_days": "30",
            "po_number": "PO-9",
            "payment_methods": [str(method.pk)],
        },
    )

    response = client_for(bob).post(reverse("invoice_new"), data)

    assert response.status_code == 302
    invoice = Invoice.objects.get()
    # 300.00 - 30.00 = 270.00 (VAT 20%); 119.88 - 19.88 = 100.00; 40.00
    assert [item.amount for item in invoice.items.all()] == [D("270.00"), D("100.00"), D("40.00")]
    assert invoice.subtotal == D("410.00")
    # 10.00 off shared 270/410, 100/410, 40/410 = 6.5854, 2.4390, 0.9756, rounded down
    # 6.58 + 2.43 + 0.97 = 9.98; the two cents left go to the largest remainders (.0090, .0056)
    assert [item.invoice_discount_amount for item in invoice.items.all()] == [
        D("6.58"),
        D("2.44"),
        D("0.98"),
    ]
    # VAT on 270.00 - 6.58 = 263.42: 52.684 -> 52.68
    assert invoice.tax_total == D("52.68")
    assert invoice.total == D("452.68")
    assert (invoice.notes, invoice.terms_days, invoice.po_number) == ("Thank you", 30, "PO-9")
    assert list(invoice.payment_methods.all()) == [method]


@pytest.mark.parametrize(
    ("overrides", "row", "field", "message"),
    [
        (
            {"items-0-discount_kind": "percent", "items-0-discount_value": "150"},
            0,
            "discount_value",
            "The discount may be at most 100%.",
        ),
        (
            {"items-0-discount_kind": "amount", "items-0-discount_value": "300.01"},
            0,
            "discount_value",
            "The discount may be at most 300.00 USD.",
        ),
        ({"items-0-discount_value": "5"}, 0, "discount_kind", "Choose % off or an amount off."),
        ({"items-0-tax_rate": "999999"}, 0, "tax_rate", None),
    ],
)
def test_editor_refuses_bad_line_discounts_and_rates_by_field(
    client_for, bob, acme, overrides, row, field, message
):
    before = _counts()

    response = client_for(bob).post(reverse("invoice_new"), _editor_data(**overrides))

    assert response.status_code == 422
    errors = response.context["item_forms"][row].errors[field]
    if message is not None:
        assert errors == [message]
    assert _counts() == before


def test_editor_refuses_an_invoice_discount_above_the_subtotal(client_for, bob, acme):
    response = client_for(bob).post(
        reverse("invoice_new"),
        _editor_data(discount_kind="amount", discount_value="459.89"),
    )

    assert response.status_code == 422
    assert response.context["form"].errors["discount_value"] == [
        "The discount may be at most 459.88 USD."
    ]
    assert Invoice.objects.count() == 0


def test_live_totals_show_the_discount_and_each_tax(client_for, bob, acme):
    rate = TaxRate.objects.create(merchant=acme, name="VAT", percent=D("20"))
    response = client_for(bob).post(
        reverse("invoice_totals"),
        _editor_data(
            **{"items-0-tax_rate": str(rate.pk), "discount_kind": "percent", "discount_value": "10"}
        ),
    )

    html = response.content.decode()
    # 459.88 - 45.99 (30.00 + 11.99 + 4.00); VAT on 270.00: 54.00
    assert 'id="discount-total">\N{MINUS SIGN}45.99<' in html
    assert 'data-tax="VAT 20%">54.00<' in html
    assert 'id="grand-total">$467.89<' in html


def test_mark_paid_by_a_method_from_the_dashboard(client_for, bob, acme):
    method = PaymentMethod.objects.create(merchant=acme, name="SEPA")
    invoice = invoice_create(
        merchant=acme,
        issue=True,
        data=InvoiceInput(currency="USD", items=[LineItemInput("x", D("1"), D("10"))]),
    )

    client_for(bob).post(
        reverse("invoice_mark_paid", kwargs={"pk": invoice.pk}),
        {"reference": "SEPA-77", "method": str(method.pk)},
    )

    receipt = invoice.receipts.get()
    assert (receipt.method, receipt.reference) == ("SEPA", "SEPA-77")
