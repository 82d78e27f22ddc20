"""ETH refunds confirmed without a reported hash, on anvil: the watcher finds the transfer to
the refund address (from any address) the way the scanner finds ETH deposits, from full
blocks with successful receipts and, for ETH a contract sends, from the node's traces; a
reorg that takes the transfer away sends the refund back to waiting."""

from decimal import Decimal

import pytest
from web3 import Web3

from checkout.models import RefundKind, RefundRequest, RefundStatus
from checkout.refunds import (
    refund_give_address,
    refund_report_sent,
    refund_request,
    refunds_watch,
)
from checkout.services import payment_start
from checkout.settlement import settle_report
from invoices.models import InvoiceEvent, RefundState
from tests.chain import running_anvil
from tests.checkout.test_refunds import PAYER_WALLET
from tests.factories import make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from tests.wallets.test_scanner_anvil import _register
from tests.wallets.test_scanner_faults import EthAnvil
from wallets.addresses import wallet_set
from wallets.chain import Chain
from wallets.ledger import account_balance, holdings_account, merchant_account
from wallets.models import Asset, LedgerTransaction
from wallets.scanner import scan_network

pytestmark = pytest.mark.django_db
ETH = 10**18
# anvil's fifth default account: neither the payer nor the merchant, "any address".
STRANGER_KEY = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a"


@pytest.fixture
def anvil():
    with running_anvil() as rpc_url:
        yield EthAnvil(rpc_url)


def _round(network):
    report = scan_network(network=network, chain=Chain(network.rpc_url))
    settle_report(report)
    return refunds_watch(network=network, chain=Chain(network.rpc_url))


@pytest.fixture
def eth_refund(anvil, acme):
    """A paid ETH order of 0.5 ETH, confirmed and credited, and a refund of 0.2 ETH whose
    payer gave an address."""
    network = _register(anvil, confirmations=2)
    eth = Asset.objects.get(network=network, symbol="ETH")
    Asset.objects.filter(pk=eth.pk).update(enabled=True)
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    invoice = make_invoice(acme, items=[("Service", "1", "1500.00")], issue=True)
    payment = payment_start(invoice=invoice, asset=eth)
    anvil.send_eth(payment.deposit_address.address, ETH // 2)
    _round(network)
    anvil.mine(2)
    _round(network)
    payment.refresh_from_db()
    assert payment.confirmed == ETH // 2
    refund = refund_request(
        payment=payment, kind=RefundKind.MANUAL, reason="Half a box", amount=ETH // 5
    )
    refund_give_address(
        refund=refund, address=PAYER_WALLET, again=PAYER_WALLET, no_memo_needed=True
    )
    return network, RefundRequest.objects.get(pk=refund.pk)


def _send_from_stranger(anvil, to: str, wei: int) -> str:
    account = anvil.w3.eth.account.from_key(STRANGER_KEY)
    tx = {
        "from": account.address,
        "to": Web3.to_checksum_address(to),
        "value": wei,
        "gas": 21_000,
        "gasPrice": anvil.w3.eth.gas_price,
        "nonce": anvil.w3.eth.get_transaction_count(account.address),
        "chainId": 31337,
    }
    signed = account.sign_transaction(tx)
    tx_hash = anvil.w3.eth.send_raw_transaction(signed.raw_transaction)
    anvil.w3.eth.wait_for_transaction_receipt(tx_hash)
    return tx_hash.to_0x_hex()


def test_unreported_eth_refund_from_any_address_is_found_and_confirmed(anvil, eth_refund, acme):
    network, refund = eth_refund
    merchant = merchant_account(acme)
    assert account_balance(merchant, "USD") == Decimal("1500.00")  # 0.5 ETH at 3000
    # Another amount to the same address, and the right amount elsewhere, pay nothing.
    _send_from_stranger(anvil, PAYER_WALLET, ETH // 5 + 1)
    _send_from_stranger(anvil, "0x" + "5" * 40, ETH // 5)
    _round(network)
    refund.refresh_from_db()
    assert refund.status == RefundStatus.ADDRESS_GIVEN and refund.tx_hash == ""

    tx_hash = _send_from_stranger(anvil, PAYER_WALLET, ETH // 5)
    _round(network)
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash, refund.log_index) == (RefundStatus.SENT, tx_hash, -1)
    assert refund.from_address != ""
    assert not LedgerTransaction.objects.filter(kind="refund").exists()  # not confirmed yet

    anvil.mine(2)
    assert _round(network) == 1
    refund.refresh_from_db()
    assert refund.status == RefundStatus.CONFIRMED
    # Worked example: 0.2 of 0.5 ETH back, 2/5 of the 1500.00 credited.
    assert account_balance(merchant, "USD") == Decimal("900.00")
    assert -account_balance(holdings_account("anvil"), "ETH") == Decimal("0.3")
    refund.invoice.refresh_from_db()
    assert refund.invoice.refund_state == RefundState.PARTIAL
    assert _round(network) == 0  # confirmed once, booked once
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1


def test_a_reverted_eth_transfer_pays_nothing(anvil, eth_refund):
    network, refund = eth_refund
    # The forwarder sends, then reverts: the value never arrives.
    _hash, status = anvil.forward(PAYER_WALLET, ETH // 5, fail=True)
    assert status == 0
    anvil.mine(1)
    _round(network)
    refund.refresh_from_db()
    assert refund.status == RefundStatus.ADDRESS_GIVEN


def test_eth_a_contract_sends_to_the_refund_address_is_found_by_tracing(anvil, eth_refund):
    network, refund = eth_refund
    tx_hash, status = anvil.forward(PAYER_WALLET, ETH // 5)
    assert status == 1
    _round(network)
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash, refund.log_index) == (RefundStatus.SENT, tx_hash, -3)
    anvil.mine(2)
    assert _round(network) == 1
    refund.refresh_from_db()
    assert refund.status == RefundStatus.CONFIRMED
    assert refund.from_address == anvil.forwarder.address.lower()


def test_a_reorg_that_drops_the_found_eth_transfer_sends_the_refund_back_to_waiting(
    anvil, eth_refund
):
    network, refund = eth_refund
    _send_from_stranger(anvil, PAYER_WALLET, ETH // 5)
    _round(network)
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SENT
    block = refund.block_number
    anvil.reorg(1)  # the block with the transfer is replaced by an empty one
    _round(network)
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash) == (RefundStatus.ADDRESS_GIVEN, "")
    assert refund.watch_from_block == block
    assert InvoiceEvent.objects.filter(invoice=refund.invoice, type="refund.not_paid").exists()
    assert not LedgerTransaction.objects.filter(kind="refund").exists()

    # Sent again: found again and confirmed on the canonical chain.
    tx_hash = _send_from_stranger(anvil, PAYER_WALLET, ETH // 5)
    _round(network)
    anvil.mine(2)
    assert _round(network) == 1
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash) == (RefundStatus.CONFIRMED, tx_hash)


def test_a_reported_hash_of_eth_a_contract_sent_is_confirmed_from_the_trace(anvil, eth_refund):
    network, refund = eth_refund
    tx_hash, _status = anvil.forward(PAYER_WALLET, ETH // 5)
    refund_report_sent(refund=refund, tx_hash=tx_hash, actor="api")
    anvil.mine(2)
    assert _round(network) == 1
    refund.refresh_from_db()
    assert (refund.status, refund.tx_hash, refund.log_index) == (
        RefundStatus.CONFIRMED,
        tx_hash,
        -3,
    )
    assert LedgerTransaction.objects.filter(kind="refund").count() == 1
