"""The one email builder. Every email is three templates, `<kind>_subject.txt`, `<kind>.txt` and
`<kind>.html` under templates/invoices/emails/, rendered with one context.

HTML bodies are autoescaped like every page; the text bodies switch autoescaping off (plain
text is not HTML, and `O'Brien` must stay `O'Brien`); subjects are folded onto one line so
no merchant or customer text can add a header.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import formataddr, parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from invoices import pdf
from invoices.document import document_of
from invoices.models import CreditNote, EmailDelivery, EmailKind, Invoice, LineItem, Receipt
from merchants.models import Merchant
from merchants.validators import one_line

TEMPLATES = "invoices/emails"
# Items listed in the email body; the attached PDF has all of them.
ITEMS_IN_BODY = 8
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mimetype: str = "application/pdf"


@dataclass
class Email:
    kind: str
    subject: str
    text: str
    html: str
    to: list[str]
    from_email: str
    attachments: list[Attachment] = field(default_factory=list)

    def message(self) -> EmailMultiAlternatives:
        message = EmailMultiAlternatives(
            subject=self.subject, body=self.text, from_email=self.from_email, to=self.to
        )
        message.attach_alternative(self.html, "text/html")
        for attachment in self.attachments:
            message.attach(attachment.filename, attachment.content, attachment.mimetype)
        return message


def build(
    kind: str,
    context: dict[str, Any],
    *,
    to: Sequence[str],
    sender_name: str = "",
    attachments: Sequence[Attachment] = (),
) -> Email:
    from_email = sender(sender_name)
    context = {**context, "from_email": from_email}
    subject = one_line(render_to_string(f"{TEMPLATES}/{kind}_subject.txt", context))
    context["subject"] = subject
    return Email(
        kind=kind,
        subject=subject,
        text=render_to_string(f"{TEMPLATES}/{kind}.txt", context).strip() + "\n",
        html=render_to_string(f"{TEMPLATES}/{kind}.html", context),
        to=list(to),
        from_email=from_email,
        attachments=list(attachments),
    )


# Characters with a meaning in an address header. formataddr quotes a name holding them, but
# Python's email package drops those quotes when it folds a long header, and the name's own
# '<…>' then reads as the sender's address: the name goes out without them.
ADDRESS_SPECIALS = str.maketrans("", "", '"\\<>,;:@()[]')


def sender(name: str) -> str:
    """DEFAULT_FROM_EMAIL's address under the merchant's name: 'Acme Tools <billing@…>'."""
    _, address = parseaddr(settings.DEFAULT_FROM_EMAIL)
    clean = one_line(name.translate(ADDRESS_SPECIALS))[:80]
    return formataddr((clean, address)) if clean and address else settings.DEFAULT_FROM_EMAIL


# The emails -----------------------------------------------------------------------------------

PAYER_REQUESTS = (EmailKind.INVOICE, EmailKind.REMINDER_DUE, EmailKind.REMINDER_OVERDUE)


def invoice_email(
    invoice: Invoice,
    *,
    kind: str = EmailKind.INVOICE,
    to: Sequence[str] = (),
    items: Sequence[LineItem] | None = None,
    attach: bool = True,
    preview: bool = False,
) -> Email:
    """The invoice itself, or a reminder of it: pay button, amount, due date, PDF attached."""
    rows = list(invoice.items.all()) if items is None else list(items)
    today = timezone.localdate()
    context = {
        **_common(invoice.merchant, preview=preview),
        "kind": kind,
        "invoice": invoice,
        "customer": invoice.customer,
        "items": rows[:ITEMS_IN_BODY],
        "more_items": max(0, len(rows) - ITEMS_IN_BODY),
        "assets": pdf.assets_phrase(invoice.accepted_assets),
        "days_left": (invoice.due_date - today).days if invoice.due_date else None,
        "days_late": (today - invoice.due_date).days if invoice.due_date else None,
        "pdf_name": f"{invoice.reference}.pdf",
        "to": list(to),
        **_document_context(invoice),
    }
    attachments = []
    if attach:
        document = pdf.invoice_pdf(invoice, items=items)
        attachments.append(Attachment(document.filename, document.content))
    return build(kind, context, to=to, sender_name=invoice.merchant.name, attachments=attachments)


def _document_context(invoice: Invoice) -> dict[str, Any]:
    doc = document_of(invoice)
    return {
        "seller": doc["seller"],
        "methods": doc["payment_methods"],
        "taxes": invoice.taxes,
    }


def receipt_email(receipt: Receipt, *, to: Sequence[str], attach: bool = True) -> Email:
    invoice = receipt.invoice
    context = {
        **_common(invoice.merchant),
        "invoice": invoice,
        "customer": invoice.customer,
        "receipt": receipt,
        "pdf_name": f"{receipt.reference_display}-receipt.pdf",
        "to": list(to),
        **_document_context(invoice),
    }
    attachments = []
    if attach:
        document = pdf.receipt_pdf(receipt)
        attachments.append(Attachment(document.filename, document.content))
    return build(
        EmailKind.RECEIPT,
        context,
        to=to,
        sender_name=invoice.merchant.name,
        attachments=attachments,
    )


def merchant_paid_email(receipt: Receipt, *, to: Sequence[str]) -> Email:
    invoice = receipt.invoice
    context = {
        **_common(invoice.merchant),
        "invoice": invoice,
        "customer": invoice.customer,
        "receipt": receipt,
        "dashboard_url": _dashboard_url(invoice),
        "to": list(to),
    }
    return build(EmailKind.MERCHANT_PAID, context, to=to)


def merchant_unresolved_email(invoice: Invoice, *, reason: str, to: Sequence[str]) -> Email:
    context = {
        **_common(invoice.merchant),
        "invoice": invoice,
        "customer": invoice.customer,
        "reason": reason,
        "dashboard_url": _dashboard_url(invoice),
        "to": list(to),
    }
    return build(EmailKind.MERCHANT_UNRESOLVED, context, to=to)


def compliance_hold_email(invoice: Invoice, *, reason: str, to: Sequence[str]) -> Email:
    context = {
        **_common(invoice.merchant),
        "invoice": invoice,
        "customer": invoice.customer,
        "reason": reason,
        "dashboard_url": _dashboard_url(invoice),
        "to": list(to),
    }
    return build(EmailKind.COMPLIANCE_HOLD, context, to=to)


def refund_claim_email(
    invoice: Invoice, *, claim_url: str, received: str, to: Sequence[str]
) -> Email:
    context = {
        **_common(invoice.merchant),
        "invoice": invoice,
        "customer": invoice.customer,
        "claim_url": claim_url,
        "received": received,
        "to": list(to),
    }
    return build(EmailKind.REFUND_CLAIM, context, to=to, sender_name=invoice.merchant.name)


def credit_note_email(note: CreditNote, *, to: Sequence[str], attach: bool = True) -> Email:
    invoice = note.invoice
    context = {
        **_common(invoice.merchant),
        "invoice": invoice,
        "customer": invoice.customer,
        "note": note,
        "lines": _credit_lines(note),
        "seller": document_of(invoice)["seller"],
        "pdf_name": f"{note.reference}.pdf",
        "to": list(to),
    }
    attachments = []
    if attach:
        document = pdf.credit_note_pdf(note)
        attachments.append(Attachment(document.filename, document.content))
    return build(
        EmailKind.CREDIT_NOTE,
        context,
        to=to,
        sender_name=invoice.merchant.name,
        attachments=attachments,
    )


def _credit_lines(note: CreditNote) -> list[dict[str, Any]]:
    return [{**line, "amount": Decimal(line["amount"])} for line in note.lines]


def email_for_delivery(delivery: EmailDelivery, *, attach: bool = True) -> Email:
    """Rebuild a queued email from its row: what it says is decided when it is sent."""
    invoice = delivery.invoice
    to = delivery.recipients
    data = delivery.context
    if delivery.kind in PAYER_REQUESTS:
        return invoice_email(invoice, kind=delivery.kind, to=to, attach=attach)
    if delivery.kind == EmailKind.RECEIPT:
        receipt = invoice.receipts.get(pk=data["receipt"])
        return receipt_email(receipt, to=to, attach=attach)
    if delivery.kind == EmailKind.MERCHANT_PAID:
        return merchant_paid_email(invoice.receipts.get(pk=data["receipt"]), to=to)
    if delivery.kind == EmailKind.MERCHANT_UNRESOLVED:
        return merchant_unresolved_email(invoice, reason=data.get("reason", ""), to=to)
    if delivery.kind == EmailKind.CREDIT_NOTE:
        note = invoice.credit_notes.get(pk=data["credit_note"])
        return credit_note_email(note, to=to, attach=attach)
    if delivery.kind == EmailKind.COMPLIANCE_HOLD:
        return compliance_hold_email(invoice, reason=data.get("reason", ""), to=to)
    if delivery.kind == EmailKind.REFUND_CLAIM:
        return refund_claim_email(
            invoice, claim_url=data["claim_url"], received=data.get("received", ""), to=to
        )
    raise ValueError(f"Unknown email kind {delivery.kind!r}")


# Helpers --------------------------------------------------------------------------------------


def _common(merchant: Merchant, *, preview: bool = False) -> dict[str, Any]:
    brand = merchant.brand_colour if HEX_COLOUR.fullmatch(merchant.brand_colour) else "#4f46e5"
    return {
        "merchant": merchant,
        "brand": brand,
        "brand_ink": _ink_on(brand),
        "site_url": settings.SITE_URL,
        "preview": preview,
        "today": timezone.localdate(),
    }


def _ink_on(colour: str) -> str:
    """White or near-black text, whichever reads better on the brand colour."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#0f172a" if (0.299 * r + 0.587 * g + 0.114 * b) > 160 else "#ffffff"


def _dashboard_url(invoice: Invoice) -> str:
    return settings.SITE_URL + reverse("invoice_detail", kwargs={"pk": invoice.pk})
