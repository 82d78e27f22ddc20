"""The REST API under /api/v1/, driven through django.test.Client with real API keys.

Every error has one shape, `{"detail", "code", "fields"}`; amounts travel as decimal strings.
"""

import json
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import jsonschema_rs
import pytest
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.test import Client

from customers.models import Customer
from invoices.callbacks import invoice_snapshot
from invoices.models import Invoice, InvoiceKind, PaymentMethod
from invoices.services import invoice_cancel, invoice_mark_paid
from merchants.integrations import api_key_create, api_key_revoke
from merchants.models import ApiKey, IdempotencyRecord
from tests.conftest import require_postgres
from tests.factories import CustomerFactory, make_invoice

INVOICES = "/api/v1/invoices"
CUSTOMERS = "/api/v1/customers"

TWO_ITEMS = {
    "currency": "USD",
    "items": [
        {"name": "Consulting", "quantity": "2", "unit_price": "150.00"},
        {"name": "Hosting", "description": "March", "unit_price": "19.99"},
    ],
}


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def post(client, path, key, body=None, **headers):
    return client.post(
        path,
        data=json.dumps(body if body is not None else {}),
        content_type="application/json",
        headers=auth(key, **headers),
    )


def patch(client, path, key, body):
    return client.patch(
        path, data=json.dumps(body), content_type="application/json", headers=auth(key)
    )


def get(client, path, key, **params):
    return client.get(path, params, headers=auth(key))


@pytest.fixture
def acme_key(acme, alice):
    return api_key_create(merchant=acme, name="Shop", by=alice).plaintext


@pytest.fixture
def globex_key(globex, charlie):
    return api_key_create(merchant=globex, name="Shop", by=charlie).plaintext


# Creating invoices ---------------------------------------------------------------------------


def test_create_with_line_items_answers_201_with_the_open_invoice(client, acme, acme_key):
    response = post(client, INVOICES, acme_key, TWO_ITEMS)

    assert response.status_code == 201
    body = response.json()
    invoice = Invoice.objects.get(merchant=acme)
    assert body["id"] == invoice.pk
    assert body["status"] == "open"
    assert body["kind"] == "one_time"
    assert body["currency"] == "USD"
    assert body["subtotal"] == "319.99"
    assert body["total"] == "319.99"
    assert body["pay_url"].startswith("http://testserver/pay/")
    assert body["pay_url"] == invoice.pay_url
    assert body["reference"] == invoice.reference
    assert body["failure_reason"] is None
    assert body["customer"] is None
    assert body["items"] == [
        {
            "name": "Consulting",
            "description": "",
            "quantity": "2",
            "unit_price": "150.00",
            "discount": None,
            "amount": "300.00",
            "tax": None,
        },
        {
            "name": "Hosting",
            "description": "March",
            "quantity": "1",
            "unit_price": "19.99",
            "discount": None,
            "amount": "19.99",
            "tax": None,
        },
    ]


def test_create_answers_what_reading_the_invoice_back_shows(client, acme, acme_key):
    customer = CustomerFactory(merchant=acme, name="Ada", email="ada@example.org")
    body = {
        **TWO_ITEMS,
        "customer_id": customer.pk,
        "discount": {"kind": "percent", "value": "10"},
        "notes": "Thanks",
        "terms_days": 14,
    }
    created = post(client, INVOICES, acme_key, body).json()
    # The answer is built from the rows in hand, not read back: it must be what the rows
    # read back show.
    stored = Invoice.objects.select_related("customer").get(pk=created["id"])
    assert created == json.loads(json.dumps(invoice_snapshot(stored), cls=DjangoJSONEncoder))
    assert created["customer"]["id"] == customer.pk
    assert created["discount"]["amount"] == "32.00"


def test_create_costs_a_fixed_few_queries(client, acme, acme_key, django_assert_num_queries):
    post(client, INVOICES, acme_key, TWO_ITEMS)  # the key's last use is noted once a minute
    # The key (one indexed query); the number taken and counted on, and the invoice, its
    # items and its events inserted: one statement on PostgreSQL, which also says the
    # merchant has no webhook endpoint to read; on SQLite the UPDATE, then three INSERTs.
    # The answer is built from what was written.
    writes = ["WITH"] if connection.vendor == "postgresql" else ["UPDATE", *["INSERT"] * 3]
    with django_assert_num_queries(1 + len(writes)) as captured:
        response = post(client, INVOICES, acme_key, TWO_ITEMS)
    assert response.status_code == 201
    assert response.json()["reference"] == "INV-00002"
    sql = [query["sql"] for query in captured.captured_queries]
    assert [q.split()[0] for q in sql[1:]] == writes


def test_references_are_padded_to_five_digits_and_never_cut(client, acme, acme_key):
    acme.next_invoice_number = 99999
    acme.save(update_fields=["next_invoice_number"])

    first = post(client, INVOICES, acme_key, TWO_ITEMS).json()
    second = post(client, INVOICES, acme_key, TWO_ITEMS).json()

    assert (first["reference"], second["reference"]) == ("INV-99999", "INV-100000")
    assert Invoice.objects.get(pk=second["id"]).number == 100000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_create_outside_a_transaction_is_one_statement_that_commits_what_it_answers(
    client, acme, acme_key, django_assert_num_queries
):
    require_postgres()
    post(client, INVOICES, acme_key, TWO_ITEMS)  # the key's last use is noted once a minute
    method = PaymentMethod.objects.create(merchant=acme, name="SEPA", iban="DE89370400440532013000")
    body = {**TWO_ITEMS, "payment_method_ids": [method.pk]}
    # The key, the payment method (looked up by the handler, checked by the service), then
    # the creation: no BEGIN or COMMIT around it, the statement is its own transaction.
    with django_assert_num_queries(4) as captured:
        response = post(client, INVOICES, acme_key, body)

    assert response.status_code == 201
    assert [q["sql"].split()[0] for q in captured.captured_queries] == [*["SELECT"] * 3, "WITH"]
    created = response.json()
    assert created["reference"] == "INV-00002"
    stored = Invoice.objects.select_related("customer").get(pk=created["id"])
    assert created == json.loads(json.dumps(invoice_snapshot(stored), cls=DjangoJSONEncoder))
    assert [e.type for e in stored.events.order_by("pk")] == ["invoice.created", "invoice.issued"]
    assert {e.merchant_id for e in stored.events.all()} == {acme.pk}
    assert list(Invoice.objects.values_list("number", flat=True).order_by("number")) == [1, 2]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_hooked_merchants_creation_writes_its_callback_in_the_invoices_transaction(
    client, acme, acme_key, django_assert_num_queries
):
    from config.celery import app
    from invoices.models import CallbackDelivery
    from merchants.integrations import webhook_endpoint_create

    require_postgres()
    post(client, INVOICES, acme_key, TWO_ITEMS)  # before the endpoint: no callback
    endpoint = webhook_endpoint_create(
        merchant=acme, url="https://hooks.example.com/in", events=["invoice.created"]
    )
    # The task each commit sends stays on the broker: no delivery is tried from here.
    app.conf.task_always_eager = False
    try:
        with django_assert_num_queries(7) as captured:
            response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "callback_url": ""})
    finally:
        app.conf.task_always_eager = True
        with app.connection_for_write() as broker:
            broker.default_channel.queue_purge("callbacks")

    assert response.status_code == 201
    # The one-statement creation wrote nothing for a merchant with an endpoint; the
    # transaction then numbers the invoice, reads the endpoints and writes the outbox row.
    assert [q["sql"].split()[0] for q in captured.captured_queries] == [
        "SELECT",
        "WITH",
        "BEGIN",
        "WITH",
        "SELECT",
        "INSERT",
        "COMMIT",
    ]
    invoice = Invoice.objects.get(pk=response.json()["id"])
    assert invoice.number == 2  # the first try took no number
    delivery = CallbackDelivery.objects.get()
    assert (delivery.invoice_id, delivery.endpoint_id) == (invoice.pk, endpoint.pk)
    assert delivery.message_id == f"msg_{invoice.events.get(type='invoice.created').pk}"
    assert json.loads(delivery.payload)["data"]["invoice"]["reference"] == "INV-00002"


def test_create_with_a_single_amount_makes_one_item(client, acme_key):
    response = post(
        client,
        INVOICES,
        acme_key,
        {"currency": "EUR", "amount": "42.50", "description": "Order 1001\nThanks!"},
    )

    assert response.status_code == 201
    body = response.json()
    assert body["total"] == "42.50"
    assert body["description"] == "Order 1001\nThanks!"
    assert body["items"] == [
        {
            "name": "Order 1001",
            "description": "",
            "quantity": "1",
            "unit_price": "42.50",
            "discount": None,
            "amount": "42.50",
            "tax": None,
        }
    ]


def test_create_with_issue_false_keeps_a_draft(client, acme_key):
    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "issue": False})

    assert response.status_code == 201
    assert response.json()["status"] == "draft"
    assert response.json()["issued_at"] is None
    assert Invoice.objects.get().status == "draft"


def test_amounts_as_json_numbers_are_refused(client, acme_key):
    items = [{"name": "Consulting", "quantity": "2", "unit_price": 150}]

    response = post(client, INVOICES, acme_key, {"currency": "USD", "items": items})

    assert response.status_code == 422
    assert response.json()["code"] == "invalid"
    assert list(response.json()["fields"]) == ["items.0.unit_price"]
    assert Invoice.objects.count() == 0


def test_a_single_amount_as_a_json_number_is_refused(client, acme_key):
    response = post(client, INVOICES, acme_key, {"currency": "USD", "amount": 19.99})

    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["amount"]
    assert Invoice.objects.count() == 0


def test_unknown_body_field_is_refused(client, acme_key):
    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "colour": "red"})

    assert response.status_code == 422
    assert response.json() == {
        "detail": "colour: Unknown field.",
        "code": "invalid",
        "fields": {"colour": ["Unknown field."]},
    }
    assert Invoice.objects.count() == 0


def test_unknown_currency_is_refused(client, acme_key):
    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "currency": "XYZ"})

    assert response.status_code == 422
    assert response.json()["fields"] == {"currency": ["Unknown currency 'XYZ'."]}
    assert Invoice.objects.count() == 0


def test_unknown_accepted_asset_is_refused(client, acme_key):
    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "accepted_assets": ["DOGE"]})

    assert response.status_code == 422
    assert response.json()["fields"] == {"accepted_assets": ["Unknown payment asset: DOGE."]}
    assert Invoice.objects.count() == 0


TRILLION = "1,000,000,000,000.00 GBP"


def test_a_line_worth_more_than_a_trillion_is_refused_though_a_discount_clears_the_total(
    client, acme_key
):
    """Each price and quantity in bounds, their product not: no figure of the invoice may
    outgrow what is stored, even when a 100% invoice discount brings the total to nothing."""
    body = {
        "currency": "GBP",
        "discount": {"kind": "percent", "value": "100"},
        "items": [
            {"name": "At the limit", "quantity": "1", "unit_price": "1000000000000.00"},
            {"name": "Five of them", "quantity": "5", "unit_price": "1000000000000"},
            {"name": "Bulk", "quantity": "1000000", "unit_price": "526467040709"},
            {"name": "Fine", "quantity": "0.628", "unit_price": "3"},
        ],
    }
    response = post(client, INVOICES, acme_key, body, **{"Idempotency-Key": "big-lines"})

    assert response.status_code == 422
    message = f"Quantity times price may be at most {TRILLION}."
    assert response.json()["fields"] == {
        "items.1.unit_price": [message],
        "items.2.unit_price": [message],
    }
    assert Invoice.objects.count() == 0


def test_a_subtotal_over_a_trillion_is_refused_though_the_discount_brings_the_total_under(
    client, acme_key
):
    body = {
        "currency": "GBP",
        "discount": {"kind": "amount", "value": "500000000000"},
        "items": [
            {"name": "First", "unit_price": "800000000000"},
            {"name": "Second", "unit_price": "600000000000"},
        ],
    }
    response = post(client, INVOICES, acme_key, body)

    assert response.status_code == 422
    assert response.json()["fields"] == {"items": [f"The subtotal may be at most {TRILLION}."]}
    assert Invoice.objects.count() == 0


def test_patch_with_a_line_worth_more_than_a_trillion_changes_nothing(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)
    before = (invoice.total, list(invoice.items.values_list("name", "amount")))

    response = patch(
        client,
        f"{INVOICES}/{invoice.pk}",
        acme_key,
        {"items": [{"name": "Bulk", "quantity": "2", "unit_price": "999999999999.99"}]},
    )

    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["items.0.unit_price"]
    invoice.refresh_from_db()
    assert (invoice.total, list(invoice.items.values_list("name", "amount"))) == before


def test_loopback_callback_url_is_refused(client, settings, acme_key):
    settings.CALLBACKS_ALLOW_PRIVATE = False  # production's rule; tests allow local receivers

    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "callback_url": "http://127.0.0.1/x"})

    assert response.status_code == 422
    assert response.json()["fields"] == {
        "callback_url": ["127.0.0.1 is a loopback address; callbacks go to public addresses only."]
    }
    assert Invoice.objects.count() == 0


def test_duplicate_foreign_id_answers_409_with_the_existing_id(client, acme_key):
    first = post(client, INVOICES, acme_key, {**TWO_ITEMS, "foreign_id": "order-1"})

    second = post(client, INVOICES, acme_key, {**TWO_ITEMS, "foreign_id": "order-1"})

    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json() == {
        "detail": "Another invoice of yours already uses this foreign ID.",
        "code": "duplicate_foreign_id",
        "fields": {"foreign_id": ["Another invoice of yours already uses this foreign ID."]},
        "existing_id": first.json()["id"],
    }
    assert Invoice.objects.count() == 1


# Idempotency ---------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_replays_the_first_answer(client, acme_key):
    first = post(client, INVOICES, acme_key, TWO_ITEMS, **{"Idempotency-Key": "k1"})

    again = post(client, INVOICES, acme_key, TWO_ITEMS, **{"Idempotency-Key": "k1"})

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert Invoice.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_refused(client, acme_key):
    post(client, INVOICES, acme_key, TWO_ITEMS, **{"Idempotency-Key": "k1"})

    response = post(
        client, INVOICES, acme_key, {**TWO_ITEMS, "currency": "EUR"}, **{"Idempotency-Key": "k1"}
    )

    # A conflict with what the key is bound to, not a malformed request.
    assert response.status_code == 409
    assert response.json() == {
        "detail": "This Idempotency-Key was used with a different request; use a new key.",
        "code": "idempotency_mismatch",
        "fields": {"Idempotency-Key": ["Used before with a different request."]},
    }
    assert Invoice.objects.count() == 1


def test_idempotency_keys_of_two_merchants_do_not_collide(
    client, acme, globex, acme_key, globex_key
):
    for_acme = post(client, INVOICES, acme_key, TWO_ITEMS, **{"Idempotency-Key": "k1"})

    for_globex = post(client, INVOICES, globex_key, TWO_ITEMS, **{"Idempotency-Key": "k1"})

    assert for_acme.status_code == 201
    assert for_globex.status_code == 201
    assert "Idempotent-Replayed" not in for_globex.headers
    assert for_globex.json()["id"] != for_acme.json()["id"]
    assert Invoice.objects.get(merchant=acme).pk == for_acme.json()["id"]
    assert Invoice.objects.get(merchant=globex).pk == for_globex.json()["id"]
    assert IdempotencyRecord.objects.filter(key="k1").count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_posts_with_one_idempotency_key_create_one_invoice(live_server, acme):
    require_postgres()
    key = api_key_create(merchant=acme, name="Shop", by=None).plaintext
    barrier = threading.Barrier(50)
    results: list[tuple[int, str | None, dict]] = []
    lock = threading.Lock()

    def send() -> None:
        request = urllib.request.Request(
            live_server.url + INVOICES,
            data=json.dumps(TWO_ITEMS).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Idempotency-Key": "same-for-all",
            },
        )
        barrier.wait()
        # The test server listens with a backlog of 10, so some of 50 simultaneous connects are
        # reset before the application sees them. A client retries those with the same key,
        # which is what the key is for; anything the application answers is kept as is.
        for attempt in range(10):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    outcome = (
                        response.status,
                        response.headers["Idempotent-Replayed"],
                        json.loads(response.read()),
                    )
                break
            except urllib.error.HTTPError as error:
                outcome = (error.code, None, {"error": error.read().decode()})
                break
            except OSError as error:
                outcome = (0, None, {"error": repr(error)})
                time.sleep(0.05 * (attempt + 1))
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=send) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [outcome for outcome in results if outcome[0] != 201] == []
    assert len(results) == 50
    invoice = Invoice.objects.get()
    assert {body["id"] for _, _, body in results} == {invoice.pk}
    # One request did the work; the other 49 waited for it and replayed its answer.
    assert sorted(str(replayed) for _, replayed, _ in results) == ["None"] + ["true"] * 49
    assert Invoice.objects.count() == 1


# Authentication and rate limit ---------------------------------------------------------------


def test_missing_key_answers_401(client, acme):
    response = client.get(INVOICES)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json() == {
        "detail": "A valid API key is required (Authorization: Bearer …).",
        "code": "unauthorized",
        "fields": {},
    }


def test_wrong_key_answers_401(client, acme_key):
    prefix = acme_key.rsplit("_", 1)[0]

    response = get(client, INVOICES, f"{prefix}_not-the-secret")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


def test_revoked_key_answers_401(client, acme, alice):
    issued = api_key_create(merchant=acme, name="Old shop", by=alice)
    api_key_revoke(key=issued.key)

    response = get(client, INVOICES, issued.plaintext)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "unauthorized"


def test_a_successful_call_sets_last_used_at(client, acme, alice):
    issued = api_key_create(merchant=acme, name="Shop", by=alice)
    assert issued.key.last_used_at is None

    response = get(client, INVOICES, issued.plaintext)

    assert response.status_code == 200
    assert ApiKey.objects.get(pk=issued.key.pk).last_used_at is not None


def test_last_used_at_is_written_at_most_once_a_minute_decided_without_a_write(client, acme, alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    issued = api_key_create(merchant=acme, name="Shop", by=alice)

    def key_writes() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert get(client, INVOICES, issued.plaintext).status_code == 200
        return sum(
            1 for q in queries.captured_queries if q["sql"].startswith('UPDATE "merchants_apikey"')
        )

    assert [key_writes() for _ in range(5)] == [1, 0, 0, 0, 0]
    first = ApiKey.objects.get(pk=issued.key.pk).last_used_at
    # A minute on, the cache entry has expired and the database value is a minute old.
    cache.delete(f"api-key-used:{issued.key.pk}")
    ApiKey.objects.filter(pk=issued.key.pk).update(last_used_at=first - timedelta(seconds=61))
    assert key_writes() == 1
    assert ApiKey.objects.get(pk=issued.key.pk).last_used_at > first


def test_the_fourth_call_in_a_minute_is_rate_limited(client, settings, acme_key):
    settings.API_RATE_PER_MINUTE = 3

    statuses = [get(client, INVOICES, acme_key).status_code for _ in range(3)]
    limited = get(client, INVOICES, acme_key)

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {
        "detail": "Too many requests for this API key; retry later.",
        "code": "rate_limited",
        "fields": {},
    }
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_the_rate_limit_counts_per_key(client, settings, acme, alice, acme_key):
    settings.API_RATE_PER_MINUTE = 3
    other_key = api_key_create(merchant=acme, name="Other shop", by=alice).plaintext
    for _ in range(4):
        get(client, INVOICES, acme_key)

    response = get(client, INVOICES, other_key)

    assert get(client, INVOICES, acme_key).status_code == 429
    assert response.status_code == 200


# Reading invoices ----------------------------------------------------------------------------


def test_get_invoice_by_id(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True, foreign_id="order-7")

    response = get(client, f"{INVOICES}/{invoice.pk}", acme_key)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == invoice.pk
    assert body["reference"] == invoice.reference
    assert body["status"] == "open"
    assert body["foreign_id"] == "order-7"
    assert body["total"] == "300.00"


def test_get_unknown_invoice_answers_404(client, acme_key):
    response = get(client, f"{INVOICES}/999999", acme_key)

    assert response.status_code == 404
    assert response.json() == {"detail": "No such invoice.", "code": "not_found", "fields": {}}


def test_get_invoice_by_foreign_id(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True, foreign_id="order-7")
    make_invoice(acme, issue=True, foreign_id="order-8")

    response = get(client, f"{INVOICES}/by-foreign-id", acme_key, foreign_id="order-7")

    assert response.status_code == 200
    assert response.json()["id"] == invoice.pk


def test_get_by_unknown_foreign_id_answers_404(client, acme, acme_key):
    make_invoice(acme, issue=True, foreign_id="order-7")

    response = get(client, f"{INVOICES}/by-foreign-id", acme_key, foreign_id="order-9")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "No invoice has this foreign ID.",
        "code": "not_found",
        "fields": {},
    }


def ids(response) -> list[int]:
    return [item["id"] for item in response.json()["items"]]


def test_list_filters_by_status(client, acme, acme_key):
    draft = make_invoice(acme)
    opened = make_invoice(acme, issue=True)

    assert ids(get(client, INVOICES, acme_key, status="draft")) == [draft.pk]
    assert ids(get(client, INVOICES, acme_key, status="open")) == [opened.pk]
    assert ids(get(client, INVOICES, acme_key, status="paid")) == []


def test_list_filters_by_customer_id(client, acme, acme_key, acme_customer):
    theirs = make_invoice(acme, customer=acme_customer, issue=True)
    make_invoice(acme, issue=True)

    response = get(client, INVOICES, acme_key, customer_id=acme_customer.pk)

    assert ids(response) == [theirs.pk]


def test_list_filters_by_foreign_id(client, acme, acme_key):
    wanted = make_invoice(acme, foreign_id="order-1")
    make_invoice(acme, foreign_id="order-2")

    assert ids(get(client, INVOICES, acme_key, foreign_id="order-1")) == [wanted.pk]


def test_list_filters_by_creation_date(client, acme, acme_key):
    january, february, march = (make_invoice(acme) for _ in range(3))
    for invoice, month in ((january, 1), (february, 2), (march, 3)):
        Invoice.objects.filter(pk=invoice.pk).update(
            created_at=datetime(2025, month, 10, 12, tzinfo=UTC)
        )

    after = get(client, INVOICES, acme_key, created_after="2025-02-10")
    before = get(client, INVOICES, acme_key, created_before="2025-02-10")
    between = get(
        client, INVOICES, acme_key, created_after="2025-02-01", created_before="2025-02-28"
    )

    assert ids(after) == [march.pk, february.pk]
    assert ids(before) == [february.pk, january.pk]
    assert ids(between) == [february.pk]


def test_list_pages_with_a_cursor_newest_first(client, acme, acme_key):
    invoices = [make_invoice(acme, issue=True) for _ in range(5)]
    newest_first = [invoice.pk for invoice in reversed(invoices)]

    first = get(client, INVOICES, acme_key, limit=2)
    second = get(client, INVOICES, acme_key, limit=2, cursor=first.json()["next_cursor"])
    third = get(client, INVOICES, acme_key, limit=2, cursor=second.json()["next_cursor"])

    assert ids(first) == newest_first[0:2]
    assert ids(second) == newest_first[2:4]
    assert ids(third) == newest_first[4:5]
    assert first.json()["next_cursor"] is not None
    assert second.json()["next_cursor"] is not None
    assert third.json()["next_cursor"] is None


def test_a_cursor_that_is_not_a_number_is_refused(client, acme_key):
    response = get(client, INVOICES, acme_key, cursor="bm90LWEtY3Vyc29y")

    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["cursor"]


def test_any_number_is_a_cursor_the_schema_allows_and_answers_a_page(client, acme, acme_key):
    # The schema's pattern is the whole rule: a number we never gave out answers the page
    # below it (here: nothing below 1, and everything below a number beyond any id).
    invoice = make_invoice(acme, issue=True)

    assert get(client, INVOICES, acme_key, cursor="1").json() == {
        "items": [],
        "next_cursor": None,
    }
    beyond = get(client, INVOICES, acme_key, cursor="9" * 19).json()
    assert [item["id"] for item in beyond["items"]] == [invoice.pk]


# Changing invoices ---------------------------------------------------------------------------


def test_patch_changes_tracking_id_and_callback_url_of_an_open_invoice(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    response = patch(
        client,
        f"{INVOICES}/{invoice.pk}",
        acme_key,
        {"tracking_id": "trk-1", "callback_url": "https://shop.example.com/hooks/stablebill"},
    )

    assert response.status_code == 200
    assert response.json()["tracking_id"] == "trk-1"
    assert response.json()["callback_url"] == "https://shop.example.com/hooks/stablebill"
    invoice.refresh_from_db()
    assert invoice.tracking_id == "trk-1"
    assert invoice.callback_url == "https://shop.example.com/hooks/stablebill"
    assert invoice.status == "open"


def test_patch_items_of_an_open_unpaid_invoice_changes_the_total(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    response = patch(
        client,
        f"{INVOICES}/{invoice.pk}",
        acme_key,
        {"items": [{"name": "Workshop", "quantity": "3", "unit_price": "99.90"}]},
    )

    assert response.status_code == 200
    assert response.json()["total"] == "299.70"
    assert [item["name"] for item in response.json()["items"]] == ["Workshop"]
    invoice.refresh_from_db()
    assert invoice.total == Decimal("299.70")


def test_patch_amount_of_an_open_unpaid_invoice_changes_the_total(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    response = patch(client, f"{INVOICES}/{invoice.pk}", acme_key, {"amount": "12.00"})

    assert response.status_code == 200
    assert response.json()["total"] == "12.00"
    assert len(response.json()["items"]) == 1
    invoice.refresh_from_db()
    assert invoice.total == Decimal("12.00")


def test_patch_amount_of_a_paid_invoice_is_refused(client, acme, acme_key):
    invoice = invoice_mark_paid(invoice=make_invoice(acme, issue=True), reference="Wire 1")

    response = patch(client, f"{INVOICES}/{invoice.pk}", acme_key, {"amount": "12.00"})

    assert response.status_code == 409
    assert response.json() == {
        "detail": "The amount of a paid invoice cannot change.",
        "code": "invalid_state",
        "fields": {},
    }
    invoice.refresh_from_db()
    assert invoice.total == Decimal("300.00")


def test_patch_items_of_a_cancelled_invoice_is_refused(client, acme, acme_key):
    invoice = invoice_cancel(invoice=make_invoice(acme, issue=True))
    items = [{"name": "Workshop", "unit_price": "1.00"}]

    response = patch(client, f"{INVOICES}/{invoice.pk}", acme_key, {"items": items})

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"
    invoice.refresh_from_db()
    assert invoice.total == Decimal("300.00")


def test_patch_with_an_unknown_field_is_refused(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    response = patch(client, f"{INVOICES}/{invoice.pk}", acme_key, {"currency": "EUR"})

    assert response.status_code == 422
    assert response.json()["fields"] == {"currency": ["Unknown field."]}
    invoice.refresh_from_db()
    assert invoice.currency == "USD"


def test_cancel_an_open_invoice(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    response = post(client, f"{INVOICES}/{invoice.pk}/cancel", acme_key)

    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["failure_reason"] == "cancelled"
    invoice.refresh_from_db()
    assert (invoice.status, invoice.failure_reason) == ("failed", "cancelled")


def test_cancelling_twice_is_refused(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)
    post(client, f"{INVOICES}/{invoice.pk}/cancel", acme_key)

    response = post(client, f"{INVOICES}/{invoice.pk}/cancel", acme_key)

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Only open or processing invoices can be cancelled.",
        "code": "invalid_state",
        "fields": {},
    }


def test_close_a_one_time_invoice_is_refused(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    response = post(client, f"{INVOICES}/{invoice.pk}/close", acme_key)

    assert response.status_code == 409
    assert response.json() == {
        "detail": "Only permanent invoices are closed.",
        "code": "invalid_state",
        "fields": {},
    }
    invoice.refresh_from_db()
    assert invoice.status == "open"


def test_close_a_permanent_invoice(client, acme_key):
    created = post(client, INVOICES, acme_key, {**TWO_ITEMS, "kind": "permanent"})
    assert created.json()["kind"] == InvoiceKind.PERMANENT

    response = post(client, f"{INVOICES}/{created.json()['id']}/close", acme_key)

    assert response.status_code == 200
    assert response.json()["status"] == "closed"
    assert Invoice.objects.get().status == "closed"


# Customers -----------------------------------------------------------------------------------


def test_create_and_get_a_customer(client, acme, acme_key):
    created = post(
        client,
        CUSTOMERS,
        acme_key,
        {"name": "Grace Hopper", "email": "Grace@Example.org", "company": "Navy"},
    )

    assert created.status_code == 201
    customer = Customer.objects.get(merchant=acme)
    expected = {
        "id": customer.pk,
        "name": "Grace Hopper",
        "email": "grace@example.org",
        "company": "Navy",
        "address_line1": "",
        "address_line2": "",
        "city": "",
        "postal_code": "",
        "region": "",
        "country": "",
        "tax_id": "",
        "notes": "",
        "archived": False,
        "created_at": created.json()["created_at"],
    }
    assert created.json() == expected
    assert get(client, f"{CUSTOMERS}/{customer.pk}", acme_key).json() == expected


def test_list_customers(client, acme, acme_key):
    ada = CustomerFactory(merchant=acme, name="Ada Lovelace", email="ada@example.org")
    grace = CustomerFactory(merchant=acme, name="Grace Hopper", email="grace@example.org")

    everyone = get(client, CUSTOMERS, acme_key)
    found = get(client, CUSTOMERS, acme_key, q="grace")

    assert everyone.status_code == 200
    assert {c["id"] for c in everyone.json()["items"]} == {ada.pk, grace.pk}
    assert everyone.json()["next_cursor"] is None
    assert [c["id"] for c in found.json()["items"]] == [grace.pk]


def test_patch_a_customer(client, acme_customer, acme_key):
    response = patch(
        client, f"{CUSTOMERS}/{acme_customer.pk}", acme_key, {"company": "Analytical Engines"}
    )

    assert response.status_code == 200
    assert response.json()["company"] == "Analytical Engines"
    assert response.json()["name"] == "Ada Lovelace"
    acme_customer.refresh_from_db()
    assert acme_customer.company == "Analytical Engines"


def test_delete_archives_a_customer(client, acme_customer, acme_key):
    response = client.delete(f"{CUSTOMERS}/{acme_customer.pk}", headers=auth(acme_key))

    assert response.status_code == 200
    assert response.json()["archived"] is True
    acme_customer.refresh_from_db()
    assert acme_customer.archived_at is not None
    assert get(client, CUSTOMERS, acme_key).json()["items"] == []
    archived = get(client, CUSTOMERS, acme_key, include_archived="true")
    assert [c["id"] for c in archived.json()["items"]] == [acme_customer.pk]
    assert get(client, f"{CUSTOMERS}/{acme_customer.pk}", acme_key).status_code == 404


def test_duplicate_customer_email_is_refused(client, acme, acme_customer, acme_key):
    response = post(client, CUSTOMERS, acme_key, {"name": "Ada", "email": "ADA@example.org"})

    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_email"
    assert response.json()["fields"] == {"email": ["A customer with this email already exists."]}
    assert Customer.objects.filter(merchant=acme).count() == 1


def test_inline_customer_is_created_then_reused_by_email(client, acme, acme_key):
    customer = {"name": "Grace Hopper", "email": "grace@example.org"}

    first = post(client, INVOICES, acme_key, {**TWO_ITEMS, "customer": customer})
    second = post(
        client,
        INVOICES,
        acme_key,
        {**TWO_ITEMS, "customer": {**customer, "email": "GRACE@example.org"}},
    )

    assert first.status_code == 201
    assert second.status_code == 201
    created = Customer.objects.get(merchant=acme)
    assert first.json()["customer"] == {
        "id": created.pk,
        "name": "Grace Hopper",
        "email": "grace@example.org",
        "company": "",
    }
    assert second.json()["customer"]["id"] == created.pk


def test_customer_id_of_another_merchant_answers_404_naming_the_field(client, globex, acme_key):
    outsider = CustomerFactory(merchant=globex)

    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "customer_id": outsider.pk})

    assert response.status_code == 404
    assert response.json() == {
        "detail": "No such customer.",
        "code": "not_found",
        "fields": {"customer_id": ["No such customer of yours."]},
    }
    assert Invoice.objects.count() == 0


# Balances, ledger, payments ------------------------------------------------------------------


def test_balances_of_a_new_merchant_are_empty(client, acme_key):
    response = get(client, "/api/v1/balances", acme_key)

    assert response.status_code == 200
    assert response.json() == []


def test_ledger_of_a_new_merchant_is_empty(client, acme_key):
    response = get(client, "/api/v1/ledger", acme_key)

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


def test_payments_and_transfers_of_a_fresh_invoice_are_empty(client, acme, acme_key):
    invoice = make_invoice(acme, issue=True)

    payments = get(client, f"{INVOICES}/{invoice.pk}/payments", acme_key)
    transfers = get(client, f"{INVOICES}/{invoice.pk}/transfers", acme_key)

    assert (payments.status_code, payments.json()) == (200, [])
    assert (transfers.status_code, transfers.json()) == (200, [])


# Documentation -------------------------------------------------------------------------------


def test_openapi_schema_lists_every_route(client, db):
    response = client.get("/api/openapi.json")

    assert response.status_code == 200
    paths = {path: sorted(methods) for path, methods in response.json()["paths"].items()}
    assert paths == {
        "/api/v1/invoices": ["get", "post"],
        "/api/v1/invoices/by-foreign-id": ["get"],
        "/api/v1/invoices/{invoice_id}": ["get", "patch"],
        "/api/v1/invoices/{invoice_id}/cancel": ["post"],
        "/api/v1/invoices/{invoice_id}/close": ["post"],
        "/api/v1/invoices/{invoice_id}/credit-notes": ["post"],
        "/api/v1/invoices/{invoice_id}/payments": ["get"],
        "/api/v1/invoices/{invoice_id}/transfers": ["get"],
        "/api/v1/invoices/{invoice_id}/refunds": ["get", "post"],
        "/api/v1/refunds": ["get"],
        "/api/v1/refunds/{refund_id}": ["get"],
        "/api/v1/refunds/{refund_id}/sent": ["post"],
        "/api/v1/refunds/{refund_id}/paid-outside": ["post"],
        "/api/v1/refunds/{refund_id}/decline": ["post"],
        "/api/v1/customers": ["get", "post"],
        "/api/v1/customers/{customer_id}": ["delete", "get", "patch"],
        "/api/v1/balances": ["get"],
        "/api/v1/ledger": ["get"],
        "/api/v1/tax-rates": ["get"],
        "/api/v1/payment-methods": ["get"],
    }


def test_api_docs_page_renders(client, db):
    response = client.get("/api/docs")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/openapi.json" in response.content


# Found by fuzzing (tests/api/test_schemathesis.py) -------------------------------------------


@pytest.fixture
def app_client():
    """A client that answers a server error as the 500 page instead of raising it."""
    return Client(raise_request_exception=False)


def test_customer_id_filter_beyond_64_bits_is_refused(app_client, acme_key):
    # Found by fuzzing: SQLite cannot even compare such a number (it answered 500).
    response = get(app_client, INVOICES, acme_key, customer_id=str(2**63))

    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["customer_id"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/ledger", {"currency": "US\x00D"}, "currency"),
        ("/api/v1/ledger", {"kind": "pay\x00ment"}, "kind"),
        (INVOICES, {"foreign_id": "order\x001"}, "foreign_id"),
        (CUSTOMERS, {"q": "ada\x00"}, "q"),
        (f"{INVOICES}/by-foreign-id", {"foreign_id": "order\x001"}, "foreign_id"),
    ],
)
def test_nul_character_in_a_query_filter_is_refused(app_client, acme_key, path, params, field):
    # Found by fuzzing: PostgreSQL refuses NUL in text and the query answered 500.
    response = get(app_client, path, acme_key, **params)

    assert response.status_code == 422
    assert list(response.json()["fields"]) == [field]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        (
            "POST",
            INVOICES,
            {"currency": "USD", "amount": "1.00", "description": "a\x00b"},
            "description",
        ),
        (
            "POST",
            INVOICES,
            {"currency": "USD", "items": [{"name": "a\x00b", "unit_price": "1.00"}]},
            "items.0.name",
        ),
        ("POST", CUSTOMERS, {"name": "a\x00b", "email": "nul@example.org"}, "name"),
        ("PATCH", f"{INVOICES}/{{invoice_id}}", {"tracking_id": "a\x00b"}, "tracking_id"),
        ("PATCH", f"{CUSTOMERS}/{{customer_id}}", {"company": "a\x00b"}, "company"),
    ],
)
def test_nul_character_in_a_body_field_is_refused(
    app_client, acme, acme_customer, acme_key, method, path, body, field
):
    invoice = make_invoice(acme, issue=True)
    url = path.format(invoice_id=invoice.pk, customer_id=acme_customer.pk)
    invoices_before = list(Invoice.objects.values())
    customers_before = list(Customer.objects.values())

    response = app_client.generic(
        method, url, data=json.dumps(body), content_type="application/json", headers=auth(acme_key)
    )

    assert response.status_code == 422
    assert list(response.json()["fields"]) == [field]
    assert list(Invoice.objects.values()) == invoices_before
    assert list(Customer.objects.values()) == customers_before


def test_a_past_due_date_is_taken_over_the_api_and_the_invoice_is_overdue(client, acme_key):
    # An import, or work billed late: OpenAPI cannot say "not in the past", and the
    # integrator's system is the record; only the browser form guards against a typo.
    response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "due_date": "2020-01-31"})

    assert response.status_code == 201
    assert response.json()["due_date"] == "2020-01-31"


def test_a_date_is_only_yyyy_mm_dd(client, acme_key):
    response = get(client, INVOICES, acme_key, created_before="0")

    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["created_before"]


# What the schema states of a name is what the services do with it ------------------------

STRIPPED_BY_PYTHON = [chr(c) for c in range(0x110000) if chr(c).isspace()]


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ("CustomerIn", "name"),
        ("CustomerUpdateIn", "name"),
        ("InlineCustomerIn", "name"),
        ("ItemIn", "name"),
        ("CreditNoteIn", "reason"),
    ],
)
def test_a_name_pattern_admits_exactly_what_is_stored(client, schema, field):
    # Found by fuzzing: `\S` matched a NUL, and ECMA-262's `\s` is not what str.strip()
    # takes away (U+001C..U+001F, U+0085 are stripped; U+FEFF is not), so a schema-valid
    # name could be refused as blank. Judged here by the validator clients and Schemathesis
    # read the schema with.
    properties = client.get("/api/openapi.json").json()["components"]["schemas"][schema]
    pattern = properties["properties"][field]["pattern"]
    valid = jsonschema_rs.validator_for({"type": "string", "pattern": pattern}).is_valid
    blank = "".join(STRIPPED_BY_PYTHON)
    assert [c for c in STRIPPED_BY_PYTHON if valid(c)] == []
    assert not valid(blank) and not valid("\x00") and not valid("Ada\x00")
    assert valid("\ufeff") and valid(f"{blank}Ada\n") and valid("\x1bX")


@pytest.mark.parametrize(
    ("name", "status"),
    [(" \x1c\x85\u3000", 422), ("\x00", 422), ("\ufeff", 201), ("\tAda Lovelace\n", 201)],
)
def test_a_customer_name_is_taken_when_the_schema_allows_it(client, acme_key, name, status):
    response = post(client, CUSTOMERS, acme_key, {"name": name, "email": "ada@example.org"})

    assert response.status_code == status, response.content
    if status == 201:
        assert response.json()["name"] == name.strip()
    else:
        assert list(response.json()["fields"]) == ["name"]
        assert not Customer.objects.exists()


def test_the_inline_customer_of_an_invoice_is_documented_as_it_is_validated(client):
    # Found by fuzzing: it shared its component name with the customers API's input, and the
    # document described the invoice's `customer` with the address fields it refuses.
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    customer = schemas["InvoiceCreateIn"]["properties"]["customer"]["anyOf"][0]["$ref"]

    assert customer == "#/components/schemas/InlineCustomerIn"
    assert sorted(schemas["InlineCustomerIn"]["properties"]) == ["company", "email", "name"]
    assert "address_line1" in schemas["CustomerIn"]["properties"]


def test_where_private_targets_are_refused_the_schema_admits_only_host_names(
    client, acme_key, settings
):
    settings.CALLBACKS_ALLOW_PRIVATE = False
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    created = schemas["InvoiceCreateIn"]["properties"]["callback_url"]
    changed = schemas["InvoiceUpdateIn"]["properties"]["callback_url"]["anyOf"][0]
    for prop in (created, changed):
        valid = jsonschema_rs.validator_for(prop).is_valid
        assert valid("https://shop.example.com/hooks?x=1") and valid("")
        for refused in ("http://localhost/", "http://a.LOCALHOST:80/", "http://10.0.0.1/"):
            assert not valid(refused)
            response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "callback_url": refused})
            assert response.status_code == 422, refused
            assert list(response.json()["fields"]) == ["callback_url"]
    settings.CALLBACKS_ALLOW_PRIVATE = True
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    valid = jsonschema_rs.validator_for(schemas["InvoiceCreateIn"]["properties"]["callback_url"])
    assert valid.is_valid("http://localhost:8000/hook")


@pytest.mark.parametrize("private_allowed", [True, False], ids=["any-host", "public-hosts"])
def test_a_callback_host_may_have_253_characters_and_no_more(
    client, acme_key, settings, private_allowed
):
    settings.CALLBACKS_ALLOW_PRIVATE = private_allowed
    schemas = client.get("/api/openapi.json").json()["components"]["schemas"]
    valid = jsonschema_rs.validator_for(schemas["InvoiceCreateIn"]["properties"]["callback_url"])
    labels = ".".join(["a" * 63, "b" * 63, "c" * 63])
    longest = f"{labels}.{'d' * 57}.com"
    assert len(longest) == 253
    for host, port in ((longest, ""), (longest, ":8443"), ("x.io", "")):
        url = f"https://{host}{port}/hook?x=1"
        assert valid.is_valid(url), url
        response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "callback_url": url})
        assert response.status_code == 201, response.json()
        assert response.json()["callback_url"] == url
    made = Invoice.objects.count()
    for url in (f"https://{labels}.{'d' * 58}.com/hook", f"https://{labels}.{'d' * 58}.com"):
        assert not valid.is_valid(url)
        response = post(client, INVOICES, acme_key, {**TWO_ITEMS, "callback_url": url})
        assert response.status_code == 422, url
        assert list(response.json()["fields"]) == ["callback_url"]
    assert Invoice.objects.count() == made
