"""Every API route tried with another merchant's key.

charlie's merchant (Globex) holds a valid key; Acme owns the invoices and the customer. Any
id, foreign id or filter naming an Acme object must answer exactly as if it did not exist
(404, or an empty list), and nothing of anyone's may change.

To cover a new route add a `Case` to CASES (or, for a route taking no id, to NO_ID);
`test_every_api_route_has_a_tenancy_case` fails until you do.
"""

import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest

from checkout.models import RefundKind, RefundRequest
from checkout.refunds import refund_give_address, refund_request
from config.api import api
from customers.models import Customer
from invoices.models import (
    CallbackDelivery,
    CreditNote,
    Invoice,
    InvoiceEvent,
    InvoiceKind,
    LineItem,
)
from merchants.integrations import api_key_create
from merchants.models import IdempotencyRecord
from tests.factories import CustomerFactory, make_invoice, make_paid_payment

# A payer's own wallet (anvil's third default account), with its EIP-55 checksum.
PAYER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}

NO_INVOICE = {"detail": "No such invoice.", "code": "not_found", "fields": {}}
NO_CUSTOMER = {"detail": "No such customer.", "code": "not_found", "fields": {}}
NO_REFUND = {"detail": "No such refund.", "code": "not_found", "fields": {}}
NO_FOREIGN_ID = {"detail": "No invoice has this foreign ID.", "code": "not_found", "fields": {}}
EMPTY_PAGE = {"items": [], "next_cursor": None}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # the OpenAPI path template
    status: int  # what the outsider gets
    answer: Any  # the outsider's exact JSON answer
    owner_status: int  # what Acme's own key gets for the same request: the ids are real
    target: str = "invoice"  # which Acme invoice fills {invoice_id}
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}{' ' + self.label if self.label else ''}"


CASES = [
    Case("GET", "/api/v1/invoices/{invoice_id}", 404, NO_INVOICE, 200),
    Case(
        "PATCH",
        "/api/v1/invoices/{invoice_id}",
        404,
        NO_INVOICE,
        200,
        body={"tracking_id": "hijacked", "callback_url": "https://evil.example.com/x"},
        label="integration fields",
    ),
    Case(
        "PATCH",
        "/api/v1/invoices/{invoice_id}",
        404,
        NO_INVOICE,
        200,
        body={"amount": "0.01"},
        label="amount",
    ),
    Case("POST", "/api/v1/invoices/{invoice_id}/cancel", 404, NO_INVOICE, 200),
    Case("POST", "/api/v1/invoices/{invoice_id}/close", 404, NO_INVOICE, 200, target="permanent"),
    Case(
        "POST",
        "/api/v1/invoices/{invoice_id}/credit-notes",
        404,
        NO_INVOICE,
        201,
        body={"reason": "Returned", "lines": [{"position": 1, "quantity": "1"}]},
    ),
    Case("GET", "/api/v1/invoices/{invoice_id}/payments", 404, NO_INVOICE, 200),
    Case("GET", "/api/v1/invoices/{invoice_id}/transfers", 404, NO_INVOICE, 200),
    Case("GET", "/api/v1/customers/{customer_id}", 404, NO_CUSTOMER, 200),
    Case(
        "PATCH",
        "/api/v1/customers/{customer_id}",
        404,
        NO_CUSTOMER,
        200,
        body={"name": "Hijacked", "email": "thief@globex.test"},
    ),
    Case("DELETE", "/api/v1/customers/{customer_id}", 404, NO_CUSTOMER, 200),
    Case(
        "GET",
        "/api/v1/invoices/by-foreign-id",
        404,
        NO_FOREIGN_ID,
        200,
        query={"foreign_id": "acme-order-1"},
    ),
    Case(
        "GET",
        "/api/v1/invoices",
        200,
        EMPTY_PAGE,
        200,
        query={"customer_id": "{customer_id}"},
        label="customer_id filter",
    ),
    Case(
        "GET",
        "/api/v1/invoices",
        200,
        EMPTY_PAGE,
        200,
        query={"foreign_id": "acme-order-1"},
        label="foreign_id filter",
    ),
    Case(
        "POST",
        "/api/v1/invoices",
        404,
        {
            "detail": "No such customer.",
            "code": "not_found",
            "fields": {"customer_id": ["No such customer of yours."]},
        },
        201,
        body={
            "currency": "USD",
            "amount": "10.00",
            "customer_id": "{customer_id}",
            "foreign_id": "globex-order-1",
        },
        label="customer_id of Acme",
    ),
    Case("GET", "/api/v1/customers", 200, EMPTY_PAGE, 200, query={"q": "ada@example.org"}),
    # Refunds: "paid" is an Acme invoice whose order received 300 USDC, 100 of it in a
    # refund whose payer gave an address.
    Case("GET", "/api/v1/invoices/{invoice_id}/refunds", 404, NO_INVOICE, 200, target="paid"),
    Case(
        "POST",
        "/api/v1/invoices/{invoice_id}/refunds",
        404,
        NO_INVOICE,
        201,
        target="paid",
        body={"amount": "5", "reason": "Refund to the thief"},
    ),
    Case(
        "GET",
        "/api/v1/refunds",
        200,
        EMPTY_PAGE,
        200,
        query={"invoice_id": "{paid}"},
        label="invoice_id filter",
    ),
    Case("GET", "/api/v1/refunds/{refund_id}", 404, NO_REFUND, 200),
    Case(
        "POST",
        "/api/v1/refunds/{refund_id}/sent",
        404,
        NO_REFUND,
        200,
        body={"tx_hash": "0x" + "ab" * 32},
    ),
    Case(
        "POST",
        "/api/v1/refunds/{refund_id}/paid-outside",
        404,
        NO_REFUND,
        200,
        body={"reference": "Cash"},
    ),
    Case(
        "POST",
        "/api/v1/refunds/{refund_id}/decline",
        404,
        NO_REFUND,
        200,
        body={"reason": "Declined by an outsider"},
    ),
]

# Routes that take no id of anything: they only ever see the caller's own merchant.
NO_ID = {
    ("POST", "/api/v1/customers"),
    ("GET", "/api/v1/balances"),
    ("GET", "/api/v1/ledger"),
    # Lists of the key's own merchant: tests/api/test_documents_api.py tries them as outsider.
    ("GET", "/api/v1/tax-rates"),
    ("GET", "/api/v1/payment-methods"),
}


@pytest.fixture
def world(acme, alice, acme_customer):
    invoice = make_invoice(acme, customer=acme_customer, issue=True, foreign_id="acme-order-1")
    permanent = make_invoice(acme, issue=True, kind=InvoiceKind.PERMANENT)
    payer = CustomerFactory(merchant=acme, name="Grace Hopper", email="grace@example.org")
    paid = make_invoice(acme, customer=payer, issue=True)
    payment = make_paid_payment(paid, 300 * 10**6)
    refund = refund_request(
        payment=payment, kind=RefundKind.MANUAL, reason="Returned", amount=Decimal(100 * 10**6)
    )
    refund_give_address(refund=refund, address=PAYER, again=PAYER, no_memo_needed=True)
    return {
        "invoice": invoice.pk,
        "permanent": permanent.pk,
        "paid": paid.pk,
        "customer_id": acme_customer.pk,
        "refund_id": refund.pk,
    }


@pytest.fixture
def globex_key(globex, charlie):
    return api_key_create(merchant=globex, name="Shop", by=charlie).plaintext


@pytest.fixture
def acme_key(acme, alice):
    return api_key_create(merchant=acme, name="Shop", by=alice).plaintext


def _fill(value: Any, world: dict[str, int]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return world[value[1:-1]]
    return value


def send(client, case: Case, world: dict[str, int], key: str):
    path = case.path.format(
        invoice_id=world[case.target],
        customer_id=world["customer_id"],
        refund_id=world["refund_id"],
    )
    if case.query:
        path += "?" + urlencode({name: _fill(value, world) for name, value in case.query.items()})
    body = {name: _fill(value, world) for name, value in (case.body or {}).items()}
    return client.generic(
        case.method,
        path,
        data=json.dumps(body) if case.body is not None else "",
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )


def everything() -> dict[str, list[dict[str, Any]]]:
    """Every row the API could write, in a comparable form."""
    return {
        model.__name__: list(model.objects.order_by("pk").values())
        for model in (
            Invoice,
            LineItem,
            InvoiceEvent,
            Customer,
            CallbackDelivery,
            IdempotencyRecord,
            CreditNote,
            RefundRequest,
        )
    }


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_another_merchants_key_finds_nothing_and_changes_nothing(client, world, globex_key, case):
    before = everything()

    response = send(client, case, world, globex_key)

    assert response.status_code == case.status
    assert response.json() == case.answer
    assert everything() == before


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_the_owners_key_reaches_the_same_objects(client, world, acme_key, case):
    # The control: the very same request with Acme's key succeeds, so the 404s above come
    # from the tenant boundary and not from ids that point nowhere.
    response = send(client, case, world, acme_key)

    assert response.status_code == case.owner_status
    if case.answer == EMPTY_PAGE:
        assert len(response.json()["items"]) == 1


def test_every_api_route_has_a_tenancy_case():
    routes = {
        (method.upper(), path)
        for path, operations in api.get_openapi_schema()["paths"].items()
        for method in operations
        if method in HTTP_METHODS
    }
    covered = {(case.method, case.path) for case in CASES}

    assert sorted(routes - covered - NO_ID) == []  # new routes: add a Case or list in NO_ID
    assert sorted((covered | NO_ID) - routes) == []  # stale entries
    assert sorted(covered & NO_ID) == []
    assert sorted(path for _, path in NO_ID if "{" in path) == []
