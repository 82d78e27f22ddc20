"""Credit notes: their own number series, in full, by lines or by part of a line's quantity,
never above what is left, closing an invoice credited in full, and recording that a refund
happens outside."""

import io
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader

from invoices import pdf
from invoices.callbacks import invoice_snapshot
from invoices.delivery import ReceiptInput, TransferRef, invoice_paid_deliver
from invoices.emails import email_for_delivery
from invoices.models import CreditNote, EmailKind, InvoiceStatus, TaxRate
from invoices.rules import CreditableLine, Discount, LineItemInput, credit_line
from invoices.services import (
    ON_CHAIN_REFUND,
    OUTSIDE_REFUND,
    InvoiceInput,
    InvoiceStateError,
    credit_note_issue,
    invoice_create,
    invoice_mark_paid,
)
from merchants.money import get_currency

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


def test_money_received_on_chain_is_refunded_through_the_refund_flow(client_for, bob, invoice):
    with transaction.atomic():
        invoice_paid_deliver(
            invoice=invoice,
            receipt=ReceiptInput(
                key="order-1",
                paid_at=timezone.now(),
                amount=D("158.67"),
                method="USDC on Ethereum",
                transfers=[TransferRef("0x" + "ab" * 32, "ethereum", "USDC", D("158.67"))],
            ),
        )

    page = client_for(bob).get(reverse("invoice_credit", kwargs={"pk": invoice.pk}))
    assert "refunded from the invoice&#x27;s Refunds tab" in page.content.decode()
    assert "outside Stablebill" not in page.content.decode()

    note = credit_note_issue(invoice=invoice, reason="Order returned")

    assert note.refund == ON_CHAIN_REFUND
    assert invoice_snapshot(invoice)["credit_notes"][0]["refund"] == ON_CHAIN_REFUND


def test_only_a_note_on_money_received_on_chain_offers_a_refund(client_for, bob, invoice):
    """Money marked paid goes back outside Stablebill: its note offers no refund to send."""
    invoice_mark_paid(invoice=invoice, reference="WIRE-1")
    note = credit_note_issue(invoice=invoice, reason="Order returned")
    page = client_for(bob).get(reverse("invoice_detail", kwargs={"pk": invoice.pk}))
    html = page.content.decode()
    assert note.reference in html and "the refund happens outside Stablebill" in html
    assert "Refund it" not in html

    CreditNote.objects.filter(pk=note.pk).update(refund=ON_CHAIN_REFUND)
    html = client_for(bob).get(reverse("invoice_detail", kwargs={"pk": invoice.pk})).content
    assert f"?tab=refunds&amp;credit_note={note.pk}" in html.decode()


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
            "lines": [
                {
                    "position": 2,
                    "name": "Hosting",
                    "quantity": "1",
                    "of_quantity": "1",
                    "amount": "46.67",
                    "tax": "0.00",
                }
            ],
            "refund": None,
            "created_at": note.created_at.isoformat(),
        }
    ]


def test_the_dashboard_credits_part_of_a_line(client_for, bob, invoice):
    url = reverse("invoice_credit", kwargs={"pk": invoice.pk})
    page = client_for(bob).get(url)
    assert page.status_code == 200
    assert 'name="quantity_1"' in page.content.decode()

    response = client_for(bob).post(url, {"reason": "Half the design", "quantity_1": "0.5"})

    assert response.status_code == 302
    note = CreditNote.objects.get()
    # 0.5 of (100.00 - 6.67 + 18.67): 50.00 - 3.34 + 9.34
    assert (note.amount, note.lines[0]["quantity"], note.created_by) == (D("56.00"), "0.5", bob)
    page = client_for(bob).get(url).content.decode()
    assert 'name="quantity_2"' in page and 'name="quantity_1"' in page  # 0.5 of 1 is left


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("-1", "Ensure this value is greater than or equal to 0.0001."),
        ("0", "Ensure this value is greater than or equal to 0.0001."),
        ("2", "Ensure this value is less than or equal to 1."),
        ("abc", "Enter a number."),
    ],
)
def test_the_dashboard_shows_field_errors_and_writes_nothing(
    client_for, bob, invoice, quantity, message
):
    response = client_for(bob).post(
        reverse("invoice_credit", kwargs={"pk": invoice.pk}),
        {"reason": "Oops", "quantity_1": quantity},
    )

    assert response.status_code == 422
    assert message in response.content.decode()
    assert CreditNote.objects.count() == 0


def test_the_dashboard_issues_a_credit_note_by_lines(client_for, bob, invoice):
    response = client_for(bob).post(
        reverse("invoice_credit", kwargs={"pk": invoice.pk}),
        {"reason": "Hosting cancelled", "quantity_2": "1"},
    )

    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert (note.amount, note.lines[0]["position"], note.created_by) == (D("46.67"), 2, bob)
    page = client_for(bob).get(reverse("invoice_detail", kwargs={"pk": invoice.pk}))
    assert "CN-00001" in page.content.decode()
    assert "Credit note issued" in page.content.decode()


# Partial quantities: the cumulative pro-rata rule (invoices/rules.py), worked examples ----

USD = get_currency("USD")


def _credits(line: CreditableLine, *steps: str) -> list[tuple[D, D]]:
    credited, out = D(0), []
    for step in steps:
        figures = credit_line(line, credited=credited, quantity=D(step), currency=USD)
        out.append((figures.amount, figures.tax))
        credited += D(step)
    return out


def test_worked_example_two_then_three_of_five_with_exclusive_tax():
    # 5 x 19.99 = 99.95; VAT 10% exclusive: 9.995 -> 10.00 half-up; the line charges 109.95.
    line = CreditableLine(1, D(5), net=D("99.95"), invoice_discount=D(0), tax=D("10.00"))

    # 2 of 5: 99.95 x 2/5 = 39.98 and 10.00 x 2/5 = 4.00. Then 3 more: 99.95 - 39.98 = 59.97
    # and 10.00 - 4.00 = 6.00 (cumulative 5/5 less what was credited).
    assert _credits(line, "2", "3") == [(D("43.98"), D("4.00")), (D("65.97"), D("6.00"))]
    assert D("43.98") + D("65.97") == D("109.95")


def test_worked_example_thirds_with_inclusive_tax_add_up_exactly():
    # 3 x 3.34 = 10.02 with 20% VAT included: 10.02 x 20/120 = 1.67 of it is tax.
    line = CreditableLine(
        1, D(3), net=D("10.02"), invoice_discount=D(0), tax=D("1.67"), tax_inclusive=True
    )

    # Tax after 1/3: 0.5567 -> 0.56; after 2/3: 1.1133 -> 1.11 (so 0.55); after 3/3: 1.67.
    # An inclusive tax is inside the amount, never added to it.
    assert _credits(line, "1", "1", "1") == [
        (D("3.34"), D("0.56")),
        (D("3.34"), D("0.55")),
        (D("3.34"), D("0.56")),
    ]


def test_worked_example_half_a_line_with_an_invoice_discount_share(invoice):
    # Design: 100.00, its share of the 10.00 invoice discount 6.67, VAT 20% on 93.33 = 18.67.
    first = credit_note_issue(invoice=invoice, reason="Half", quantities={1: D("0.5")})
    # 50.00 - 3.335 -> 3.34 + 9.335 -> 9.34
    assert (first.amount, first.tax) == (D("56.00"), D("9.34"))

    rest = credit_note_issue(invoice=invoice, reason="Other half", quantities={1: None})
    # What is left of 112.00 and 18.67.
    assert (rest.amount, rest.tax) == (D("56.00"), D("9.33"))
    assert [line["quantity"] for line in rest.lines] == ["0.5"]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN  # Hosting is not credited


def test_partial_credits_of_every_line_close_the_invoice_at_its_total(acme, acme_customer):
    invoice = invoice_create(
        merchant=acme,
        issue=True,
        data=InvoiceInput(
            currency="USD",
            customer=acme_customer,
            items=[LineItemInput("Seats", D("5"), D("19.99")), LineItemInput("Setup", D(1), D(7))],
        ),
    )
    notes = [
        credit_note_issue(invoice=invoice, reason="a", quantities={1: D(2)}),
        credit_note_issue(invoice=invoice, reason="b", quantities={1: D("1.5"), 2: D(1)}),
        credit_note_issue(invoice=invoice, reason="c"),
    ]

    assert [note.amount for note in notes] == [D("39.98"), D("36.99"), D("29.98")]
    assert sum(note.amount for note in notes) == invoice.total == D("106.95")
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.CLOSED
    assert invoice.events.filter(type="invoice.credited").last().data["full"] is True


@pytest.mark.parametrize(
    ("quantities", "errors"),
    [
        ({1: D("-1")}, {"lines.1.quantity": ["Credit more than zero."]}),
        ({1: D("0")}, {"lines.1.quantity": ["Credit more than zero."]}),
        ({1: D("1.5")}, {"lines.1.quantity": ["At most 1 of this line is left to credit."]}),
        ({1: D("0.00001")}, {"lines.1.quantity": ["Quantity may have at most 4 decimals."]}),
        ({1: D("NaN")}, {"lines.1.quantity": ["Credit more than zero."]}),
        ({9: D("1")}, {"lines.9.quantity": ["This invoice has no such line."]}),
        ({}, {"lines": ["Choose what to credit."]}),
    ],
)
def test_absurd_quantities_are_field_errors_and_nothing_is_written(
    acme, invoice, quantities, errors
):
    with pytest.raises(ValidationError) as error:
        credit_note_issue(invoice=invoice, reason="No", quantities=quantities)

    assert error.value.message_dict == errors
    assert CreditNote.objects.count() == 0
    assert invoice.events.filter(type="invoice.credited").count() == 0
    acme.refresh_from_db()
    assert acme.next_credit_note_number == 1


def test_what_is_left_counts_every_credit_note_of_the_invoice(invoice):
    credit_note_issue(invoice=invoice, reason="a", quantities={1: D("0.75")})

    with pytest.raises(ValidationError) as error:
        credit_note_issue(invoice=invoice, reason="b", quantities={1: D("0.5")})

    assert error.value.message_dict == {
        "lines.1.quantity": ["At most 0.25 of this line is left to credit."]
    }
    credit_note_issue(invoice=invoice, reason="c", quantities={1: D("0.25")})
    with pytest.raises(ValidationError) as error:
        credit_note_issue(invoice=invoice, reason="d", quantities={1: None})
    assert error.value.message_dict == {
        "lines.1.quantity": ["Nothing is left to credit on this line."]
    }
    assert sum(note.amount for note in CreditNote.objects.all()) == D("112.00")


def test_the_pdf_and_the_email_show_part_of_a_line(invoice):
    note = credit_note_issue(invoice=invoice, reason="Half", quantities={1: D("0.5")})

    text = " ".join(
        page.extract_text()
        for page in PdfReader(io.BytesIO(pdf.credit_note_pdf(note).content)).pages
    )
    assert "0.5 of 1" in text and "56.00" in text
    email = email_for_delivery(invoice.emails.get(kind=EmailKind.CREDIT_NOTE), attach=False)
    assert "Design (0.5 of 1): $56.00" in email.text
    assert "0.5 of 1" in email.html
