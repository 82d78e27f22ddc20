"""Refunds over the REST API: listing, reading, requesting (in full, in part, in the asset
received), and the merchant's side of paying them; bad input (422 with the field), what the
stored state refuses (409), idempotent retries, and two requests racing for the same money."""

import json
import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from checkout.models import RefundRequest, RefundStatus
from checkout.refunds import refund_give_address
from invoices.models import CallbackDelivery, InvoiceEvent
from merchants.integrations import api_key_create, webhook_endpoint_create
from tests.api.test_api import auth, get, post
from tests.conftest import require_postgres
from tests.factories import CustomerFactory, make_invoice, make_paid_payment
from wallets.models import Asset

USDC = 10**6
PAYER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


@pytest.fixture
def acme_key(acme, alice):
    return api_key_create(merchant=acme, name="Shop", by=alice).plaintext


@pytest.fixture
def paid(acme):
    customer = CustomerFactory(merchant=acme, email="ada@example.org")
    invoice = make_invoice(acme, customer=customer, items=[("Lamp", "1", "100.00")], issue=True)
    payment = make_paid_payment(invoice, 100 * USDC)
    return invoice, payment


def refunds_of(invoice) -> str:
    return f"/api/v1/invoices/{invoice.pk}/refunds"


def test_partial_then_the_rest_each_with_a_reason_and_the_callback(client, acme, acme_key, paid):
    webhook_endpoint_create(merchant=acme, url="https://hooks.acme.example/in")
    invoice, payment = paid
    response = post(client, refunds_of(invoice), acme_key, {"amount": "30", "reason": "Scratched"})
    assert response.status_code == 201
    body = response.json()
    assert body == {
        **body,
        "invoice_id": invoice.pk,
        "order_number": payment.order_number,
        "kind": "manual",
        "reason": "Scratched",
        "status": "requested",
        "network": "anvil",
        "asset": "USDC",
        "decimals": 6,
        "amount": "30.000000",
        "amount_base_units": "30000000",
        "address": None,
        "tx_hash": None,
    }
    refund = RefundRequest.objects.get(pk=body["id"])
    assert body["claim_url"].endswith(f"/refund/{refund.token}/")
    assert InvoiceEvent.objects.get(invoice=invoice, type="refund.requested").actor == "api"
    assert CallbackDelivery.objects.filter(event_type="refund.requested").count() == 1

    # Without an amount: everything still refundable.
    rest = post(client, refunds_of(invoice), acme_key, {"reason": "The rest, too"})
    assert rest.status_code == 201 and rest.json()["amount_base_units"] == "70000000"

    # Nothing is left: a conflict with what is stored, not bad input.
    more = post(client, refunds_of(invoice), acme_key, {"amount": "0.01", "reason": "More"})
    assert more.status_code == 409
    assert more.json()["code"] == "invalid_state"
    assert "Nothing is left to refund" in more.json()["fields"]["amount"][0]
    assert RefundRequest.objects.count() == 2


def test_more_than_received_is_refused_with_the_amount_left_and_nothing_written(
    client, acme_key, paid
):
    invoice, _payment = paid
    response = post(client, refunds_of(invoice), acme_key, {"amount": "100.01", "reason": "x"})
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Only 100 USDC is left to refund on order {_payment.order_number}.",
        "code": "invalid_state",
        "fields": {
            "amount": [f"Only 100 USDC is left to refund on order {_payment.order_number}."]
        },
    }
    assert not RefundRequest.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"amount": "1"}, "reason", "This field is required."),
        ({"amount": "1", "reason": "   "}, "reason", "Not a valid value."),
        (
            {"amount": "-1", "reason": "x"},
            "amount",
            'Send a decimal string above zero such as "12.5".',
        ),
        (
            {"amount": "0.00", "reason": "x"},
            "amount",
            'Send a decimal string above zero such as "12.5".',
        ),
        ({"amount": 5, "reason": "x"}, "amount", "Send a string"),
        ({"amount": "1.0000001", "reason": "x"}, "amount", "USDC has 6 decimals at most."),
        ({"reason": "x", "colour": "red"}, "colour", "Unknown field."),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client, acme_key, paid, body, field, message):
    invoice, _payment = paid
    response = post(client, refunds_of(invoice), acme_key, body)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid"
    assert message in response.json()["fields"][field][0]
    assert not RefundRequest.objects.exists()


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"reason": "x", "asset": "DOGE"}, "No such asset on that network."),
        ({"reason": "x", "network": "nowhere"}, "No such asset on that network."),
        ({"reason": "x", "order_number": "NOPE-1"}, "No such order of this invoice."),
        ({"reason": "x", "credit_note_id": 99}, "No such credit note of this invoice."),
    ],
)
def test_naming_what_is_not_there_is_a_404(client, acme_key, paid, body, detail):
    invoice, _payment = paid
    response = post(client, refunds_of(invoice), acme_key, body)
    assert response.status_code == 404
    assert response.json() == {"detail": detail, "code": "not_found", "fields": {}}
    assert not RefundRequest.objects.exists()


def test_an_asset_the_order_never_received_is_a_409_on_the_asset(client, acme_key, paid):
    invoice, payment = paid
    response = post(client, refunds_of(invoice), acme_key, {"reason": "x", "asset": "USDT"})
    assert response.status_code == 409
    assert response.json()["fields"] == {
        "asset": [f"Order {payment.order_number} received no confirmed USDT on Local dev chain."]
    }


def test_money_received_in_another_asset_is_refunded_in_it_never_beyond_it(client, acme, acme_key):
    invoice = make_invoice(acme, items=[("Lamp", "1", "100.00")], issue=True)
    payment = make_paid_payment(invoice, 40 * USDC, symbol="USDT")  # USDT to a USDC order
    too_much = post(
        client,
        refunds_of(invoice),
        acme_key,
        {"reason": "Wrong coin", "asset": "USDT", "amount": "41"},
    )
    assert too_much.status_code == 409
    assert "Only 40 USDT is left" in too_much.json()["detail"]
    response = post(
        client,
        refunds_of(invoice),
        acme_key,
        {
            "reason": "Wrong coin",
            "asset": "usdt",
            "network": "anvil",
            "order_number": payment.order_number,
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["asset"], body["network"], body["amount_base_units"]) == (
        "USDT",
        "anvil",
        str(40 * USDC),
    )
    assert RefundRequest.objects.get().asset == Asset.objects.get(
        network__slug="anvil", symbol="USDT"
    )


def test_idempotency_key_replays_the_first_answer_and_refuses_another_body(client, acme_key, paid):
    invoice, _payment = paid
    first = post(
        client,
        refunds_of(invoice),
        acme_key,
        {"amount": "10", "reason": "r"},
        **{"Idempotency-Key": "rf-1"},
    )
    again = post(
        client,
        refunds_of(invoice),
        acme_key,
        {"amount": "10", "reason": "r"},
        **{"Idempotency-Key": "rf-1"},
    )
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    other = post(
        client,
        refunds_of(invoice),
        acme_key,
        {"amount": "11", "reason": "r"},
        **{"Idempotency-Key": "rf-1"},
    )
    assert other.status_code == 409 and other.json()["code"] == "idempotency_mismatch"
    assert RefundRequest.objects.count() == 1


def test_report_a_hash_mark_outside_and_decline_through_their_states(client, acme_key, paid):
    invoice, _payment = paid
    first = post(client, refunds_of(invoice), acme_key, {"amount": "10", "reason": "a"}).json()
    second = post(client, refunds_of(invoice), acme_key, {"amount": "10", "reason": "b"}).json()
    third = post(client, refunds_of(invoice), acme_key, {"amount": "10", "reason": "c"}).json()
    tx = "0x" + "ab" * 32

    # No address yet: nothing to have sent to.
    early = post(client, f"/api/v1/refunds/{first['id']}/sent", acme_key, {"tx_hash": tx})
    assert early.status_code == 409
    assert early.json()["detail"] == "The refund is waiting for the payer's address."
    bad = post(client, f"/api/v1/refunds/{first['id']}/sent", acme_key, {"tx_hash": "0x12"})
    assert bad.status_code == 422 and "tx_hash" in bad.json()["fields"]

    refund = RefundRequest.objects.get(pk=first["id"])
    refund_give_address(refund=refund, address=PAYER, again=PAYER, no_memo_needed=True)
    sent = post(client, f"/api/v1/refunds/{first['id']}/sent", acme_key, {"tx_hash": tx})
    assert sent.status_code == 200
    assert (sent.json()["status"], sent.json()["tx_hash"]) == ("sent", tx)
    # The same transaction cannot pay a second refund.
    refund = RefundRequest.objects.get(pk=second["id"])
    refund_give_address(refund=refund, address=PAYER, again=PAYER, no_memo_needed=True)
    twice = post(client, f"/api/v1/refunds/{second['id']}/sent", acme_key, {"tx_hash": tx})
    assert twice.status_code == 409
    assert twice.json()["fields"] == {"tx_hash": ["That transaction pays another refund already."]}

    outside = post(
        client, f"/api/v1/refunds/{second['id']}/paid-outside", acme_key, {"reference": "Bank 42"}
    )
    assert outside.status_code == 200
    assert (outside.json()["status"], outside.json()["outside_reference"]) == (
        "confirmed",
        "Bank 42",
    )
    declined = post(
        client, f"/api/v1/refunds/{third['id']}/decline", acme_key, {"reason": "Kept the lamp"}
    )
    assert declined.status_code == 200
    assert (declined.json()["status"], declined.json()["decline_reason"]) == (
        "declined",
        "Kept the lamp",
    )
    # Final refunds refuse every change, with the reason.
    for path, body in (
        (f"/api/v1/refunds/{second['id']}/decline", {"reason": "Too late"}),
        (f"/api/v1/refunds/{third['id']}/paid-outside", {"reference": "x"}),
        (f"/api/v1/refunds/{first['id']}/decline", {"reason": "Sent already"}),
    ):
        response = post(client, path, acme_key, body)
        assert response.status_code == 409, path
        assert response.json()["code"] == "invalid_state"
    statuses = dict(RefundRequest.objects.values_list("pk", "status"))
    assert statuses == {
        first["id"]: RefundStatus.SENT,
        second["id"]: RefundStatus.CONFIRMED,
        third["id"]: RefundStatus.DECLINED,
    }
    # A declined refund's money is refundable again.
    again = post(client, refunds_of(invoice), acme_key, {"reason": "After all"})
    assert again.status_code == 201 and again.json()["amount_base_units"] == str(80 * USDC)


def test_lists_page_by_cursor_filter_by_status_and_cost_a_fixed_few_queries(
    client, acme, acme_key, paid, django_assert_num_queries
):
    invoice, _payment = paid
    ids = [
        post(client, refunds_of(invoice), acme_key, {"amount": "1", "reason": f"r{n}"}).json()["id"]
        for n in range(5)
    ]
    other = make_invoice(acme, items=[("Pen", "1", "10.00")], issue=True)
    make_paid_payment(other, 10 * USDC)
    elsewhere = post(client, refunds_of(other), acme_key, {"reason": "Pen"}).json()["id"]
    post(client, f"/api/v1/refunds/{ids[0]}/decline", acme_key, {"reason": "No"})

    first = get(client, refunds_of(invoice), acme_key, limit=3).json()
    assert [r["id"] for r in first["items"]] == ids[:1:-1]
    rest = get(client, refunds_of(invoice), acme_key, limit=3, cursor=first["next_cursor"]).json()
    assert [r["id"] for r in rest["items"]] == ids[1::-1] and rest["next_cursor"] is None
    every = get(client, "/api/v1/refunds", acme_key).json()
    assert [r["id"] for r in every["items"]] == [elsewhere, *ids[::-1]]
    declined = get(client, "/api/v1/refunds", acme_key, status="declined").json()
    assert [r["id"] for r in declined["items"]] == [ids[0]]
    one = get(client, f"/api/v1/refunds/{ids[0]}", acme_key).json()
    assert (one["id"], one["decline_reason"]) == (ids[0], "No")
    assert get(client, "/api/v1/refunds", acme_key, status="nope").status_code == 422
    assert get(client, "/api/v1/refunds", acme_key, stauts="sent").status_code == 422

    # The key, then the page with its refunds' orders, assets and networks joined: two
    # queries, whatever the number of refunds.
    with django_assert_num_queries(2):
        response = client.get("/api/v1/refunds", headers=auth(acme_key))
    assert response.status_code == 200 and len(response.json()["items"]) == 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_racing_for_the_same_money_get_one_refund_and_one_409(acme, alice):
    require_postgres()
    customer = CustomerFactory(merchant=acme, email="ada@example.org")
    invoice = make_invoice(acme, customer=customer, items=[("Lamp", "1", "100.00")], issue=True)
    payment = make_paid_payment(invoice, 100 * USDC)
    key = api_key_create(merchant=acme, name="Shop", by=alice).plaintext
    barrier = threading.Barrier(6)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def claim() -> None:
        try:
            barrier.wait()
            response = Client().post(
                refunds_of(invoice),
                data=json.dumps({"amount": "60", "reason": "Everything back"}),
                content_type="application/json",
                headers=auth(key),
            )
            with lock:
                answers.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(status for status, _ in answers) == [201, 409, 409, 409, 409, 409]
    # The losers waited for the winner's lock and were told what it left.
    left = f"Only 40 USDC is left to refund on order {payment.order_number}."
    assert [body["fields"] for status, body in answers if status == 409] == [{"amount": [left]}] * 5
    assert RefundRequest.objects.get().amount == Decimal(60 * USDC)
