"""The invoice as a business document: seller and buyer details, taxes, discounts, notes and
terms, other payment methods, and the snapshot that keeps an issued invoice as it was sent."""

import io
import shutil
import subprocess
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from invoices import pdf
from invoices.callbacks import invoice_snapshot
from invoices.emails import invoice_email, receipt_email
from invoices.models import Invoice, LineItem, PaymentMethod, TaxRate
from invoices.rules import Discount, LineItemInput
from invoices.services import (
    InvoiceInput,
    invoice_create,
    invoice_issue,
    invoice_mark_paid,
    tax_rate_remove,
)
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

D = Decimal
# Markup, an attribute break-out, a template tag and a CSV formula in one string.
INJECTION = '<script>alert("x")</script><img src=x onerror=alert(1)>"\'{{ 7*7 }}=cmd|calc'
RAW = ("<script>", "<img src=x", 'onerror=alert(1)>"')


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


@pytest.fixture
def seller(acme):
    for key, value in {
        "legal_name": "Acme Tools GmbH",
        "address_line1": "Torstraße 1",
        "city": "Berlin",
        "postal_code": "10115",
        "country": "DE",
        "tax_id": "DE123456789",
        "registration_number": "HRB 12345",
        "contact_email": "billing@acme.example",
        "contact_phone": "+49 30 1234567",
        "invoice_footer": "Managing director: W. E. Coyote",
    }.items():
        setattr(acme, key, value)
    acme.save()
    return acme


@pytest.fixture
def buyer(acme):
    return CustomerFactory(
        merchant=acme,
        name="Ada Lovelace",
        email="ada@example.org",
        company="Analytical Engines Ltd",
        address_line1="12 St James's Square",
        city="London",
        postal_code="SW1Y 4JH",
        country="GB",
        tax_id="GB123456789",
    )


@pytest.fixture
def vat(acme):
    return TaxRate.objects.create(merchant=acme, name="VAT", percent=D("20"), country="DE")


@pytest.fixture
def reduced(acme):
    return TaxRate.objects.create(merchant=acme, name="VAT", percent=D("7"))


@pytest.fixture
def sepa(acme):
    return PaymentMethod.objects.create(
        merchant=acme,
        name="SEPA transfer",
        account_holder="Acme Tools GmbH",
        bank_name="Commerzbank",
        iban="DE89370400440532013000",
        bic="COBADEFFXXX",
        instructions="Put the invoice number in the reference.",
    )


def document_input(buyer, vat, reduced, sepa, **extra) -> InvoiceInput:
    fields = {
        "currency": "EUR",
        "customer": buyer,
        "items": [
            # 3 x 19.99 = 59.97, 10% off -> 6.00, net 53.97, VAT 20%
            LineItemInput(
                "Widget",
                D("3"),
                D("19.99"),
                discount=Discount("percent", D("10")),
                tax=vat.spec,
            ),
            # 100.00, VAT 7%
            LineItemInput("Book", D("1"), D("100.00"), tax=reduced.spec),
        ],
        # 10% off the invoice: 5.40 + 10.00; taxes 48.57 x 20% = 9.71, 90.00 x 7% = 6.30
        "discount": Discount("percent", D("10")),
        "notes": "Thanks for your order.",
        "terms": "Late payments carry 1% interest a month.",
        "terms_days": 30,
        "po_number": "PO-4471",
        "footer": "Managing director: W. E. Coyote",
        "payment_methods": [sepa],
    }
    fields.update(extra)
    return InvoiceInput(**fields)


@pytest.fixture
def document(seller, buyer, vat, reduced, sepa, alice):
    return invoice_create(
        merchant=seller, data=document_input(buyer, vat, reduced, sepa), by=alice, issue=True
    )


def pdftotext(content: bytes, tmp_path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: apt-get install poppler-utils")
    path = tmp_path / "doc.pdf"
    path.write_bytes(content)
    out = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout
    return " ".join(out.split())


# The figures, stored as computed -------------------------------------------------------------


def test_issued_invoice_stores_every_figure_of_the_worked_example(document):
    assert (document.subtotal, document.discount_total, document.tax_total, document.total) == (
        D("153.97"),
        D("15.40"),
        D("16.01"),
        # 153.97 - 15.40 + 9.71 + 6.30
        D("154.58"),
    )
    assert document.tax_summary == [
        {"name": "VAT", "percent": "20", "inclusive": False, "taxable": "48.57", "tax": "9.71"},
        {"name": "VAT", "percent": "7", "inclusive": False, "taxable": "90.00", "tax": "6.30"},
    ]
    rows = list(
        document.items.values_list(
            "amount", "discount_amount", "invoice_discount_amount", "tax_percent", "tax_amount"
        )
    )
    assert rows == [
        (D("53.97"), D("6.00"), D("5.40"), D("20"), D("9.71")),
        (D("100.00"), D("0"), D("10.00"), D("7"), D("6.30")),
    ]


def test_net_terms_set_the_due_date_from_the_issue_date(seller, buyer, vat, reduced, sepa):
    draft = invoice_create(merchant=seller, data=document_input(buyer, vat, reduced, sepa))
    assert draft.due_date is None

    issued = invoice_issue(invoice=draft)

    issued.refresh_from_db()
    assert issued.due_date == timezone.localdate(issued.issued_at) + timedelta(days=30)


# Bad input: field errors, nothing written ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            {"discount": Discount("percent", D("100.5"))},
            "discount_value",
            "The discount may be at most 100%.",
        ),
        (
            {"discount": Discount("amount", D("153.98"))},
            "discount_value",
            "The discount may be at most 153.97 EUR.",
        ),
        ({"terms_days": 366}, "terms_days", "Payment terms run from 0 to 365 days."),
        ({"terms_days": -1}, "terms_days", "Payment terms run from 0 to 365 days."),
        ({"po_number": "P" * 65}, "po_number", "At most 64 characters."),
        ({"notes": "n" * 5001}, "notes", "At most 5000 characters."),
    ],
)
def test_bad_document_input_is_refused_by_field_and_writes_nothing(
    seller, buyer, vat, reduced, sepa, change, key, message
):
    with pytest.raises(ValidationError) as error:
        invoice_create(merchant=seller, data=document_input(buyer, vat, reduced, sepa, **change))

    assert error.value.message_dict[key] == [message]
    assert (Invoice.objects.count(), LineItem.objects.count()) == (0, 0)
    seller.refresh_from_db()
    assert seller.next_invoice_number == 1


@pytest.mark.parametrize(
    ("item", "key", "message"),
    [
        (
            LineItemInput("x", D("1"), D("10"), discount=Discount("amount", D("10.01"))),
            "items.0.discount_value",
            "The discount may be at most 10.00 EUR.",
        ),
        (
            LineItemInput("x", D("1"), D("10"), discount=Discount("percent", D("101"))),
            "items.0.discount_value",
            "The discount may be at most 100%.",
        ),
        (
            LineItemInput("x", D("-1"), D("10")),
            "items.0.quantity",
            "Quantity must be greater than zero.",
        ),
        (
            LineItemInput("x", D("1"), D("-10")),
            "items.0.unit_price",
            "Price cannot be negative.",
        ),
        (
            LineItemInput("x", D("10000000"), D("10")),
            "items.0.quantity",
            "Quantity may be at most 1,000,000.00.",
        ),
    ],
)
def test_bad_lines_are_refused_by_field(acme, item, key, message):
    with pytest.raises(ValidationError) as error:
        invoice_create(merchant=acme, data=InvoiceInput(currency="EUR", items=[item]))

    assert error.value.message_dict[key] == [message]
    assert Invoice.objects.count() == 0


def test_another_merchants_tax_rate_and_payment_method_are_refused(acme, globex):
    foreign_rate = TaxRate.objects.create(merchant=globex, name="GST", percent=D("10"))
    foreign_method = PaymentMethod.objects.create(merchant=globex, name="Wire")

    with pytest.raises(ValidationError) as error:
        invoice_create(
            merchant=acme,
            data=InvoiceInput(
                currency="USD",
                items=[LineItemInput("x", D("1"), D("10"), tax=foreign_rate.spec)],
                payment_methods=[foreign_method],
            ),
        )

    assert error.value.message_dict == {
        "items.0.tax_rate": ["Choose one of your tax rates."],
        "payment_methods": ["Choose among your active payment methods."],
    }
    assert Invoice.objects.count() == 0


# Tax rates in use, settings changed later: the issued document stays as sent ----------------


def test_a_rate_in_use_is_archived_and_stays_on_its_invoices(document, vat, tmp_path):
    before = pdftotext(pdf.invoice_pdf(document).content, tmp_path)

    deleted = tax_rate_remove(rate=vat)

    assert deleted is False
    vat.refresh_from_db()
    assert vat.archived_at is not None
    document = Invoice.objects.get(pk=document.pk)
    assert document.items.first().tax_name == "VAT"
    assert pdftotext(pdf.invoice_pdf(document).content, tmp_path) == before


def test_an_unused_rate_is_deleted(acme):
    rate = TaxRate.objects.create(merchant=acme, name="Old", percent=D("3"))

    assert tax_rate_remove(rate=rate) is True
    assert not TaxRate.objects.filter(pk=rate.pk).exists()


def test_later_changes_to_seller_buyer_rates_and_methods_leave_the_issued_document(
    document, seller, buyer, vat, sepa, tmp_path
):
    snapshot_before = invoice_snapshot(document)
    pdf_before = pdftotext(pdf.invoice_pdf(document).content, tmp_path)

    seller.legal_name, seller.tax_id, seller.address_line1 = "New Name AG", "DE999", "Elsewhere 9"
    seller.save()
    buyer.name, buyer.address_line1 = "Ada King", "1 New Street"
    buyer.save()
    vat.percent = D("19")
    vat.save()
    sepa.iban = "DE02120300000000202051"
    sepa.save()

    document = Invoice.objects.get(pk=document.pk)
    snapshot_after = invoice_snapshot(document)
    # `customer` is the live record the invoice points at; `buyer` is who it was issued to.
    assert snapshot_after.pop("customer")["name"] == "Ada King"
    snapshot_before.pop("customer")
    assert snapshot_after == snapshot_before
    assert snapshot_after["buyer"]["name"] == "Ada Lovelace"
    after = pdftotext(pdf.invoice_pdf(document).content, tmp_path)
    assert after == pdf_before
    assert "New Name AG" not in after and "DE02120300000000202051" not in after


def test_a_draft_shows_the_settings_as_they_are_now(seller, buyer, vat, reduced, sepa):
    draft = invoice_create(merchant=seller, data=document_input(buyer, vat, reduced, sepa))
    seller.legal_name = "Renamed GmbH"
    seller.save()

    assert invoice_snapshot(Invoice.objects.get(pk=draft.pk))["seller"]["legal_name"] == (
        "Renamed GmbH"
    )


# What the documents print ---------------------------------------------------------------------


def test_pdf_prints_seller_buyer_tax_summary_terms_and_payment_instructions(document, tmp_path):
    text = pdftotext(pdf.invoice_pdf(document).content, tmp_path)

    for expected in (
        "Acme Tools GmbH",
        "Trading as Acme Tools",
        "Torstraße 1",
        "10115 Berlin",
        "Germany",
        "Tax ID DE123456789",
        "Reg. no. HRB 12345",
        "billing@acme.example · +49 30 1234567",
        "Ada Lovelace",
        "London SW1Y 4JH",
        "United Kingdom",
        "Tax ID GB123456789",
        "Terms Net 30",
        "PO number PO-4471",
        "Discount 10%: \N{MINUS SIGN}6.00",
        "VAT 20%",
        "Subtotal €153.97",
        "Discount 10% \N{MINUS SIGN}€15.40",
        "VAT 20% on €48.57 €9.71",
        "VAT 7% on €90.00 €6.30",
        "Amount due €154.58",
        "Thanks for your order.",
        "Or pay by SEPA transfer",
        "Account holder Acme Tools GmbH",
        "IBAN / account DE89370400440532013000",
        "BIC / routing COBADEFFXXX",
        f"Reference {document.reference}",
        "Put the invoice number in the reference.",
        "Late payments carry 1% interest a month.",
        "Managing director: W. E. Coyote",
    ):
        assert expected in text, expected


def test_pdf_prints_inclusive_taxes_as_included(seller, tmp_path):
    rate = TaxRate.objects.create(merchant=seller, name="VAT", percent=D("20"), inclusive=True)
    invoice = invoice_create(
        merchant=seller,
        issue=True,
        data=InvoiceInput(
            currency="EUR", items=[LineItemInput("Ticket", D("1"), D("119.99"), tax=rate.spec)]
        ),
    )

    text = pdftotext(pdf.invoice_pdf(invoice).content, tmp_path)

    assert "1 Ticket 20% 119.99 incl." in text
    assert "Amount due €119.99 Includes VAT 20% on €99.99 €20.00" in text


def test_email_carries_the_same_figures_seller_and_instructions(document):
    email = invoice_email(document, to=["ada@example.org"], attach=True)

    for body in (email.text, email.html):
        for expected in (
            "€153.97",
            "€15.40",
            "VAT 20% on €48.57",
            "€9.71",
            "VAT 7% on €90.00",
            "€6.30",
            "€154.58",
            "PO-4471",
            "Thanks for your order.",
            "SEPA transfer",
            "DE89370400440532013000",
            "Acme Tools GmbH",
            "Tax ID DE123456789",
            "10115 Berlin",
            "Managing director: W. E. Coyote",
        ):
            assert expected in body, expected
    attached = PdfReader(io.BytesIO(email.attachments[0].content)).pages[0].extract_text()
    assert "154.58" in attached


def test_payer_page_shows_the_figures_seller_and_methods_but_not_the_buyers_details(
    client, document
):
    html = client.get(f"/pay/{document.public_token}/").content.decode()

    for expected in (
        "153.97",
        "\N{MINUS SIGN}15.40",
        "VAT 20%",
        "9.71",
        "VAT 7%",
        "6.30",
        "154.58",
        "PO number PO-4471",
        "Thanks for your order.",
        "Late payments carry 1% interest a month.",
        "SEPA transfer",
        "DE89370400440532013000",
        "COBADEFFXXX",
        "Acme Tools GmbH",
        "Tax ID DE123456789",
        "10115 Berlin",
    ):
        assert expected in html, expected
    for private in ("GB123456789", "12 St James", "ada@example.org"):
        assert private not in html, private


def test_marking_paid_by_a_method_records_it_and_the_receipt_says_so(document, sepa, alice):
    paid = invoice_mark_paid(invoice=document, reference="SEPA 2026-118", method=sepa, by=alice)

    event = paid.events.get(type="invoice.marked_paid")
    assert event.data == {
        "reference": "SEPA 2026-118",
        "method": "SEPA transfer",
        "method_id": sepa.pk,
    }
    receipt = paid.receipts.get()
    assert (receipt.method, receipt.reference, receipt.amount) == (
        "SEPA transfer",
        "SEPA 2026-118",
        D("154.58"),
    )
    email = receipt_email(receipt, to=["ada@example.org"], attach=False)
    assert "SEPA transfer" in email.text
    assert "SEPA transfer" in pdf_text(pdf.receipt_pdf(receipt).content)


def pdf_text(content: bytes) -> str:
    return " ".join(
        " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split()
    )


def test_mark_paid_with_another_merchants_method_is_refused(document, globex):
    foreign = PaymentMethod.objects.create(merchant=globex, name="Wire")

    with pytest.raises(ValidationError) as error:
        invoice_mark_paid(invoice=document, reference="x", method=foreign)

    assert error.value.message_dict == {"method": ["Choose one of your payment methods."]}
    document.refresh_from_db()
    assert document.status == "open"


# Injection corpus in every new text field ------------------------------------------------------


@pytest.fixture
def hostile(acme):
    for key in (
        "legal_name",
        "address_line1",
        "address_line2",
        "city",
        "postal_code",
        "region",
        "tax_id",
        "registration_number",
        "contact_phone",
        "invoice_footer",
    ):
        limit = type(acme)._meta.get_field(key).max_length
        setattr(acme, key, INJECTION[:limit])
    acme.save()
    customer = CustomerFactory(
        merchant=acme,
        name=INJECTION,
        email="e@x.org",
        address_line1=INJECTION,
        address_line2=INJECTION,
        city=INJECTION,
        region=INJECTION,
        tax_id=INJECTION[:64],
    )
    rate = TaxRate.objects.create(merchant=acme, name=INJECTION[:64], percent=D("10"))
    method = PaymentMethod.objects.create(
        merchant=acme,
        name=INJECTION[:80],
        account_holder=INJECTION,
        bank_name=INJECTION,
        iban=INJECTION[:64],
        bic=INJECTION[:32],
        instructions=INJECTION,
    )
    return invoice_create(
        merchant=acme,
        issue=True,
        data=InvoiceInput(
            currency="USD",
            customer=customer,
            items=[LineItemInput(INJECTION, D("1"), D("10"), tax=rate.spec)],
            notes=INJECTION,
            terms=INJECTION,
            po_number=INJECTION[:64],
            footer=INJECTION,
            payment_methods=[method],
        ),
    )


def test_hostile_text_is_escaped_in_the_pdf_html_and_printed_as_text(hostile, tmp_path):
    html = pdf.invoice_html(hostile)
    for raw in RAW:
        assert raw not in html
    assert "&lt;script&gt;" in html
    text = pdftotext(pdf.invoice_pdf(hostile).content, tmp_path)
    assert '<script>alert("x")</script>' in text
    assert "{{ 7*7 }}" in text  # never evaluated


def test_hostile_text_is_escaped_in_the_email_html_and_plain_in_the_text(hostile):
    email = invoice_email(hostile, to=["e@x.org"], attach=False)

    for raw in RAW:
        assert raw not in email.html
    assert "&lt;script&gt;" in email.html
    assert '<script>alert("x")</script>' in email.text  # plain text is not HTML
    assert "\n" not in email.subject


def test_hostile_text_is_escaped_on_the_payer_page_and_the_invoice_page(
    client, client_for, alice, hostile
):
    pages = [
        client.get(f"/pay/{hostile.public_token}/"),
        client_for(alice).get(reverse("invoice_detail", kwargs={"pk": hostile.pk})),
        client_for(alice).get(reverse("tax_rate_list")),
        client_for(alice).get(reverse("payment_method_list")),
        client_for(alice).get(reverse("merchant_settings")),
    ]
    for response in pages:
        assert response.status_code == 200
        html = response.content.decode()
        for raw in RAW:
            assert raw not in html
