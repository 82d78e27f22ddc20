"""What an invoice document says about its parties and how to pay it.

A draft reads the merchant's settings, the customer and the chosen payment methods as they are
now; issuing copies them into `Invoice.document`, and from then on every rendering (page, PDF,
email, API, callbacks) reads the copy, so a sent invoice never changes after the fact.
"""

from typing import Any

from customers.models import Customer
from invoices.models import Invoice
from merchants.models import ADDRESS_FIELDS, Merchant, address_lines

SELLER_FIELDS = (
    "legal_name",
    "tax_id",
    "registration_number",
    "contact_email",
    "contact_phone",
)


def _address(party: Merchant | Customer) -> dict[str, str]:
    return {key: str(getattr(party, key) or "") for key in ADDRESS_FIELDS}


def seller_snapshot(merchant: Merchant) -> dict[str, Any]:
    return {
        "name": merchant.name,
        **{key: getattr(merchant, key) for key in SELLER_FIELDS},
        "address": _address(merchant),
    }


def buyer_snapshot(customer: Customer | None) -> dict[str, Any] | None:
    if customer is None:
        return None
    return {
        "name": customer.name,
        "email": customer.email,
        "company": customer.company,
        "tax_id": customer.tax_id,
        "address": _address(customer),
    }


def methods_snapshot(invoice: Invoice) -> list[dict[str, Any]]:
    if invoice.pk is None:
        return [method.snapshot() for method in getattr(invoice, "preview_methods", [])]
    return [method.snapshot() for method in invoice.payment_methods.all()]


def document_snapshot(invoice: Invoice) -> dict[str, Any]:
    """The document as of now; what issuing stores."""
    return {
        "seller": seller_snapshot(invoice.merchant),
        "buyer": buyer_snapshot(invoice.customer),
        "payment_methods": methods_snapshot(invoice),
    }


def document_of(invoice: Invoice) -> dict[str, Any]:
    """The stored copy once issued; the live view for a draft or preview. Each party comes
    with its printed address lines."""
    document = invoice.document or document_snapshot(invoice)
    seller = dict(document["seller"])
    seller["address_lines"] = address_lines(seller.get("address", {}))
    seller["display_name"] = seller.get("legal_name") or seller.get("name", "")
    buyer = document.get("buyer")
    if buyer is not None:
        buyer = dict(buyer)
        buyer["address_lines"] = address_lines(buyer.get("address", {}))
    return {
        "seller": seller,
        "buyer": buyer,
        "payment_methods": list(document.get("payment_methods", [])),
    }
