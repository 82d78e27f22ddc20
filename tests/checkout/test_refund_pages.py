"""The payer's refund page and the merchant's refunds tab, over HTTP."""

import pytest
from django.urls import reverse

from checkout.models import RefundKind, RefundRequest, RefundStatus
from checkout.refunds import refund_mark_outside, refund_request
from tests.checkout.test_refunds import PAYER_WALLET, USDC, paid
from wallets.models import LedgerTransaction


@pytest.fixture
def refund(shop):
    _invoice, payment = paid(shop, 25 * USDC, total="25.00")
    return refund_request(
        payment=payment, kind=RefundKind.MANUAL, reason="The <b>parcel</b> was lost."
    )


def page(client, refund, **data):
    url = reverse("refund_page", kwargs={"token": refund.token})
    return client.post(url, data) if data else client.get(url)


def test_refund_page_says_what_why_and_where_and_nothing_private(client, refund, alice):
    response = page(client, refund)
    assert response.status_code == 200
    text = response.content.decode()
    assert "25 USDC" in text and "Local dev chain" in text
    assert "The &lt;b&gt;parcel&lt;/b&gt; was lost." in text  # escaped
    assert refund.invoice.reference in text
    assert alice.email not in text  # the merchant's people stay private
    assert "memo" in text
    assert response["Cache-Control"] == "no-store"


def test_payer_gives_the_address_twice_and_the_page_says_it_is_coming(client, refund):
    response = page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed="on")
    assert response.status_code == 302
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.ADDRESS_GIVEN, PAYER_WALLET.lower())
    assert "Address received" in page(client, refund).content.decode()
    # Given once: a second address is refused with a clear message, nothing changes.
    other = "0x" + "7" * 40
    response = page(client, refund, address=other, again=other, no_memo_needed="on")
    assert response.status_code == 409
    assert "cannot change" in response.content.decode()
    refund.refresh_from_db()
    assert refund.address == PAYER_WALLET.lower()


@pytest.mark.parametrize(
    ("address", "again", "field", "message"),
    [
        ("not an address", "not an address", "address", "40 hexadecimal"),
        (PAYER_WALLET, "0x" + "1" * 40, "again", "differ"),
        ("0x" + "0" * 40, "0x" + "0" * 40, "address", "zero address"),
        ("", "", "address", "40 hexadecimal"),
        ("0x\x00" + "1" * 39, "x", "address", "40 hexadecimal"),
    ],
)
def test_bad_refund_addresses_get_a_400_with_the_field_message(
    client, refund, address, again, field, message
):
    response = page(client, refund, address=address, again=again, no_memo_needed="on")
    assert response.status_code == 400
    text = response.content.decode()
    assert f'id="refund-{field}-error"' in text and message in text
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.REQUESTED, "")


def test_the_memo_warning_must_be_confirmed(client, refund):
    response = page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET)
    assert response.status_code == 400
    assert "need one lose refunds" in response.content.decode()


def test_a_link_used_after_the_refund_was_paid_says_so_and_changes_nothing(client, refund, alice):
    refund_mark_outside(refund=refund, reference="Cash at the counter", by=alice)
    text = page(client, refund).content.decode()
    assert "Refunded" in text and "Cash at the counter" in text
    response = page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed="on")
    assert response.status_code == 409
    assert "was paid" in response.content.decode()
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.CONFIRMED, "")


@pytest.mark.parametrize("token", ["nope", "x" * 65, "%00", "a/b"])
def test_unknown_or_malformed_refund_tokens_are_not_found(client, db, token):
    assert client.get(f"/refund/{token}/").status_code == 404


def test_the_payment_page_links_the_refund(client, refund):
    response = client.get(f"/pay/{refund.invoice.public_token}/")
    text = response.content.decode()
    assert "A refund of 25 USDC is waiting for your address." in text
    assert f"/refund/{refund.token}/" in text


def test_merchant_refunds_tab_requests_a_partial_refund_and_pastes_a_hash(
    refund, client_for, alice
):
    client = client_for(alice)
    invoice = refund.invoice
    tab = client.get(reverse("invoice_refunds", kwargs={"pk": invoice.pk}))
    assert tab.status_code == 200
    assert "Waiting for the payer" in tab.content.decode()
    # Everything is in a refund already: a second one is refused with a message.
    response = client.post(
        reverse("invoice_refund_new", kwargs={"pk": invoice.pk}),
        {"payment": refund.payment_id, "amount": "5", "reason": "Again"},
        follow=True,
    )
    assert "Nothing is left to refund" in response.content.decode()
    assert RefundRequest.objects.filter(invoice=invoice).count() == 1

    page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed="on")
    tab = client.get(reverse("invoice_refunds", kwargs={"pk": invoice.pk})).content.decode()
    assert "Send with browser wallet" in tab and f'data-to="{refund.asset.contract_address}"' in tab
    bad = client.post(
        reverse("refund_sent", kwargs={"pk": refund.pk}),
        {"tx_hash": "0xabc"},
        HTTP_ACCEPT="application/json",
    )
    assert bad.status_code == 400 and "transaction hash" in bad.json()["error"]
    good = client.post(
        reverse("refund_sent", kwargs={"pk": refund.pk}),
        {"tx_hash": "0x" + "a" * 64},
        HTTP_ACCEPT="application/json",
    )
    assert good.json() == {"ok": True}
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash) == (RefundStatus.SENT, "0x" + "a" * 64)
    assert not LedgerTransaction.objects.filter(kind="refund").exists()


def test_a_credit_note_on_a_paid_invoice_starts_a_refund_linked_to_it(shop, client_for, alice):
    from invoices.services import credit_note_issue

    invoice, payment = paid(shop, 25 * USDC, total="25.00")
    note = credit_note_issue(invoice=invoice, reason="Arrived damaged", by=alice)
    client = client_for(alice)
    detail = client.get(reverse("invoice_detail", kwargs={"pk": invoice.pk})).content.decode()
    assert f"?tab=refunds&amp;credit_note={note.pk}" in detail
    tab = client.get(
        reverse("invoice_refunds", kwargs={"pk": invoice.pk}), {"credit_note": note.pk}
    ).content.decode()
    assert 'value="25"' in tab and 'value="Arrived damaged"' in tab
    assert f'<option value="{note.pk}" selected>' in tab

    client.post(
        reverse("invoice_refund_new", kwargs={"pk": invoice.pk}),
        {
            "payment": payment.pk,
            "amount": "25",
            "reason": "Arrived damaged",
            "credit_note": note.pk,
        },
    )
    refund = RefundRequest.objects.get(invoice=invoice)
    assert (refund.credit_note, refund.amount) == (note, 25 * USDC)
    detail = client.get(reverse("invoice_detail", kwargs={"pk": invoice.pk})).content.decode()
    assert "refund waiting for the payer&#x27;s address" in detail


def test_refund_page_answers_429_per_link_and_changes_nothing(client, shop, refund, settings):
    settings.REFUND_PAGE_REQUESTS_PER_TOKEN_PER_MINUTE = 3
    for _ in range(3):
        assert page(client, refund).status_code == 200
    response = page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed="on")
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    text = response.content.decode()
    assert "Too many requests" in text and "Nothing was changed" in text
    assert refund.reason not in text  # a throttled request learns nothing of the refund
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.REQUESTED, "")
    # Another refund's link is not affected by this one's count.
    payment = shop.start(shop.invoice("5.00"))
    shop.send(payment, 5 * USDC)
    shop.confirm()
    other = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Second order")
    assert page(client, other).status_code == 200


def test_refund_page_answers_429_per_client_address_over_every_link(client, refund, settings):
    settings.REFUND_PAGE_REQUESTS_PER_ADDRESS_PER_MINUTE = 4
    # Guessing tokens counts too: the address is throttled before any lookup.
    for guess in ("a" * 43, "b" * 43, "c" * 43):
        assert client.get(f"/refund/{guess}/").status_code == 404
    assert page(client, refund).status_code == 200
    response = page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed="on")
    assert response.status_code == 429
    refund.refresh_from_db()
    assert (refund.status, refund.address) == (RefundStatus.REQUESTED, "")
    # Another client address is not throttled by this one.
    response = page(
        client.__class__(REMOTE_ADDR="10.1.2.3"),
        refund,
        address=PAYER_WALLET,
        again=PAYER_WALLET,
        no_memo_needed="on",
    )
    assert response.status_code == 302
    refund.refresh_from_db()
    assert refund.status == RefundStatus.ADDRESS_GIVEN


def test_money_received_in_another_asset_is_refunded_from_the_tab_in_that_asset(
    shop, client_for, alice, settings
):
    """USDT sent to a USDC order: the tab offers the USDT, never more than arrived, and the
    confirmed refund takes back exactly what its valuation credited (a worked example)."""
    from decimal import Decimal

    from web3 import Web3

    from tests.checkout.test_payment_transitions import _second_token
    from tests.checkout.test_refunds import confirm_refunds
    from wallets.ledger import account_balance, holdings_account, merchant_account

    settings.STATIC_RATES = {**settings.STATIC_RATES, ("USDT", "USD"): Decimal("0.998")}
    usdt = _second_token(shop)
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    to = Web3.to_checksum_address(payment.deposit_address.address)
    shop.other_token.functions.transfer(to, 40 * USDC).transact({"from": shop.tester.payer})
    shop.confirm()
    merchant = merchant_account(shop.merchant)
    assert account_balance(merchant, "USD") == Decimal("39.92")  # 40 USDT at 0.998

    client = client_for(alice)
    tab = client.get(reverse("invoice_refunds", kwargs={"pk": invoice.pk})).content.decode()
    assert f'value="{payment.pk}:{usdt.pk}"' in tab
    assert "up to 40 USDT on Local dev chain (received instead of USDC)" in tab
    new = reverse("invoice_refund_new", kwargs={"pk": invoice.pk})
    source = f"{payment.pk}:{usdt.pk}"
    # More than arrived in USDT is refused with the figure; nothing is written.
    response = client.post(
        new, {"payment": source, "amount": "40.01", "reason": "Wrong coin"}, follow=True
    )
    assert "Only 40 USDT is left to refund" in response.content.decode()
    # In the quoted asset nothing arrived at all.
    response = client.post(new, {"payment": payment.pk, "reason": "Wrong coin"}, follow=True)
    assert "Nothing is left to refund" in response.content.decode()
    assert not RefundRequest.objects.exists()

    client.post(new, {"payment": source, "amount": "10", "reason": "Wrong coin, part one"})
    refund = RefundRequest.objects.get()
    assert (refund.asset, refund.network, refund.amount) == (usdt, shop.network, 10 * USDC)
    tab = client.get(reverse("invoice_refunds", kwargs={"pk": invoice.pk})).content.decode()
    assert "up to 30 USDT" in tab

    page(client, refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed="on")
    refund.refresh_from_db()
    assert (
        f'data-to="{usdt.contract_address}"'
        in client.get(reverse("invoice_refunds", kwargs={"pk": invoice.pk})).content.decode()
    )
    owner = shop.tester.owner
    shop.other_token.functions.mint(owner, 10 * USDC).transact({"from": owner})
    shop.other_token.functions.transfer(Web3.to_checksum_address(PAYER_WALLET), 10 * USDC).transact(
        {"from": owner}
    )
    confirm_refunds(shop)  # found unreported: a USDT Transfer log to the address
    confirm_refunds(shop)
    refund.refresh_from_db()
    assert refund.status == RefundStatus.CONFIRMED
    # A quarter of the USDT went back: a quarter of its credit (39.92 / 4 = 9.98).
    assert account_balance(merchant, "USD") == Decimal("29.94")
    assert -account_balance(holdings_account("anvil"), "USDT") == Decimal("30")
    assert account_balance(holdings_account("anvil"), "USDC") == 0
