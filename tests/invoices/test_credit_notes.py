"""Credit notes: their own number series, by lines or in full, never above what is left,
closing an invoice credited in full, and recording that a refund happens outside."""

import io
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from pypdf import PdfReader

from invoices import pdf
from invoices.callbacks import invoice_snapshot
from invoices.emails import email_for_delivery
from invoices.models import CreditNote, EmailKind, InvoiceStatus, TaxRate
from invoices.rules import Discount, LineItemInput
from invoices.services import (
    OUTSIDE_REFUND,
    InvoiceInput,
    InvoiceStateError,
    credit_note_issue,
    invoice_create,
    invoice_mark_paid,
)

pytestmark = pytest.mark.django_db
D = Decimal


@pytest.fixture
def invoice(acme, acme_customer):
    vat = TaxRate.objects.create(merchant=acme, name="VAT", percent=D("20"))
    return invoice_create(
        merchant=acme,
        issue=True,
        data=InvoiceInput(
            currency="USD",
            customer=acme_customer,
            # 100.00 and 50.00, 10.00 off shared 6.67 / 3.33; VAT 20% on 93.33 = 18.67
            items=[
                LineItemInput("Design", D("1"), D("100.00"), tax=vat.spec),
                LineItemInput("Hosting", D("1"), D("50.00")),
            ],
            discount=Discount("amount", D("10.00")),
        ),
    )


def test_crediting_by_lines_then_the_rest_closes_the_invoice(invoice, alice):
    assert invoice.total == D("158.67")

    first = credit_note_issue(invoice=invoice, reason="Design cancelled", positions=[1], by=alice)

    # 100.00 - 6.67 + 18.67
    assert (first.reference, first.amount, first.tax) == ("CN-00001", D("112.00"), D("18.67"))
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    rest = credit_note_issue(invoice=invoice, reason="Hosting too")
    # 50.00 - 3.33
    assert (rest.reference, rest.amount) == ("CN-00002", D("46.67"))
    assert first.amount + rest.amount == invoice.total
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.CLOSED
    events = list(invoice.events.filter(type="invoice.credited").values_list("data", flat=True))
    assert [(e["reference"], e["full"]) for e in events] == [
        ("CN-00001", False),
        ("CN-00002", True),
    ]
    emails = invoice.emails.filter(kind=EmailKind.CREDIT_NOTE)
    assert emails.count() == 2


def test_nothing_above_what_is_left_can_be_credited(invoice):
    credit_note_issue(invoice=invoice, reason="Design", positions=[1])

    for positions in ([1], [3], None):
        if positions is None:
            credit_note_issue(invoice=invoice, reason="Rest")
            with pytest.raises(InvoiceStateError):
                credit_note_issue(invoice=invoice, reason="Again")
            continue
        with pytest.raises(ValidationError) as error:
            credit_note_issue(invoice=invoice, reason="Again", positions=positions)
        assert error.value.message_dict == {
            "lines": ["Choose lines that are on the invoice and not credited yet."]
        }
    assert CreditNote.objects.count() == 2
    assert sum(note.amount for note in CreditNote.objects.all()) == invoice.total


def test_a_reason_is_required_and_drafts_cannot_be_credited(acme, invoice):
    with pytest.raises(ValidationError) as error:
        credit_note_issue(invoice=invoice, reason="  ")
    assert error.value.message_dict == {"reason": ["Say why the invoice is credited."]}

    draft = invoice_create(
        merchant=acme, data=InvoiceInput(currency="USD", items=[LineItemInput("x", D(1), D(5))])
    )
    with pytest.raises(InvoiceStateError):
        credit_note_issue(invoice=draft, reason="No")
    assert CreditNote.objects.count() == 0


def test_a_paid_invoice_credited_in_full_closes_and_says_the_refund_is_outside(invoice, tmp_path):
    invoice_mark_paid(invoice=invoice, reference="WIRE-1")

    note = credit_note_issue(invoice=invoice, reason="Order returned")

    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.CLOSED
    assert note.refund == OUTSIDE_REFUND
    text = " ".join(
        page.extract_text()
        for page in PdfReader(io.BytesIO(pdf.credit_note_pdf(note).content)).pages
    )
    for expected in ("CREDIT NOTE", "CN-00001", invoice.reference, "Order returned", "158.67"):
        assert expected in text, expected
    assert "refund happens outside" in " ".join(text.split())


def test_the_email_and_the_snapshot_carry_the_credit_note(invoice):
    note = credit_note_issue(invoice=invoice, reason="<b>Returned</b>", positions=[2])

    delivery = invoice.emails.get(kind=EmailKind.CREDIT_NOTE)
    email = email_for_delivery(delivery, attach=True)
    assert email.subject == (
        f"Credit note CN-00001 for invoice {invoice.reference} from Acme Tools"
    )
    assert "$46.67" in email.text and "<b>Returned</b>" in email.text
    assert "&lt;b&gt;Returned&lt;/b&gt;" in email.html
    assert email.attachments[0].filename == "CN-00001.pdf"
    snapshot = invoice_snapshot(invoice)
    assert snapshot["credit_notes"] == [
        {
            "id": note.pk,
            "reference": "CN-00001",
            "amount": "46.67",
            "tax": "0.00",
            "reason": "<b>Returned</b>",
            "lines": [2],
            "refund": None,
            "created_at": note.created_at.isoformat(),
        }
    ]


def test_the_dashboard_issues_a_credit_note_by_lines(client_for, bob, invoice):
    response = client_for(bob).post(
        reverse("invoice_credit", kwargs={"pk": invoice.pk}),
        {"reason": "Hosting cancelled", "lines": ["2"]},
    )

    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert (note.amount, note.lines[0]["position"], note.created_by) == (D("46.67"), 2, bob)
    page = client_for(bob).get(reverse("invoice_detail", kwargs={"pk": invoice.pk}))
    assert "CN-00001" in page.content.decode()
    assert "Credit note issued" in page.content.decode()
