"""Compliance screening: the token contracts' freeze lists on anvil, the operator's local
list, a hit holding the payment, its release by an admin, and the refund at the timer's end."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from checkout.models import (
    PaymentStatus,
    RefundKind,
    RefundRequest,
    SanctionedAddress,
    Screening,
)
from checkout.refunds import refunds_open_automatic
from checkout.screening import addresses_in
from checkout.services import payment_start
from checkout.settlement import payment_release, payments_fail_held
from checkout.tasks import watch_network
from contracts.deploy import DEPLOYER_KEY, PAYER_ADDRESS, load_artifact
from invoices.models import EmailDelivery, EmailKind, FailureReason, InvoiceStatus
from invoices.services import InvoiceStateError
from tests.chain import running_anvil
from tests.checkout.test_refunds import USDC
from tests.factories import CustomerFactory, UserFactory, make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from tests.wallets.test_scanner_anvil import Anvil, _register
from wallets.addresses import wallet_set
from wallets.chain import Chain, Signer
from wallets.ledger import account_balance, held_account, merchant_account
from wallets.models import Asset, LedgerTransaction

SANCTIONED = "0x7F367cC41522cE07553e823bf3be79A889DEbe1B"


@pytest.fixture
def anvil():
    with running_anvil() as rpc_url:
        yield Anvil(rpc_url)


def freeze(anvil: Anvil, token: str, account: str) -> None:
    chain = Chain(anvil.rpc_url)
    owner = Signer(chain, DEPLOYER_KEY)
    tx = owner.call(
        anvil.deployed[token],
        load_artifact()["abi"],
        "setFrozen",
        [account, True],
        nonce=owner.next_nonce(),
    )
    owner.wait(tx)


def test_freeze_list_on_anvil_answers_for_frozen_and_free_addresses(anvil):
    chain = Chain(anvil.rpc_url)
    freeze(anvil, "USDT", PAYER_ADDRESS)
    assert chain.freeze_listed(anvil.deployed["USDT"], PAYER_ADDRESS) is True
    assert chain.freeze_listed(anvil.deployed["USDC"], PAYER_ADDRESS) is False
    # A contract without a freeze list (Multicall3's code is not there: an empty account).
    assert chain.freeze_listed("0x" + "4" * 40, PAYER_ADDRESS) is None


@pytest.mark.django_db
def test_sender_frozen_by_usdt_paying_usdc_is_held_then_released_by_an_admin(
    anvil, acme, alice, settings
):
    settings.SCREENING_FREEZE_LISTS = True
    admin = UserFactory(email="ops@operator.example", is_superuser=True, is_staff=True)
    network = _register(anvil, confirmations=2)
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    customer = CustomerFactory(merchant=acme, email="ada@example.org")
    invoice = make_invoice(
        acme,
        customer=customer,
        items=[("Lamp", "1", "100.00")],
        issue=True,
        accepted_assets=["USDC"],
    )
    payment = payment_start(
        invoice=invoice, asset=Asset.objects.get(network=network, symbol="USDC")
    )
    # Frozen by one stablecoin: screened out for every token of the network.
    freeze(anvil, "USDT", PAYER_ADDRESS)
    anvil.pay(payment.deposit_address.address, 100 * USDC)
    watch_network(network.pk)
    anvil.mine(2)
    watch_network(network.pk)

    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert payment.is_held and payment.status == PaymentStatus.PROCESSING
    assert invoice.status == InvoiceStatus.PROCESSING
    assert "frozen by USDT" in payment.hold_reason
    assert account_balance(merchant_account(acme), "USD") == Decimal(0)
    assert account_balance(held_account(acme), "USD") == Decimal(100)
    decisions = sorted(
        Screening.objects.filter(transfer__deposit_address=payment.deposit_address).values_list(
            "source", "result", "address"
        )
    )
    assert decisions == [
        ("local sanctions list", "clear", PAYER_ADDRESS.lower()),
        ("token freeze list", "hit", PAYER_ADDRESS.lower()),
    ]
    email = EmailDelivery.objects.get(invoice=invoice, kind=EmailKind.COMPLIANCE_HOLD)
    assert email.recipients == sorted([alice.email, admin.email])
    # Another round asks nothing twice and keeps holding.
    watch_network(network.pk)
    assert Screening.objects.filter(transfer__deposit_address=payment.deposit_address).count() == 2

    payment_release(payment=payment, by=admin)
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert payment.status == PaymentStatus.PAID and not payment.is_held
    assert invoice.status == InvoiceStatus.PAID
    assert account_balance(merchant_account(acme), "USD") == Decimal(100)
    assert account_balance(held_account(acme), "USD") == Decimal(0)
    assert invoice.events.filter(type="payment.compliance_released", actor="admin").exists()


@pytest.mark.django_db
def test_local_list_hit_fails_the_invoice_compliance_at_the_timer_end_and_asks_for_a_refund(
    shop, tmp_path, settings
):
    # The CSV export: a header, an address column among others, a non-EVM line.
    listing = tmp_path / "sdn.csv"
    sender = shop.tester.payer.lower()
    listing.write_text(
        "name,chain,address\n"
        f"Some entity,ETH,{sender}\n"
        "Other,XBT,1BoatSLRHtKNngkdXEeobR76b53LETtpyT\n"
        f"Another,ETH,{SANCTIONED}\n"
    )
    call_command("sanctions_import", str(listing), "--list", "OFAC SDN")
    assert set(SanctionedAddress.objects.values_list("address", "list_name")) == {
        (sender, "OFAC SDN"),
        (SANCTIONED.lower(), "OFAC SDN"),
    }
    customer = CustomerFactory(merchant=shop.merchant, email="ada@example.org")
    invoice = shop.invoice("50.00", customer=customer, pricing_mode="timer")
    payment = shop.start(invoice)
    shop.send(payment, 50 * USDC)
    shop.watch()
    shop.confirm()
    payment.refresh_from_db()
    assert payment.is_held and "OFAC SDN" in payment.hold_reason
    assert account_balance(held_account(shop.merchant), "USD") == Decimal(50)

    assert payments_fail_held(now=invoice.expires_at - timedelta(seconds=1)) == 0
    assert payments_fail_held(now=invoice.expires_at + timedelta(seconds=1)) == 1
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert (invoice.status, invoice.failure_reason) == (
        InvoiceStatus.FAILED,
        FailureReason.COMPLIANCE_HOLD,
    )
    assert refunds_open_automatic() == 1
    refund = RefundRequest.objects.get(invoice=invoice)
    assert (refund.kind, refund.amount) == (RefundKind.COMPLIANCE, 50 * USDC)
    assert EmailDelivery.objects.filter(invoice=invoice, kind=EmailKind.REFUND_CLAIM).exists()


def test_sanctions_import_reads_plain_lists_and_replaces_an_edition(db, tmp_path, capsys):
    first = tmp_path / "list.txt"
    first.write_text(f"{SANCTIONED}\n# comment\n\n0x{'1' * 40}\n{SANCTIONED.lower()}\n")
    call_command("sanctions_import", str(first))
    assert "2 address(es) added, 0 already listed, 0 removed; 1 line(s)" in capsys.readouterr().out
    second = tmp_path / "list2.txt"
    second.write_text(f"0x{'1' * 40}\n0x{'2' * 40}\n")
    call_command("sanctions_import", str(second), "--replace")
    assert "1 address(es) added, 1 already listed, 1 removed" in capsys.readouterr().out
    assert sorted(SanctionedAddress.objects.values_list("address", flat=True)) == [
        "0x" + "1" * 40,
        "0x" + "2" * 40,
    ]
    empty = tmp_path / "empty.txt"
    empty.write_text("no addresses here\n")
    with pytest.raises(CommandError, match="No 0x address"):
        call_command("sanctions_import", str(empty))
    with pytest.raises(CommandError, match="not a readable file"):
        call_command("sanctions_import", str(tmp_path / "missing.txt"))


def test_addresses_are_found_whole_never_cut_out_of_longer_hex():
    found, without = addresses_in([f"{SANCTIONED}ff\n", "0x" + "a" * 40 + ",x\n"])
    assert found == ["0x" + "a" * 40] and without == 1


def _second_sender(shop):
    """Another funded account of the in-process chain, to pay from."""
    other = shop.tester.w3.eth.accounts[2]
    shop.tester.token.functions.mint(other, 10**12).transact({"from": shop.tester.owner})
    return other


def _pay_from(shop, sender, payment, units):
    from web3 import Web3

    to = Web3.to_checksum_address(payment.deposit_address.address)
    shop.tester.token.functions.transfer(to, units).transact({"from": sender, "gas": 100_000})
    shop.watch()
    shop.confirm()


@pytest.mark.django_db
def test_hold_release_and_hold_again_each_recorded_with_its_source_and_the_books_right(shop, alice):
    """A worked example: a 100.00 invoice paid 40 by a listed sender (held), released by an
    admin, then 60 more by a second listed sender (held again, the released 40 with it), and
    the payment's time ends: the invoice fails "compliance" and all 100 goes back."""
    admin = UserFactory(email="ops@operator.example", is_superuser=True, is_staff=True)
    first, second = shop.tester.payer.lower(), _second_sender(shop).lower()
    SanctionedAddress.objects.create(address=first, list_name="OFAC SDN")
    customer = CustomerFactory(merchant=shop.merchant, email="ada@example.org")
    invoice = shop.invoice("100.00", customer=customer, pricing_mode="timer")
    payment = shop.start(invoice)
    merchant, held = merchant_account(shop.merchant), held_account(shop.merchant)

    def books():
        return (account_balance(merchant, "USD"), account_balance(held, "USD"))

    shop.send(payment, 40 * USDC)
    shop.watch()
    shop.confirm()
    payment.refresh_from_db()
    assert payment.is_held and books() == (Decimal(0), Decimal(40))

    payment_release(payment=payment, by=admin)
    payment.refresh_from_db()
    assert not payment.is_held and books() == (Decimal(40), Decimal(0))
    assert payment.status == PaymentStatus.PROCESSING  # 60 still to pay, time not over

    # The second sender is listed only now; its deposit holds the payment again.
    SanctionedAddress.objects.create(address=second, list_name="EU consolidated")
    _pay_from(shop, shop.tester.w3.to_checksum_address(second), payment, 60 * USDC)
    payment.refresh_from_db()
    assert payment.is_held and "EU consolidated" in payment.hold_reason
    assert books() == (Decimal(0), Decimal(100))
    holds = list(
        payment.holds.values_list("number", "source", "detail", "moved", "released_by__email")
    )
    assert holds == [
        (1, "local sanctions list", "on the OFAC SDN list", Decimal(0), admin.email),
        (2, "local sanctions list", "on the EU consolidated list", Decimal(40), None),
    ]
    kinds = list(
        LedgerTransaction.objects.filter(reference=payment.order_number)
        .order_by("pk")
        .values_list("kind", "idempotency_key")
    )
    assert [k for k, _ in kinds] == [
        "deposit",
        "compliance_release",
        "compliance_hold",
        "deposit",
    ]
    assert kinds[1][1] == f"release:{payment.pk}" and kinds[2][1] == f"hold:{payment.pk}:2"
    assert (
        EmailDelivery.objects.filter(invoice=invoice, kind=EmailKind.COMPLIANCE_HOLD).count() == 2
    )
    assert invoice.events.filter(type="payment.compliance_hold").count() == 2

    assert payments_fail_held(now=invoice.expires_at + timedelta(seconds=1)) == 1
    invoice.refresh_from_db()
    assert (invoice.status, invoice.failure_reason) == (
        InvoiceStatus.FAILED,
        FailureReason.COMPLIANCE_HOLD,
    )
    assert refunds_open_automatic() == 1
    refund = RefundRequest.objects.get(invoice=invoice)
    assert (refund.kind, refund.amount) == (RefundKind.COMPLIANCE, 100 * USDC)


@pytest.mark.django_db
def test_released_twice_the_merchant_gets_everything_and_the_invoice_is_paid(shop):
    admin = UserFactory(email="ops@operator.example", is_superuser=True, is_staff=True)
    SanctionedAddress.objects.create(address=shop.tester.payer.lower())
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    merchant, held = merchant_account(shop.merchant), held_account(shop.merchant)
    shop.send(payment, 30 * USDC)
    shop.confirm()
    payment_release(payment=payment, by=admin)
    shop.send(payment, 70 * USDC)  # the same listed sender again: held again
    shop.confirm()
    payment.refresh_from_db()
    assert payment.is_held
    assert (account_balance(merchant, "USD"), account_balance(held, "USD")) == (0, 100)
    payment_release(payment=payment, by=admin)
    with pytest.raises(InvoiceStateError, match="is not held"):
        payment_release(payment=payment, by=admin)  # released once per hold
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (account_balance(merchant, "USD"), account_balance(held, "USD")) == (100, 0)
    assert payment.status == PaymentStatus.PAID and invoice.status == InvoiceStatus.PAID
    assert [h.released_amount for h in payment.holds.all()] == [Decimal(30), Decimal(100)]
