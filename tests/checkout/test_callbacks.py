"""What the receiver of callbacks learns while a payer pays: every step, with the payment
and the transfer, in order, on a real (in-process) chain."""

import json

from invoices.callbacks import callbacks_deliver_due
from invoices.models import CallbackDelivery
from invoices.services import invoice_cancel
from merchants.integrations import webhook_endpoint_create
from tests.invoices.test_callbacks import Receiver

USDC = 10**6


def _payloads():
    rows = CallbackDelivery.objects.order_by("pk")
    return [json.loads(row.payload) for row in rows]


def test_a_payment_is_announced_step_by_step_with_payment_and_transfer(shop, acme):
    webhook_endpoint_create(merchant=acme, url="https://erp.example/hooks")
    invoice = shop.invoice("100.00", foreign_id="order-55", tracking_id="cart-9")
    payment = shop.start(invoice)
    tx = shop.send(payment, 100 * USDC)
    shop.watch()
    shop.confirm()

    payloads = _payloads()
    assert [p["type"] for p in payloads] == [
        "invoice.created",
        "invoice.deposit_received",
        "invoice.deposit_confirmed",
        "invoice.paid",
    ]
    received, confirmed, paid = payloads[1:]
    for payload in payloads:
        assert payload["data"]["foreign_id"] == "order-55"
        assert payload["data"]["tracking_id"] == "cart-9"
        assert payload["data"]["invoice"]["id"] == invoice.pk
    assert received["data"]["transfer"]["tx_hash"] == tx
    assert received["data"]["transfer"]["amount"] == "100.000000"
    assert received["data"]["transfer"]["amount_base_units"] == str(100 * USDC)
    assert received["data"]["transfer"]["asset"] == "USDC"
    assert received["data"]["payment"]["order_number"] == payment.order_number
    assert received["data"]["payment"]["amount_due"] == str(100 * USDC)
    assert received["data"]["payment"]["address"] == payment.deposit_address.address
    assert received["data"]["payment"]["received"] == str(100 * USDC)
    assert received["data"]["payment"]["confirmed"] == "0"
    # The invoice as it was when the deposit was seen; processing is the next step.
    assert received["data"]["invoice"]["status"] == "open"
    assert confirmed["data"]["payment"]["confirmed"] == str(100 * USDC)
    assert confirmed["data"]["transfer"]["tx_hash"] == tx
    assert paid["data"]["invoice"]["status"] == "paid"
    assert paid["data"]["payment"]["status"] == "paid"
    assert paid["data"]["payment"]["confirmed"] == str(100 * USDC)
    # Every event of one invoice has its own webhook-id.
    ids = list(CallbackDelivery.objects.values_list("message_id", flat=True))
    assert len(set(ids)) == 4


def test_cancelled_invoice_announces_the_reason(shop, acme):
    webhook_endpoint_create(merchant=acme, url="https://erp.example/hooks")
    invoice = shop.invoice("100.00")
    invoice_cancel(invoice=invoice)
    cancelled = _payloads()[-1]
    assert cancelled["type"] == "invoice.cancelled"
    assert cancelled["data"]["invoice"]["failure_reason"] == "cancelled"


def test_callbacks_of_a_payment_reach_a_real_receiver_in_order(shop, acme):
    receiver = Receiver()
    try:
        webhook_endpoint_create(merchant=acme, url=receiver.url)
        invoice = shop.invoice("25.00")
        payment = shop.start(invoice)
        shop.send(payment, 25 * USDC)
        shop.watch()
        shop.confirm()
        assert callbacks_deliver_due() == 4
    finally:
        receiver.close()
    types = [json.loads(r["body"])["type"] for r in receiver.requests]
    assert types == [
        "invoice.created",
        "invoice.deposit_received",
        "invoice.deposit_confirmed",
        "invoice.paid",
    ]


def test_the_api_callbacks_and_receipt_show_one_transfer_in_the_same_units(
    shop, acme, alice, client, mailoutbox
):
    from invoices.models import Receipt
    from merchants.integrations import api_key_create

    webhook_endpoint_create(merchant=acme, url="https://erp.example/hooks")
    key = api_key_create(merchant=acme, name="ERP", by=alice).plaintext
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    tx = shop.send(payment, 100 * USDC)
    shop.watch()
    shop.confirm()

    [listed] = client.get(
        f"/api/v1/invoices/{invoice.pk}/transfers", headers={"Authorization": f"Bearer {key}"}
    ).json()
    confirmed = next(p for p in _payloads() if p["type"] == "invoice.deposit_confirmed")
    called = confirmed["data"]["transfer"]
    assert set(listed) == set(called)  # one snapshot, one set of names
    for name in ("id", "tx_hash", "amount", "amount_base_units", "asset", "status"):
        assert listed[name] == called[name], name
    assert (listed["amount"], listed["amount_base_units"]) == ("100.000000", str(100 * USDC))
    assert listed["tx_hash"] == tx and listed["awaiting_valuation"] is False
    [printed] = Receipt.objects.get(invoice=invoice).transfers
    assert (printed["tx_hash"], printed["amount"], printed["amount_base_units"]) == (
        tx,
        "100",
        str(100 * USDC),
    )


def test_a_transfer_without_a_real_transaction_hash_says_so(shop):
    from checkout.models import transfer_snapshot
    from invoices.delivery import TransferRef
    from wallets.models import Transfer

    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    transfer = Transfer.objects.get()
    # As recorded when ETH is found by reconciling a balance: no transaction to name.
    transfer.tx_hash = f"balance:{transfer.block_number}:{transfer.to_address}"
    snapshot = transfer_snapshot(transfer, order_number=payment.order_number)
    assert (snapshot["tx_hash"], snapshot["explorer_url"]) == (None, None)
    ref = TransferRef.from_snapshot(snapshot, network_name="Anvil")
    assert ref.tx_hash is None and ref.amount == 100
