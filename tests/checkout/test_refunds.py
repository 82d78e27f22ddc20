"""Refunds as stories: what opens them, what the payer may give as an address, how the
merchant's transfer is confirmed, and the books after each (worked ledger examples)."""

import json
from decimal import Decimal

import pytest
from web3 import Web3

from checkout.models import (
    PaymentStatus,
    RefundKind,
    RefundRequest,
    RefundStatus,
    SanctionedAddress,
)
from checkout.refunds import (
    RefundError,
    check_refund_address,
    parse_amount,
    refund_decline,
    refund_give_address,
    refund_mark_outside,
    refund_report_sent,
    refund_request,
    refund_resolve_unresolved,
    refunds_open_automatic,
    refunds_watch,
    wallet_call,
)
from checkout.services import payments_cancel_ended
from invoices.models import (
    CallbackDelivery,
    EmailDelivery,
    EmailKind,
    InvoiceEvent,
    InvoiceStatus,
    RefundState,
)
from invoices.services import invoice_cancel
from merchants.integrations import webhook_endpoint_create
from tests.factories import CustomerFactory
from wallets.ledger import account_balance, fees_account, holdings_account, merchant_account
from wallets.models import LedgerEntry, LedgerTransaction

USDC = 10**6
# A payer's own wallet (anvil's third default account), spelled with its EIP-55 checksum.
PAYER_WALLET = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def paid(shop, units: int, total: str = "100.00", **fields):
    customer = CustomerFactory(merchant=shop.merchant, email="ada@example.org")
    invoice = shop.invoice(total, customer=customer, **fields)
    payment = shop.start(invoice)
    shop.send(payment, units)
    shop.watch()
    shop.confirm()
    payment.refresh_from_db()
    invoice.refresh_from_db()
    return invoice, payment


def send_refund(shop, to: str, units: int) -> str:
    """The merchant's own wallet (the chain's first account) pays the refund."""
    token, owner = shop.tester.token, shop.tester.owner
    token.functions.mint(owner, units).transact({"from": owner})
    tx = token.functions.transfer(Web3.to_checksum_address(to), units).transact({"from": owner})
    return tx.to_0x_hex()


def confirm_refunds(shop) -> int:
    shop.tester.mine(shop.network.confirmations)
    return refunds_watch(network=shop.network, chain=shop.tester.chain())


def books(merchant, currency="USD"):
    return (
        account_balance(merchant_account(merchant), currency),
        -account_balance(holdings_account("anvil"), "USDC"),
    )


def legs(posting: LedgerTransaction) -> list[tuple[str, str, Decimal]]:
    return sorted(
        (e.account.code, e.currency, e.amount.normalize())
        for e in LedgerEntry.objects.filter(transaction=posting).select_related("account")
    )


# Worked ledger examples ----------------------------------------------------------------------


def test_full_refund_story_the_books_return_to_zero(shop, alice):
    invoice, payment = paid(shop, 100 * USDC)
    assert invoice.status == InvoiceStatus.PAID
    assert books(shop.merchant) == (Decimal("100"), Decimal("100"))

    refund = refund_request(
        payment=payment, kind=RefundKind.MANUAL, reason="The order was returned.", by=alice
    )
    assert refund.amount == 100 * USDC and refund.status == RefundStatus.REQUESTED
    refund_give_address(
        refund=refund, address=PAYER_WALLET, again=PAYER_WALLET.lower(), no_memo_needed=True
    )
    refund.refresh_from_db()
    call = wallet_call(refund)
    assert call is not None and call.to == shop.tester.token_address and call.value == 0
    assert call.data == ("0xa9059cbb" + "0" * 24 + PAYER_WALLET.lower()[2:] + f"{100 * USDC:064x}")

    tx = send_refund(shop, PAYER_WALLET, 100 * USDC)
    refund_report_sent(refund=refund, tx_hash=tx, by=alice)
    assert confirm_refunds(shop) == 1

    refund.refresh_from_db()
    invoice.refresh_from_db()
    assert refund.status == RefundStatus.CONFIRMED
    assert (refund.log_index, refund.from_address) == (0, shop.tester.owner.lower())
    assert invoice.refund_state == RefundState.FULL
    posting = LedgerTransaction.objects.get(idempotency_key=f"refund:{refund.pk}")
    assert (posting.kind, posting.reference) == ("refund", payment.order_number)
    assert legs(posting) == [
        ("fx", "USD", Decimal("100")),
        ("fx", "USDC", Decimal("-100")),
        ("holdings:anvil", "USDC", Decimal("100")),
        (f"merchant:{shop.merchant.pk}", "USD", Decimal("-100")),
    ]
    assert books(shop.merchant) == (Decimal("0"), Decimal("0"))
    types = list(invoice.events.values_list("type", flat=True))
    assert [t for t in types if t.startswith("refund.")] == [
        "refund.requested",
        "refund.address_given",
        "refund.sent",
        "refund.confirmed",
    ]
    # A second watch round changes nothing: the posting is keyed by the refund.
    assert refunds_watch(network=shop.network, chain=shop.tester.chain()) == 0
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1


def test_partial_refunds_with_a_fee_give_back_the_fee_pro_rata(shop, settings, alice):
    settings.FEE_PERCENT = Decimal(1)
    invoice, payment = paid(shop, 100 * USDC)
    assert books(shop.merchant) == (Decimal("99"), Decimal("100"))
    assert account_balance(fees_account(), "USD") == Decimal("1")

    first = refund_request(
        payment=payment,
        kind=RefundKind.MANUAL,
        reason="One item was broken.",
        amount=parse_amount("30", payment.asset),
        by=alice,
    )
    refund_give_address(refund=first, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True)
    refund_report_sent(refund=first, tx_hash=send_refund(shop, PAYER_WALLET, 30 * USDC), by=alice)
    confirm_refunds(shop)
    invoice.refresh_from_db()
    assert invoice.refund_state == RefundState.PARTIAL
    assert legs(LedgerTransaction.objects.get(idempotency_key=f"refund:{first.pk}")) == [
        ("fees", "USD", Decimal("-0.3")),
        ("fx", "USD", Decimal("30")),
        ("fx", "USDC", Decimal("-30")),
        ("holdings:anvil", "USDC", Decimal("30")),
        (f"merchant:{shop.merchant.pk}", "USD", Decimal("-29.7")),
    ]
    assert books(shop.merchant) == (Decimal("69.30"), Decimal("70"))

    # The rest goes back too: what is left of the credit and the fee, to the cent.
    rest = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="All of it.", by=alice)
    assert rest.amount == 70 * USDC
    refund_give_address(refund=rest, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True)
    # Not reported: the watcher finds the transfer to the address by itself.
    send_refund(shop, PAYER_WALLET, 70 * USDC)
    confirm_refunds(shop)  # finds it
    rest.refresh_from_db()
    assert rest.status == RefundStatus.SENT and rest.tx_hash
    confirm_refunds(shop)
    rest.refresh_from_db()
    invoice.refresh_from_db()
    assert rest.status == RefundStatus.CONFIRMED
    assert invoice.refund_state == RefundState.FULL
    assert books(shop.merchant) == (Decimal("0"), Decimal("0"))
    assert account_balance(fees_account(), "USD") == Decimal("0")


def test_overpayment_refund_gives_back_the_difference_and_the_invoice_is_paid(shop, alice):
    invoice, payment = paid(shop, 105 * USDC)
    assert invoice.status == InvoiceStatus.UNRESOLVED
    assert books(shop.merchant) == (Decimal("105"), Decimal("105"))

    refund = refund_resolve_unresolved(payment=payment, by=alice)
    invoice.refresh_from_db()
    assert (refund.kind, refund.amount) == (RefundKind.OVERPAYMENT, 5 * USDC)
    assert invoice.status == InvoiceStatus.PAID
    refund_give_address(
        refund=refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True
    )
    refund_report_sent(refund=refund, tx_hash=send_refund(shop, PAYER_WALLET, 5 * USDC), by=alice)
    confirm_refunds(shop)

    invoice.refresh_from_db()
    assert invoice.refund_state == RefundState.PARTIAL
    assert books(shop.merchant) == (Decimal("100"), Decimal("100"))
    # Nothing more of the difference can go back; the 100 paid can, by hand.
    with pytest.raises(RefundError):
        refund_resolve_unresolved(payment=payment, by=alice)


# What opens a refund ---------------------------------------------------------------------------


def test_cancelling_an_invoice_with_money_asks_the_payer_for_an_address_once(shop, alice):
    customer = CustomerFactory(merchant=shop.merchant, email="ada@example.org")
    invoice = shop.invoice("100.00", customer=customer)
    payment = shop.start(invoice)
    shop.send(payment, 40 * USDC)
    shop.watch()
    shop.confirm()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PROCESSING
    invoice_cancel(invoice=invoice, by=alice)
    # No top-up is coming to a cancelled invoice: the payment ends underpaid.
    assert payments_cancel_ended() == 1
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNDERPAID

    assert refunds_open_automatic() == 1
    assert refunds_open_automatic() == 0  # the sweep runs every few seconds
    refund = RefundRequest.objects.get(invoice=invoice)
    assert (refund.kind, refund.amount, refund.asset.symbol) == (
        RefundKind.CANCELLED,
        40 * USDC,
        "USDC",
    )
    email = EmailDelivery.objects.get(invoice=invoice, kind=EmailKind.REFUND_CLAIM)
    assert email.recipients == ["ada@example.org"]
    assert email.context["claim_url"] == f"http://testserver/refund/{refund.token}/"
    assert email.context["received"] == "40 USDC on Local dev chain"
    assert len(refund.token) >= 43
    # Declined, it stays declined: the sweep opens no second one of the same kind.
    refund_decline(refund=refund, reason="Settled by phone.", by=alice)
    assert refunds_open_automatic() == 0


def test_refunds_never_take_more_than_was_received(shop, alice):
    _invoice, payment = paid(shop, 100 * USDC)
    refund_request(
        payment=payment, kind=RefundKind.MANUAL, reason="Part", amount=60 * USDC, by=alice
    )
    with pytest.raises(RefundError, match="Only 40 USDC is left to refund") as error:
        refund_request(
            payment=payment, kind=RefundKind.MANUAL, reason="More", amount=41 * USDC, by=alice
        )
    assert error.value.field == "amount"
    with pytest.raises(RefundError, match="decimals"):
        parse_amount("0.0000001", payment.asset)
    for text in ("", "abc", "-1", "0", "NaN", "Infinity"):
        with pytest.raises(RefundError):
            parse_amount(text, payment.asset)
    with pytest.raises(RefundError, match="Say why"):
        refund_request(payment=payment, kind=RefundKind.MANUAL, reason="  ", by=alice)
    assert RefundRequest.objects.filter(payment=payment).count() == 1


# The payer's address -----------------------------------------------------------------------------


def test_refund_addresses_that_would_lose_the_money_are_refused(shop):
    _invoice, payment = paid(shop, 10 * USDC, total="10.00")
    network = shop.network
    wrong_checksum = PAYER_WALLET[:-1] + PAYER_WALLET[-1].lower()
    SanctionedAddress.objects.create(address="0x" + "ab" * 20)
    cases = {
        "0x12345": "0x and 40 hexadecimal",
        "3C44CdDdB6a900fa2b585dd299e03d12FA4293BC": "0x and 40 hexadecimal",
        "0x" + "g" * 40: "0x and 40 hexadecimal",
        wrong_checksum: "checksum",
        "0x" + "0" * 40: "zero address",
        payment.deposit_address.address: "our payment addresses",
        shop.tester.token_address: "token contract",
    }
    for address, message in cases.items():
        with pytest.raises(RefundError, match=message):
            check_refund_address(network=network, address=address, again=address)
    with pytest.raises(RefundError, match="differ") as error:
        check_refund_address(network=network, address=PAYER_WALLET, again="0x" + "1" * 40)
    assert error.value.field == "again"
    assert check_refund_address(network=network, address=PAYER_WALLET, again=PAYER_WALLET) == (
        PAYER_WALLET.lower()
    )

    refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned")
    with pytest.raises(RefundError, match="memo"):
        refund_give_address(
            refund=refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=False
        )
    sanctioned = "0x" + "ab" * 20
    with pytest.raises(RefundError, match="cannot receive"):
        refund_give_address(
            refund=refund, address=sanctioned, again=sanctioned, no_memo_needed=True
        )
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.REQUESTED, "")
    assert list(refund.screenings.values_list("source", "result")) == [
        ("local sanctions list", "hit")
    ]


def test_a_refund_link_used_after_it_was_paid_changes_nothing(shop, alice):
    _invoice, payment = paid(shop, 10 * USDC, total="10.00")
    refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned")
    refund_mark_outside(refund=refund, reference="Bank transfer 2026-12-01", by=alice)
    with pytest.raises(RefundError, match="was paid on"):
        refund_give_address(
            refund=refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True
        )
    with pytest.raises(RefundError, match="was paid"):
        refund_decline(refund=refund, reason="no", by=alice)
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.CONFIRMED, "")
    # Paid outside: the books are not touched, as for an invoice marked paid off-platform.
    assert not LedgerTransaction.objects.filter(kind="refund").exists()


def test_a_reported_transaction_that_does_not_pay_the_refund_sends_it_back(shop, alice):
    invoice, payment = paid(shop, 10 * USDC, total="10.00")
    refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned")
    refund_give_address(
        refund=refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True
    )
    wrong = send_refund(shop, PAYER_WALLET, 9 * USDC)  # one token short
    refund_report_sent(refund=refund, tx_hash=wrong, by=alice)
    confirm_refunds(shop)
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash) == (RefundStatus.ADDRESS_GIVEN, "")
    note = InvoiceEvent.objects.get(invoice=invoice, type="refund.not_paid").note
    assert "does not send 10 USDC" in note
    with pytest.raises(RefundError, match="transaction hash"):
        refund_report_sent(refund=refund, tx_hash="0x1234", by=alice)
    assert not LedgerTransaction.objects.filter(kind="refund").exists()


def test_refund_callbacks_carry_the_refund_in_the_transfer_units(shop, alice):
    webhook_endpoint_create(merchant=shop.merchant, url="https://hooks.acme.example/in")
    _invoice, payment = paid(shop, 12_500_000, total="12.50")
    refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned", by=alice)
    refund_give_address(
        refund=refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True
    )
    refund_report_sent(refund=refund, tx_hash=send_refund(shop, PAYER_WALLET, 12_500_000), by=alice)
    confirm_refunds(shop)

    sent = CallbackDelivery.objects.filter(event_type__startswith="refund.").order_by("pk")
    assert [d.event_type for d in sent] == ["refund.requested", "refund.sent", "refund.confirmed"]
    body = json.loads(sent.last().payload)
    assert body["data"]["refund"] == {
        **body["data"]["refund"],
        "id": refund.pk,
        "status": "confirmed",
        "asset": "USDC",
        "amount": "12.500000",  # the asset's decimals, as in the transfer
        "amount_base_units": "12500000",
        "address": PAYER_WALLET.lower(),
        "claim_url": f"http://testserver/refund/{refund.token}/",
    }
    assert body["data"]["payment"]["order_number"] == payment.order_number
    assert body["data"]["transfer"] is None
