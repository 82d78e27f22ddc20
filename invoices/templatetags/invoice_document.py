"""The invoice document (seller, buyer, payment methods) for pages rendered by other apps,
such as the payer's page, without those apps knowing about snapshots."""

from typing import Any

from django import template

from invoices.document import document_of
from invoices.models import Invoice

register = template.Library()


@register.simple_tag
def invoice_document(invoice: Invoice) -> dict[str, Any]:
    return document_of(invoice)
