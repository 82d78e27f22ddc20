"""The scanner against a real node: anvil from npm, our demo tokens, real reorgs."""

import threading

import pytest
from django.db import connection
from web3 import Web3

from contracts.deploy import PAYER_KEY, deploy_demo_tokens, load_artifact
from tests.chain import running_anvil
from tests.conftest import require_postgres
from tests.evm import seed_networks
from tests.rpc_proxy import FaultProxy
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import deposit_address_allocate, wallet_set
from wallets.chain import Chain
from wallets.models import Network, Transfer, TransferStatus
from wallets.scanner import cursor_reset, scan_network


class Anvil:
    def __init__(self, rpc_url: str) -> None:
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url))
        self.deployed = deploy_demo_tokens(rpc_url)
        self.payer = self.w3.eth.account.from_key(PAYER_KEY)
        self.usdc = self.w3.eth.contract(address=self.deployed["USDC"], abi=load_artifact()["abi"])

    def pay(self, to: str, amount: int) -> str:
        tx = self.usdc.functions.transfer(Web3.to_checksum_address(to), amount).build_transaction(
            {
                "from": self.payer.address,
                "nonce": self.w3.eth.get_transaction_count(self.payer.address),
            }
        )
        signed = self.payer.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        self.w3.eth.wait_for_transaction_receipt(tx_hash)
        return tx_hash.to_0x_hex()

    def mine(self, blocks: int) -> None:
        self.w3.provider.make_request("anvil_mine", [blocks])

    def reorg(self, depth: int) -> None:
        response = self.w3.provider.make_request("anvil_reorg", [depth, []])
        assert "error" not in response, response


def _register(anvil: Anvil, *, confirmations: int, rpc_url: str | None = None) -> Network:
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.rpc_url = rpc_url or anvil.rpc_url
    network.enabled = True
    network.confirmations = confirmations
    network.save()
    for symbol in ("USDT", "USDC"):
        network.assets.filter(symbol=symbol).update(contract_address=anvil.deployed[symbol].lower())
    cursor_reset(network=network, next_block=0)
    return network


@pytest.fixture
def anvil():
    with running_anvil() as rpc_url:
        yield Anvil(rpc_url)


@pytest.fixture
def deposit(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    return deposit_address_allocate(merchant=acme)


@pytest.mark.django_db
def test_deploy_transfer_scan_confirm(anvil, deposit):
    network = _register(anvil, confirmations=3)
    tx = anvil.pay(deposit.address, 42_500_000)
    report = scan_network(network=network)
    transfer = Transfer.objects.get()
    assert report.new == [transfer.pk]
    assert (transfer.tx_hash, transfer.amount, transfer.status) == (
        tx,
        42_500_000,
        TransferStatus.EXECUTED,
    )
    assert transfer.asset.symbol == "USDC"
    anvil.mine(2)
    report = scan_network(network=network)
    transfer.refresh_from_db()
    assert report.confirmed == [transfer.pk]
    assert (transfer.status, transfer.confirmations) == (TransferStatus.CONFIRMED, 3)


@pytest.mark.django_db
def test_reorg_orphans_the_unconfirmed_transfer_and_spares_the_confirmed_one(anvil, deposit):
    network = _register(anvil, confirmations=5)
    early = anvil.pay(deposit.address, 1_000_000)
    anvil.mine(10)
    late = anvil.pay(deposit.address, 2_000_000)
    scan_network(network=network)
    assert Transfer.objects.get(tx_hash=early).status == TransferStatus.CONFIRMED
    assert Transfer.objects.get(tx_hash=late).status == TransferStatus.EXECUTED

    anvil.reorg(2)  # replaces the two newest blocks; the late transfer's block is one of them
    report = scan_network(network=network)

    late_row = Transfer.objects.get(tx_hash=late)
    early_row = Transfer.objects.get(tx_hash=early)
    assert report.orphaned == [late_row.pk]
    assert late_row.status == TransferStatus.ORPHANED and late_row.orphaned_at is not None
    assert early_row.status == TransferStatus.CONFIRMED
    assert report.confirmed == []


@pytest.mark.django_db
def test_refused_ranges_are_split_until_the_node_answers(anvil, deposit):
    proxy = FaultProxy(anvil.rpc_url, max_log_range=4)
    try:
        network = _register(anvil, confirmations=1, rpc_url=proxy.url)
        paid = [anvil.pay(deposit.address, amount) for amount in (11, 22, 33)]
        anvil.mine(20)
        report = scan_network(network=network)
    finally:
        proxy.close()
    assert report.error == ""
    assert proxy.faults["range_refused"] > 0
    assert sorted(Transfer.objects.values_list("tx_hash", flat=True)) == sorted(paid)
    assert sorted(Transfer.objects.values_list("amount", flat=True)) == [11, 22, 33]


@pytest.mark.django_db(transaction=True)
def test_eight_scanners_over_the_same_range_record_each_transfer_once(anvil):
    require_postgres()
    from tests.factories import MerchantFactory

    merchant = MerchantFactory()
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    addresses = [deposit_address_allocate(merchant=merchant).address for _ in range(5)]
    network = _register(anvil, confirmations=1)
    for index, address in enumerate(addresses):
        anvil.pay(address, 1_000 + index)
    reports = []
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                reports.append(
                    scan_network(
                        network=Network.objects.get(pk=network.pk), chain=Chain(anvil.rpc_url)
                    )
                )
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=scan) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert Transfer.objects.count() == 5
    assert sorted(Transfer.objects.values_list("amount", flat=True)) == [
        1000,
        1001,
        1002,
        1003,
        1004,
    ]
    reported_new = [pk for report in reports for pk in report.new]
    assert sorted(reported_new) == sorted(Transfer.objects.values_list("pk", flat=True))
    assert sum(len(r.confirmed) for r in reports) == 5
