"""The invoice document over the API: discounts, taxes, notes, terms and payment methods in,
the same figures and snapshot out (the callbacks carry the very same snapshot)."""

import json
from decimal import Decimal

import pytest

from invoices.callbacks import invoice_snapshot
from invoices.models import CreditNote, Invoice, PaymentMethod, TaxRate
from merchants.integrations import api_key_create
from tests.api.test_api import INVOICES, get, patch, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_key(acme, alice):
    return api_key_create(merchant=acme, name="Shop", by=alice).plaintext


@pytest.fixture
def globex_key(globex, charlie):
    return api_key_create(merchant=globex, name="Shop", by=charlie).plaintext


@pytest.fixture
def rates(acme):
    acme.legal_name, acme.tax_id, acme.country, acme.default_terms_days = (
        "Acme Tools GmbH",
        "DE123",
        "DE",
        14,
    )
    acme.invoice_footer = "Footer of Acme"
    acme.save()
    return (
        TaxRate.objects.create(merchant=acme, name="VAT", percent=Decimal("20")),
        TaxRate.objects.create(merchant=acme, name="VAT", percent=Decimal("5")),
    )


@pytest.fixture
def sepa(acme):
    return PaymentMethod.objects.create(merchant=acme, name="SEPA", iban="DE89370400440532013000")


def body(rates, sepa, **extra):
    vat, reduced = rates
    return {
        "currency": "USD",
        "items": [
            {
                "name": "Widget",
                "quantity": "3",
                "unit_price": "19.99",
                "discount": {"kind": "percent", "value": "10"},
                "tax_rate_id": vat.pk,
            },
            {"name": "Book", "unit_price": "100.00", "tax_rate_id": reduced.pk},
        ],
        "discount": {"kind": "percent", "value": "10"},
        "notes": "Thanks!",
        "terms": "Pay promptly.",
        "po_number": "PO-1",
        "payment_method_ids": [sepa.pk],
        **extra,
    }


def test_round_trip_carries_the_worked_example_and_the_document(
    client, acme, acme_key, rates, sepa
):
    created = post(client, INVOICES, acme_key, body(rates, sepa))

    assert created.status_code == 201, created.content
    data = created.json()
    assert (data["subtotal"], data["tax_total"], data["total"]) == ("153.97", "14.21", "152.78")
    assert data["discount"] == {"kind": "percent", "value": "10", "amount": "15.40"}
    assert data["taxes"] == [
        {"name": "VAT", "percent": "20", "inclusive": False, "taxable": "48.57", "tax": "9.71"},
        {"name": "VAT", "percent": "5", "inclusive": False, "taxable": "90.00", "tax": "4.50"},
    ]
    assert data["items"][0]["discount"] == {"kind": "percent", "value": "10", "amount": "6.00"}
    assert data["items"][0]["amount"] == "53.97"
    assert data["items"][0]["tax"] == {
        "name": "VAT",
        "percent": "20",
        "inclusive": False,
        "rate_id": rates[0].pk,
        "amount": "9.71",
    }
    # Left out: the merchant's defaults.
    assert (data["terms_days"], data["footer"]) == (14, "Footer of Acme")
    assert (data["notes"], data["terms"], data["po_number"]) == ("Thanks!", "Pay promptly.", "PO-1")
    assert data["seller"]["legal_name"] == "Acme Tools GmbH"
    assert data["seller"]["address_lines"] == ["Germany"]
    assert [m["iban"] for m in data["payment_methods"]] == ["DE89370400440532013000"]
    invoice = Invoice.objects.get(pk=data["id"])
    assert invoice.due_date is not None
    assert data["due_date"] == invoice.due_date.isoformat()
    # The GET and the callbacks answer with the same snapshot.
    fetched = get(client, f"{INVOICES}/{invoice.pk}", acme_key).json()
    times = ("created_at", "issued_at")  # the POST's answer goes through the idempotency record
    assert {k: v for k, v in fetched.items() if k not in times} == {
        k: v for k, v in data.items() if k not in times
    }
    assert json.loads(json.dumps(invoice_snapshot(invoice), default=str))["total"] == "152.78"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"discount": {"kind": "percent", "value": "101"}},
            "discount.value",
            'Send a percent from 0 to 100 such as "10", at most 4 decimals.',
        ),
        (
            {"discount": {"kind": "percent", "value": "12.34567"}},
            "discount.value",
            'Send a percent from 0 to 100 such as "10", at most 4 decimals.',
        ),
        (
            # The service's rule, under the name the request used (the form's is discount_value).
            {"discount": {"kind": "amount", "value": "153.98"}},
            "discount.value",
            "The discount may be at most 153.97 USD.",
        ),
        ({"terms_days": 400}, "terms_days", "Input should be less than or equal to 365"),
    ],
)
def test_bad_document_input_answers_422_by_field(
    client, acme, acme_key, rates, sepa, change, field, message
):
    response = post(client, INVOICES, acme_key, body(rates, sepa, **change))

    assert response.status_code == 422, response.content
    assert response.json()["fields"][field] == [message]
    assert Invoice.objects.count() == 0


def test_a_line_discount_above_the_line_answers_422(client, acme_key, rates, sepa):
    payload = body(rates, sepa)
    payload["items"][1]["discount"] = {"kind": "amount", "value": "100.01"}

    response = post(client, INVOICES, acme_key, payload)

    assert response.status_code == 422
    assert response.json()["fields"] == {
        "items.1.discount.value": ["The discount may be at most 100.00 USD."]
    }


def test_another_merchants_rates_and_methods_are_unknown_to_a_key(client, globex_key, rates, sepa):
    assert get(client, "/api/v1/tax-rates", globex_key).json() == []
    assert get(client, "/api/v1/payment-methods", globex_key).json() == []

    response = post(client, INVOICES, globex_key, body(rates, sepa))

    # Named in the body or in the path, an object that is not yours is not found.
    assert response.status_code == 404
    assert response.json() == {
        "detail": "No such tax rate.",
        "code": "not_found",
        "fields": {
            "items.0.tax_rate_id": ["No such tax rate of yours."],
            "items.1.tax_rate_id": ["No such tax rate of yours."],
        },
    }
    assert Invoice.objects.count() == 0


def test_an_unknown_payment_method_answers_404_and_stores_nothing(client, acme_key, rates, sepa):
    response = post(client, INVOICES, acme_key, body(rates, sepa, payment_method_ids=[2**40]))

    assert response.status_code == 404
    assert response.json() == {
        "detail": "No such payment method.",
        "code": "not_found",
        "fields": {"payment_method_ids": ["Give ids of your active payment methods."]},
    }
    assert Invoice.objects.count() == 0


def test_the_owner_lists_its_rates_and_methods(client, acme_key, rates, sepa):
    vat, reduced = rates
    listed = get(client, "/api/v1/tax-rates", acme_key).json()
    assert [(r["id"], r["percent"]) for r in listed] == [(reduced.pk, "5"), (vat.pk, "20")]
    methods = get(client, "/api/v1/payment-methods", acme_key).json()
    assert [(m["id"], m["name"]) for m in methods] == [(sepa.pk, "SEPA")]


# Conformance: what the OpenAPI document promises ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/invoices",
        "/api/nothing",
        "/api/v1/invoices/abc",
        "/api/v1/invoices/1/x",
        # Found by fuzzing: a line break in the path got the site's HTML 404.
        "/api/v1/invoices/%C2%A7%0A%F1%BA%98%BB",
        "/api/v1/customers/%0A",
        "/api/%0A",
    ],
)
@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
def test_unknown_api_paths_answer_the_json_error(path, method):
    from django.test import Client

    # Enforced CSRF, as for a real client: a POST to no route must not get a 403 page.
    response = getattr(Client(enforce_csrf_checks=True), method)(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "No such API endpoint.", "code": "not_found", "fields": {}}


def test_every_operation_documents_its_error_statuses(client):
    schema = client.get("/api/openapi.json").json()

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            expected = {"401", "422", "429"} | ({"404"} if "{" in path else set())
            assert expected <= statuses, (method, path, statuses)
            for status in expected:
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}


def _credit_notes(invoice_id: int) -> str:
    return f"{INVOICES}/{invoice_id}/credit-notes"


@pytest.fixture
def seats(client, acme_key):
    response = post(
        client,
        INVOICES,
        acme_key,
        {"currency": "USD", "items": [{"name": "Seats", "quantity": "5", "unit_price": "19.99"}]},
    )
    assert response.status_code == 201
    return response.json()["id"]


def test_credit_part_of_a_line_over_the_api(client, acme_key, seats):
    response = post(
        client,
        _credit_notes(seats),
        acme_key,
        {"reason": "2 seats returned", "lines": [{"position": 1, "quantity": "2"}]},
        **{"Idempotency-Key": "cn-1"},
    )

    assert response.status_code == 201
    note = response.json()
    assert (note["reference"], note["amount"], note["reason"]) == (
        "CN-00001",
        "39.98",
        "2 seats returned",
    )
    assert note["lines"] == [
        {
            "position": 1,
            "name": "Seats",
            "quantity": "2",
            "of_quantity": "5",
            "amount": "39.98",
            "tax": "0.00",
        }
    ]
    assert note["invoice"]["status"] == "open"
    assert note["invoice"]["credit_notes"][0]["lines"] == note["lines"]
    # Everything left (no lines): the other 3 seats; the invoice is closed.
    rest = post(client, _credit_notes(seats), acme_key, {"reason": "The rest"})
    assert (rest.status_code, rest.json()["amount"]) == (201, "59.97")
    assert rest.json()["invoice"]["status"] == "closed"
    again = post(client, _credit_notes(seats), acme_key, {"reason": "Again"})
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")


QUANTITY = 'Send a quantity above zero such as "2", at most 1000000, 4 decimals.'


@pytest.mark.parametrize(
    ("lines", "status", "fields"),
    [
        # Against what is stored: a line the invoice does not have, more than is left of one.
        ([{"position": 2, "quantity": "1"}], 404, {"lines.0.quantity": ["This invoice has no such line."]}),
        ([{"position": 1, "quantity": "6"}], 409, {"lines.0.quantity": ["At most 5 of this line is left to credit."]}),
        # Ill-formed in itself, as the schema says.
        ([{"position": 1, "quantity": "0"}], 422, {"lines.0.quantity": [QUANTITY]}),
        ([{"position": 1, "quantity": "-1"}], 422, {"lines.0.quantity": [QUANTITY]}),
        ([{"position": 1, "quantity": "1.00001"}], 422, {"lines.0.quantity": [QUANTITY]}),
        ([{"position": 1, "quantity": 2}], 422, {"lines.0.quantity": ['Send a string; amounts are decimal strings such as "19.99".']}),
    ],
)  # fmt: skip
def test_absurd_credit_quantities_are_field_errors(client, acme_key, seats, lines, status, fields):
    response = post(client, _credit_notes(seats), acme_key, {"reason": "x", "lines": lines})

    assert response.status_code == status
    assert response.json()["fields"] == fields
    assert not CreditNote.objects.exists()


def test_a_position_named_twice_is_credited_the_sum(client, acme_key, seats):
    lines = [{"position": 1, "quantity": "1"}, {"position": 1, "quantity": "2"}]
    response = post(client, _credit_notes(seats), acme_key, {"reason": "x", "lines": lines})
    assert (response.status_code, response.json()["lines"][0]["quantity"]) == (201, "3")

    # Still never beyond what is left (2 seats): the first mention is named.
    over = [{"position": 1, "quantity": "1"}, {"position": 1, "quantity": "2"}]
    response = post(client, _credit_notes(seats), acme_key, {"reason": "y", "lines": over})
    assert (response.status_code, response.json()["code"]) == (409, "credit_conflict")
    assert response.json()["fields"] == {
        "lines.0.quantity": ["At most 2 of this line is left to credit."]
    }
    # One without a quantity asks for all that is left, whatever else is asked of the line.
    rest = [{"position": 1, "quantity": "1"}, {"position": 1}]
    response = post(client, _credit_notes(seats), acme_key, {"reason": "z", "lines": rest})
    assert (response.status_code, response.json()["lines"][0]["quantity"]) == (201, "2")


def test_an_issued_one_time_invoice_needs_a_price_and_keeps_it(client, acme_key, seats):
    # The schema says so (anyOf); the API answers as it says.
    bare = post(client, INVOICES, acme_key, {"currency": "USD"})
    assert bare.status_code == 422
    zero = post(client, INVOICES, acme_key, {"currency": "USD", "amount": "0"})
    assert zero.status_code == 422
    draft = post(client, INVOICES, acme_key, {"currency": "USD", "issue": False})
    assert draft.status_code == 201
    schema = client.get("/api/openapi.json").json()["components"]["schemas"]
    assert "anyOf" in schema["InvoiceCreateIn"]["allOf"][-1]
    assets = schema["InvoiceCreateIn"]["properties"]["accepted_assets"]
    assert (assets["items"]["enum"], assets["maxItems"]) == (["USDT", "USDC", "ETH"], 3)

    # A zero total conflicts with the stored kind: 409, the invoice unchanged.
    response = patch(client, f"{INVOICES}/{seats}", acme_key, {"amount": "0"})
    assert (response.status_code, response.json()["code"]) == (409, "total_not_positive")
    assert response.json()["fields"] == {"amount": ["A one-time invoice needs a positive total."]}
    assert Invoice.objects.get(pk=seats).total == Decimal("99.95")


def test_unknown_query_parameters_are_refused_by_name(client, acme_key, seats):
    for path, params in [
        (INVOICES, {"stauts": "paid"}),
        (INVOICES, {"": ""}),
        (f"{INVOICES}/{seats}", {"expand": "items"}),
        ("/api/v1/tax-rates", {"limit": "1"}),
    ]:
        response = get(client, path, acme_key, **params)
        name = next(iter(params)) or "(empty name)"
        assert response.status_code == 422, path
        assert response.json()["fields"] == {name: ["Unknown query parameter."]}
    # Every declared one still works.
    known = {"status": "open", "limit": "5", "created_after": "2020-01-01", "foreign_id": "x"}
    assert get(client, INVOICES, acme_key, **known).status_code == 200
    assert get(client, f"{INVOICES}/by-foreign-id", acme_key, foreign_id="x").status_code == 404
    assert (
        get(client, "/api/v1/customers", acme_key, q="a", include_archived="true").status_code
        == 200
    )
    assert get(client, "/api/v1/ledger", acme_key, currency="USD", limit="2").status_code == 200
    # The key is checked first: an outsider learns nothing about parameters.
    assert client.get(INVOICES, {"stauts": "paid"}).status_code == 401


def test_a_payment_method_id_beyond_the_database_answers_422_not_500(client, acme_key, rates, sepa):
    # Schemathesis found it on SQLite: an id over 2**63 - 1 overflowed the query.
    response = post(client, INVOICES, acme_key, body(rates, sepa, payment_method_ids=[2**64]))

    assert response.status_code == 422, response.content
    assert any(key.startswith("payment_method_ids") for key in response.json()["fields"])
    assert Invoice.objects.count() == 0
