"""Refunds racing for the same money, on PostgreSQL: one wins, the others are told why."""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from checkout.models import RefundKind, RefundRequest, RefundStatus
from checkout.refunds import (
    RefundError,
    refund_give_address,
    refund_report_sent,
    refund_request,
    refunds_watch,
)
from checkout.services import payment_start
from checkout.tasks import watch_network
from contracts.deploy import DEPLOYER_KEY, load_artifact
from tests.chain import running_anvil
from tests.checkout.test_refunds import USDC, paid
from tests.conftest import require_postgres
from tests.factories import make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from tests.wallets.test_scanner_anvil import Anvil, _register
from wallets.addresses import wallet_set
from wallets.chain import Chain, Signer
from wallets.ledger import account_balance, merchant_account
from wallets.models import Asset, LedgerTransaction

RACERS = 6


def race(work) -> tuple[list[object], list[BaseException]]:
    barrier = threading.Barrier(RACERS)
    results: list[object] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            results.append(work(n))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_racing_refunds_of_the_same_money_one_wins_the_others_are_told_what_is_left(shop):
    require_postgres()
    _invoice, payment = paid(shop, 100 * USDC)

    results, errors = race(
        lambda n: refund_request(
            payment=payment, kind=RefundKind.MANUAL, reason=f"Racer {n}", amount=60 * USDC
        )
    )

    assert len(results) == 1
    assert len(errors) == RACERS - 1
    assert all(isinstance(e, RefundError) for e in errors), errors
    assert {str(e) for e in errors} == {
        f"Only 40 USDC is left to refund on order {payment.order_number}."
    }
    assert RefundRequest.objects.filter(payment=payment).count() == 1
    assert payment.invoice.events.filter(type="refund.requested").count() == 1


@pytest.mark.django_db(transaction=True)
def test_racing_automatic_and_manual_full_refunds_open_exactly_one(shop):
    require_postgres()
    _invoice, payment = paid(shop, 100 * USDC)
    kinds = [RefundKind.CANCELLED, RefundKind.MANUAL] * (RACERS // 2)

    results, errors = race(
        lambda n: refund_request(payment=payment, kind=kinds[n], reason="All of it")
    )

    assert len(results) == 1 and len(errors) == RACERS - 1
    assert all(isinstance(e, RefundError) for e in errors), errors
    [refund] = RefundRequest.objects.filter(payment=payment)
    assert refund.amount == 100 * USDC


@pytest.mark.django_db(transaction=True)
def test_two_addresses_given_at_once_one_is_kept(shop):
    require_postgres()
    _invoice, payment = paid(shop, 10 * USDC, total="10.00")
    refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned")
    addresses = [f"0x{n + 1:040x}" for n in range(RACERS)]

    results, errors = race(
        lambda n: refund_give_address(
            refund=refund, address=addresses[n], again=addresses[n], no_memo_needed=True
        )
    )

    assert len(results) == 1 and len(errors) == RACERS - 1
    assert {str(e) for e in errors} == {"A refund address was given already; it cannot change."}
    refund.refresh_from_db()
    assert refund.status == RefundStatus.ADDRESS_GIVEN and refund.address in addresses
    assert refund.invoice.events.filter(type="refund.address_given").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_watch_rounds_confirming_the_same_refund_post_it_once(acme):
    """Two workers' rounds over one confirmed refund transfer, on anvil: one posting, one
    confirmation event, the merchant balance taken down once."""
    require_postgres()
    with running_anvil() as rpc_url:
        anvil = Anvil(rpc_url)
        network = _register(anvil, confirmations=2)
        wallet_set(merchant=acme, xpub=ABANDON_XPUB)
        invoice = make_invoice(acme, items=[("Lamp", "1", "20.00")], issue=True)
        payment = payment_start(
            invoice=invoice, asset=Asset.objects.get(network=network, symbol="USDC")
        )
        anvil.pay(payment.deposit_address.address, 20 * USDC)
        anvil.mine(2)
        watch_network(network.pk)
        payment.refresh_from_db()
        assert payment.confirmed == 20 * USDC
        refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned")
        address = "0x" + "5" * 40
        refund_give_address(refund=refund, address=address, again=address, no_memo_needed=True)
        merchant = Signer(Chain(rpc_url), DEPLOYER_KEY)
        abi = load_artifact()["abi"]
        nonce = merchant.next_nonce()
        merchant.wait(
            merchant.call(
                anvil.deployed["USDC"], abi, "mint", [merchant.address, 20 * USDC], nonce=nonce
            )
        )
        tx = merchant.call(
            anvil.deployed["USDC"], abi, "transfer", [address, 20 * USDC], nonce=nonce + 1
        )
        merchant.wait(tx)
        refund_report_sent(refund=refund, tx_hash=tx)
        anvil.mine(2)

        results, errors = race(lambda n: refunds_watch(network=network))

    assert errors == []
    assert sorted(results) == [0] * (RACERS - 1) + [1]
    refund.refresh_from_db()
    assert refund.status == RefundStatus.CONFIRMED
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1
    assert invoice.events.filter(type="refund.confirmed").count() == 1
    assert account_balance(merchant_account(acme), "USD") == Decimal(0)
