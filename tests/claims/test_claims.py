"""Claims end to end on anvil: forwarder addresses paid, claimed to the account, watched,
booked, announced; failures, reorgs, claims nobody reported, and bad input."""

import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from checkout.claims import claim_settle
from invoices.models import CallbackDelivery, InvoiceEvent, InvoiceKind
from merchants.integrations import webhook_endpoint_create
from tests.chain import running_anvil
from tests.claims.helpers import ACCOUNT, STRANGER, ClaimShop
from tests.conftest import require_postgres
from wallets.claims import ClaimError, claim_prepare, claim_submit, uncollected
from wallets.ledger import account_balance, claimed_account, holdings_account, merchant_account
from wallets.models import Claim, ClaimStatus, LedgerTransaction

USDC = 10**6


@pytest.fixture
def shop(acme):
    with running_anvil() as rpc_url:
        yield ClaimShop(acme, rpc_url)


def paid(shop, total="100.00", symbol="USDC", units=None, **fields):
    invoice = shop.invoice(total, **fields)
    payment = shop.start(invoice, symbol)
    shop.pay(payment.deposit_address.address, units or int(Decimal(total)) * USDC, symbol)
    return invoice, payment


def left(shop) -> int:
    return sum(u.amount for u in uncollected(merchant=shop.merchant))


@pytest.mark.django_db
def test_a_batch_claim_moves_two_invoices_funds_to_the_account_and_the_books(shop, acme):
    webhook_endpoint_create(merchant=acme, url="https://erp.example/hooks")
    (first, p1), (second, p2) = paid(shop, "100.00"), paid(shop, "40.00", symbol="USDT")
    shop.watch(), shop.confirm()
    assert left(shop) == 140 * USDC
    assert p1.deposit_address.destination == ACCOUNT.lower()
    credited = account_balance(merchant_account(acme), "USD")
    assert credited == Decimal("140.00")

    claim = shop.prepare([p1, p2])
    assert claim.status == ClaimStatus.PREPARED and claim.estimated_gas > 0
    before = shop.balance("USDC"), shop.balance("USDT")
    shop.sign(claim)
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.PENDING
    shop.watch()
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.EXECUTED
    assert left(shop) == 0  # the cards are gone while it confirms
    shop.confirm()
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.CONFIRMED and claim.handled_status == ClaimStatus.CONFIRMED
    assert (shop.balance("USDC"), shop.balance("USDT")) == (
        before[0] + 100 * USDC,
        before[1] + 40 * USDC,
    )
    # Books: from "at deposit addresses" to "at the account", per network and asset.
    holdings = holdings_account("anvil")
    account = claimed_account("anvil", acme)
    assert account_balance(holdings, "USDC") == 0 and account_balance(holdings, "USDT") == 0
    assert account_balance(account, "USDC") == Decimal(-100)
    assert account_balance(account, "USDT") == Decimal(-40)
    # The gas: from the receipt, split over the two addresses, booked as the merchant's
    # expense at the static ETH rate (3000 USD).
    assert claim.fee_wei > 0
    items = list(claim.items.all())
    assert sum(i.fee_share_wei for i in items) == claim.fee_wei
    fee_usd = sum(
        (Decimal(int(i.fee_share_wei)).scaleb(-18) * 3000).quantize(Decimal("0.01")) for i in items
    )
    assert account_balance(merchant_account(acme), "USD") == credited - fee_usd
    assert LedgerTransaction.objects.filter(kind="claim_fee").count() == 2
    for invoice in (first, second):
        event = InvoiceEvent.objects.get(invoice=invoice, type="invoice.claimed")
        assert event.data["claim"]["tx_hash"] == claim.tx_hash
        (callback,) = [
            json.loads(d.payload)
            for d in CallbackDelivery.objects.filter(invoice=invoice)
            if json.loads(d.payload)["type"] == "invoice.claimed"
        ]
        assert callback["data"]["claim"]["status"] == "confirmed"
        assert callback["data"]["claim"]["fee_asset"] == "ETH"


@pytest.mark.django_db
def test_eth_and_repeated_claims_of_the_same_address(shop, acme):
    invoice, payment = paid(shop, "30.00", symbol="ETH", units=10**16)
    shop.watch(), shop.confirm()
    address = payment.deposit_address.address
    before = shop.balance("ETH")
    first = shop.prepare([payment])
    shop.sign(first, sender=STRANGER, report=False)  # anyone may send it; found on chain
    shop.watch(), shop.confirm()
    first.refresh_from_db()
    assert first.status == ClaimStatus.CONFIRMED and first.sent_by == "wallet"
    assert shop.balance("ETH") == before + 10**16
    # Late money to the same (now deployed) forwarder: claimed again.
    shop.pay(address, 2 * 10**15, "ETH")
    shop.watch(), shop.confirm()
    assert left(shop) == 2 * 10**15
    again = shop.prepare([payment])
    shop.sign(again)
    shop.watch(), shop.confirm()
    again.refresh_from_db()
    assert again.status == ClaimStatus.CONFIRMED
    assert shop.balance("ETH") > before + 10**16  # the account paid gas for the second one
    assert left(shop) == 0
    assert InvoiceEvent.objects.filter(invoice=invoice, type="invoice.claimed").count() == 2


@pytest.mark.django_db
def test_a_failed_claim_keeps_the_funds_uncollected_and_books_its_gas(shop, acme):
    invoice, payment = paid(shop, "50.00")
    shop.watch(), shop.confirm()
    claim = shop.prepare([payment])
    shop.sign(claim, gas=60_000)  # too little for a deployment and a sweep
    shop.watch(), shop.confirm()
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.FAILED
    assert "gas" in claim.failure_reason
    assert claim.fee_wei > 0
    assert left(shop) == 50 * USDC
    event = InvoiceEvent.objects.get(invoice=invoice, type="claim.failed")
    assert "uncollected" in event.note
    assert LedgerTransaction.objects.filter(kind="claim_fee").count() == 1
    # And it can be claimed again.
    retry = shop.prepare([payment])
    shop.sign(retry)
    shop.watch(), shop.confirm()
    retry.refresh_from_db()
    assert retry.status == ClaimStatus.CONFIRMED and left(shop) == 0


@pytest.mark.django_db
def test_a_reorg_that_removes_the_claim_puts_the_funds_back_to_uncollected(acme):
    with running_anvil() as rpc_url:
        shop = ClaimShop(acme, rpc_url, confirmations=5)
        _invoice, payment = paid(shop, "20.00")
        shop.mine(6)
        shop.watch()
        claim = shop.prepare([payment])
        shop.sign(claim, gas=800_000)
        shop.watch()
        claim.refresh_from_db()
        assert claim.status == ClaimStatus.EXECUTED and left(shop) == 0
        response = shop.w3.provider.make_request("anvil_reorg", [1, []])
        assert "error" not in response
        shop.watch()
        claim.refresh_from_db()
        assert claim.status == ClaimStatus.PENDING and claim.block_number is None
        assert left(shop) == 20 * USDC
        # Sent again from the wallet as a new transaction (other gas: the same signed bytes
        # again would have the same hash, and be the same claim mined after all), it is mined
        # and confirmed.
        shop.send(ACCOUNT, claim.factory, data=claim.calldata, gas=900_000)
        shop.mine(5)
        shop.watch()
        claim.refresh_from_db()
        assert claim.status == ClaimStatus.PENDING  # its own transaction is gone for good
        again = Claim.objects.exclude(pk=claim.pk).get()
        assert (again.status, again.sent_by) == (ClaimStatus.CONFIRMED, "wallet")
        assert left(shop) == 0
        # A sent claim never mined stops counting as on its way after a while.
        Claim.objects.filter(pk=claim.pk).update(sent_at=timezone.now() - timedelta(hours=2))
        shop.watch()
        claim.refresh_from_db()
        assert claim.status == ClaimStatus.FAILED and "never mined" in claim.failure_reason


@pytest.mark.django_db
def test_claims_refuse_bad_input_with_clear_messages(shop, acme, globex):
    _invoice, payment = paid(shop, "10.00")
    empty = shop.start(shop.invoice("5.00"))
    shop.watch(), shop.confirm()
    with pytest.raises(ClaimError, match="nothing to claim"):
        shop.prepare([empty])
    with pytest.raises(ClaimError, match="not yours"):
        claim_prepare(
            merchant=globex, network=shop.network, deposit_ids=[payment.deposit_address_id]
        )
    claim = shop.prepare([payment])
    with pytest.raises(ClaimError, match=r"on chain 1, but"):
        claim_submit(
            merchant=acme, claim_id=claim.pk, tx_hash="0x" + "a" * 64, sender="", chain_id=1
        )
    with pytest.raises(ClaimError, match="transaction hash"):
        claim_submit(merchant=acme, claim_id=claim.pk, tx_hash="0x12", sender="", chain_id=31337)
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.PREPARED  # nothing half-written
    shop.sign(claim)
    # Twice at once: the first is on its way, the second is refused until it is mined.
    with pytest.raises(ClaimError, match="already on its way"):
        shop.prepare([payment])
    shop.network.deposit_factory = ""
    shop.network.save()
    with pytest.raises(ClaimError, match="not deployed"):
        shop.prepare([payment])


@pytest.mark.django_db
def test_a_wallets_answer_with_a_trailing_newline_or_an_endless_chain_id(shop, acme, client_for):
    """Found by fuzzing: a hash ending in a newline passed the `$` of the pattern, was stored
    67 characters long and broke every receipt request of the network's claim rounds; a
    chain id of 5,000 hex digits was a 500 (Python's integer-to-text limit)."""
    from django.urls import reverse

    from tests.factories import MembershipFactory

    _invoice, payment = paid(shop, "10.00")
    shop.watch(), shop.confirm()
    claim = shop.prepare([payment])
    staff = MembershipFactory(merchant=acme, role="staff", user__email="sam@acme.test").user
    browser = client_for(staff)
    url = reverse("claim_sent", args=[claim.pk])
    for chain_id in ("0x" + "f" * 5000, "9" * 30, "\u0663\u0661", "-31337", ""):
        answer = browser.post(url, {"chain_id": chain_id, "tx_hash": "0x" + "ab" * 32})
        assert answer.status_code == 400, chain_id
        assert answer.json()["error"] == "The wallet did not say which chain it is on."
    for tx_hash in ("0x" + "cd" * 32 + "\nx", "0x" + "cd" * 31 + "\n"):
        with pytest.raises(ClaimError, match="transaction hash"):
            claim_submit(
                merchant=acme, claim_id=claim.pk, tx_hash=tx_hash, sender="", chain_id=31337
            )
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.PREPARED
    tx_hash = shop.sign(claim, report=False)
    answer = browser.post(
        url, {"chain_id": hex(31337), "tx_hash": tx_hash + "\n", "sender": ACCOUNT + "\n"}
    )
    assert answer.status_code == 200
    claim.refresh_from_db()
    assert (claim.status, claim.tx_hash, claim.sender) == (
        ClaimStatus.PENDING,
        tx_hash.lower(),
        ACCOUNT.lower(),
    )
    shop.watch()  # the round reads the receipt of the hash as stored
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.EXECUTED


@pytest.mark.django_db
def test_a_permanent_invoice_claims_each_payment(shop):
    invoice = shop.invoice("10.00", kind=InvoiceKind.PERMANENT)
    payments = []
    for _ in range(2):
        payment = shop.start(invoice)
        shop.pay(payment.deposit_address.address, 10 * USDC)
        payments.append(payment)
    shop.watch(), shop.confirm()
    assert payments[0].deposit_address_id != payments[1].deposit_address_id
    claim = shop.prepare(payments)
    shop.sign(claim)
    shop.watch(), shop.confirm()
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.CONFIRMED and left(shop) == 0


@pytest.mark.django_db(transaction=True)
def test_settling_a_claim_twice_at_once_books_it_once(acme):
    require_postgres()
    with running_anvil() as rpc_url:
        shop = ClaimShop(acme, rpc_url)
        _invoice, payment = paid(shop, "10.00")
        shop.watch(), shop.confirm()
        claim = shop.prepare([payment])
        shop.sign(claim)
        shop.mine(3)
        # Move the claim to confirmed without settling it, then settle from 4 threads.
        from wallets.claim_watch import watch_claims

        watch_claims(network=shop.network)
        claim.refresh_from_db()
        assert claim.status == ClaimStatus.CONFIRMED and claim.handled_status == ""
        barrier = threading.Barrier(4)
        errors = []

        def settle():
            try:
                barrier.wait()
                claim_settle(claim.pk)
            except Exception as error:
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=settle) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert LedgerTransaction.objects.filter(kind="claim").count() == 1
        assert LedgerTransaction.objects.filter(kind="claim_fee").count() == 1
        assert account_balance(claimed_account("anvil", acme), "USDC") == Decimal(-10)


# anvil account (4): plays the operator's gas-only relayer.
RELAYER_KEY = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"
RELAYER = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"


@pytest.mark.django_db
def test_the_relayer_auto_claims_above_the_threshold_and_pays_only_gas(shop, acme, settings):
    settings.CHAIN_OVERRIDES = {"anvil": {"relayer_key": RELAYER_KEY, "auto_claim_usd": 50}}
    _small, little = paid(shop, "10.00")
    shop.watch(), shop.confirm()
    assert not Claim.objects.exists()  # 10 USD is below the threshold
    _large, _big = paid(shop, "60.00", symbol="USDT")
    relayer_eth = shop.balance("ETH", RELAYER)
    shop.watch(), shop.confirm()
    claim = Claim.objects.get()
    assert (claim.sent_by, claim.sender) == ("relayer", RELAYER.lower())
    shop.confirm()
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.CONFIRMED
    assert left(shop) == 0  # both addresses: 70 USD together
    # The relayer paid the gas and received nothing; the account got the money.
    assert shop.balance("ETH", RELAYER) == relayer_eth - int(claim.fee_wei)
    assert shop.balance("USDC", RELAYER) == 0 and shop.balance("USDT", RELAYER) == 0
    assert account_balance(claimed_account("anvil", acme), "USDT") == Decimal(-60)
    assert LedgerTransaction.objects.filter(kind="claim_fee").count() == 2
    assert little.deposit_address_id in set(
        claim.items.values_list("deposit_address_id", flat=True)
    )


@pytest.mark.django_db
def test_a_claim_that_names_another_token_moves_nothing_and_leaves_the_deposit_uncollected(shop):
    from wallets.forwarders import claim_calldata

    _invoice, payment = paid(shop, "25.00")
    shop.watch(), shop.confirm()
    deposit = payment.deposit_address
    # Someone claims the address for USDT only: the forwarder is deployed, the USDC stays.
    data = claim_calldata(
        destination=deposit.destination,
        salts=[bytes.fromhex(deposit.salt.removeprefix("0x"))],
        tokens=[shop.deployed["USDT"].lower()],
    )
    shop.send(STRANGER, shop.factory, data=data)
    shop.watch(), shop.confirm()
    assert not Claim.objects.exists()  # nothing of ours moved: nothing to record
    assert left(shop) == 25 * USDC and shop.balance("USDC", deposit.address) == 25 * USDC
    claim = shop.prepare([payment])  # and the merchant's own claim still collects it
    shop.sign(claim)
    shop.watch(), shop.confirm()
    claim.refresh_from_db()
    assert claim.status == ClaimStatus.CONFIRMED and left(shop) == 0
