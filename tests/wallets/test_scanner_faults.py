"""The watcher against anvil behind a misbehaving proxy: lagging heads, missing blocks,
overlapping rounds, the wrong chain, reverted and contract-sent ETH."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.utils import timezone
from web3 import Web3

from contracts.deploy import ARTIFACT_PATH, deploy_multicall3
from tests.chain import running_anvil
from tests.evm import seed_networks
from tests.rpc_proxy import FaultProxy
from tests.wallets.test_addresses import ABANDON_XPUB
from tests.wallets.test_scanner_anvil import Anvil, _register
from wallets.addresses import deposit_address_allocate, wallet_set
from wallets.admin import NetworkAdmin
from wallets.chain import Chain
from wallets.models import ChainCursor, NativeBalance, Network, Transfer, TransferStatus
from wallets.scanner import (
    LeaseLost,
    lease_kept,
    round_lease_acquire,
    round_queue,
    scan_network,
)

FORWARDER = json.loads(ARTIFACT_PATH.with_name("TestForwarder.json").read_text())
ETH = 10**18


class EthAnvil(Anvil):
    def __init__(self, rpc_url: str) -> None:
        super().__init__(rpc_url)
        deploy_multicall3(rpc_url)
        factory = self.w3.eth.contract(abi=FORWARDER["abi"], bytecode=FORWARDER["bytecode"])
        receipt = self._send(factory.constructor().build_transaction(self._params()))
        self.forwarder = self.w3.eth.contract(
            address=receipt["contractAddress"], abi=FORWARDER["abi"]
        )

    def _params(self, **extra) -> dict:
        return {
            "from": self.payer.address,
            "nonce": self.w3.eth.get_transaction_count(self.payer.address),
            **extra,
        }

    def _send(self, tx: dict):
        signed = self.payer.sign_transaction(tx)
        return self.w3.eth.wait_for_transaction_receipt(
            self.w3.eth.send_raw_transaction(signed.raw_transaction)
        )

    def send_eth(self, to: str, wei: int, *, gas: int | None = None) -> tuple[str, int]:
        tx = self._params(to=Web3.to_checksum_address(to), value=wei, chainId=31337)
        tx.update(gas=gas or 21_000, gasPrice=self.w3.eth.gas_price)
        receipt = self._send(tx)
        return receipt["transactionHash"].to_0x_hex(), receipt["status"]

    def forward(self, to: str, wei: int, *, split: int | None = None, fail: bool = False):
        target = Web3.to_checksum_address(to)
        if fail:
            call = self.forwarder.functions.forwardThenFail(target)
        elif split is not None:
            call = self.forwarder.functions.forwardSplit(target, split)
        else:
            call = self.forwarder.functions.forward(target)
        params = self._params(value=wei, gas=200_000)
        receipt = self._send(call.build_transaction(params))
        return receipt["transactionHash"].to_0x_hex(), receipt["status"]


@pytest.fixture
def anvil():
    with running_anvil() as rpc_url:
        yield EthAnvil(rpc_url)


@pytest.fixture
def deposit(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    return deposit_address_allocate(merchant=acme)


def _scan(network: Network):
    network = Network.objects.get(pk=network.pk)
    return scan_network(network=network, chain=Chain(network.rpc_url))


pytestmark = pytest.mark.django_db


def test_a_block_above_a_lagging_head_is_not_seen_yet_never_gone(anvil, deposit):
    network = _register(anvil, confirmations=3)
    anvil.pay(deposit.address, 7_000_000)
    assert _scan(network).new
    transfer = Transfer.objects.get()
    with FaultProxy(anvil.rpc_url, lag=1.0) as lagging:
        # Every answer comes from a backend 1-2 blocks behind: the transfer's block is above
        # the head it reports, and the block itself answers null.
        report = scan_network(network=network, chain=Chain(lagging.url))
    transfer.refresh_from_db()
    assert report.error == "" and report.orphaned == []
    assert transfer.status == TransferStatus.EXECUTED
    anvil.mine(2)
    report = _scan(network)
    transfer.refresh_from_db()
    assert report.confirmed == [transfer.pk]
    assert transfer.status == TransferStatus.CONFIRMED


def test_an_orphaned_transfer_seen_again_in_a_canonical_block_is_revived(anvil, deposit):
    network = _register(anvil, confirmations=2)
    anvil.pay(deposit.address, 5_000_000)
    _scan(network)
    transfer = Transfer.objects.get()
    # Orphaned earlier (an old overlapping round, a wrong answer): same block, same hash.
    Transfer.objects.filter(pk=transfer.pk).update(
        status=TransferStatus.ORPHANED, orphaned_at=timezone.now()
    )
    anvil.mine(1)
    report = _scan(network)
    transfer.refresh_from_db()
    assert report.revived == [transfer.pk]
    assert report.confirmed == [transfer.pk]
    assert (transfer.status, transfer.orphaned_at) == (TransferStatus.CONFIRMED, None)


def test_a_reorged_deposit_mined_again_is_revived_in_its_new_block(anvil, deposit):
    network = _register(anvil, confirmations=5)
    tx = anvil.pay(deposit.address, 3_000_000)
    _scan(network)
    old = Transfer.objects.get()
    raw = anvil.w3.eth.get_raw_transaction(tx).to_0x_hex()
    # Its block is replaced; the same signed transaction lands in the new block.
    assert "error" not in anvil.w3.provider.make_request("anvil_reorg", [1, [[raw, 0]]])
    new_hash = anvil.w3.eth.get_transaction_receipt(tx)["blockHash"].to_0x_hex()
    assert new_hash != old.block_hash
    anvil.mine(4)
    report = _scan(network)
    transfer = Transfer.objects.get()
    assert report.error == "" and report.orphaned == []
    assert (transfer.pk, transfer.block_hash) == (old.pk, new_hash)
    assert transfer.status == TransferStatus.CONFIRMED


def test_one_round_per_network_at_a_time_and_a_dead_workers_lease_expires(anvil, deposit):
    network = _register(anvil, confirmations=1)
    anvil.pay(deposit.address, 1_000_000)
    held = round_lease_acquire(network=network)
    assert held
    report = _scan(network)
    assert report.skipped and Transfer.objects.count() == 0
    assert round_queue(network=network) is False  # a running round: nothing more is queued
    # The worker holding it was killed: once the lease runs out, the next round goes ahead.
    Network.objects.filter(pk=network.pk).update(
        round_lease_until=timezone.now() - timedelta(seconds=1)
    )
    report = _scan(network)
    assert not report.skipped and len(report.new) == 1
    assert Network.objects.get(pk=network.pk).round_token == ""


def test_a_node_on_another_chain_stops_the_network_and_credits_nothing(anvil, deposit):
    network = _register(anvil, confirmations=1)
    Network.objects.filter(pk=network.pk).update(chain_id=8453_000)
    anvil.pay(deposit.address, 1_000_000)
    report = _scan(network)
    network.refresh_from_db()
    assert report.halted.startswith("wrong chain: the node reports chain id 31337")
    assert Transfer.objects.count() == 0
    assert NetworkAdmin.rpc_status(None, network) == (  # type: ignore[arg-type]
        "stopped: wrong chain: the node reports chain id 31337, expected 8453000"
    )
    Network.objects.filter(pk=network.pk).update(chain_id=31337)
    report = _scan(network)
    network.refresh_from_db()
    assert len(report.new) == 1 and network.watch_halted == ""


def test_dev_networks_are_refused_outside_debug(anvil, deposit, settings):
    network = _register(anvil, confirmations=1)
    anvil.pay(deposit.address, 1_000_000)
    settings.CHAIN_DEV_NETWORKS_ALLOWED = False
    report = _scan(network)
    assert report.halted == "dev chain: refused outside DEBUG"
    assert Transfer.objects.count() == 0
    assert not Network.objects.active().filter(pk=network.pk).exists()


def test_confirmations_are_never_below_one_outside_dev_networks(settings):
    network = Network(slug="x", name="X", chain_id=77, confirmations=0, is_dev=False)
    with pytest.raises(ValidationError):
        network.clean()
    assert network.effective_confirmations == 1
    settings.CHAIN_OVERRIDES = {"x": {"confirmations": 0}}
    assert network.effective_confirmations == 1


def test_a_reverted_eth_transaction_is_not_counted(anvil, deposit):
    network = _register(anvil, confirmations=1)
    # Code at the deposit address that always reverts: the value goes nowhere.
    anvil.w3.provider.make_request("anvil_setCode", [deposit.address, "0x60006000fd"])
    _tx, status = anvil.send_eth(deposit.address, ETH, gas=60_000)
    assert status == 0
    report = _scan(network)
    assert report.new == [] and Transfer.objects.count() == 0


def test_a_plain_eth_payment_over_ten_eth_is_counted_to_the_wei(anvil, deposit):
    network = _register(anvil, confirmations=1)
    amount = 12 * ETH + 345_678_901_234_567_891
    tx, status = anvil.send_eth(deposit.address, amount)
    report = scan_network(
        network=network, chain=Chain(anvil.rpc_url), native_watch=[deposit.address]
    )
    transfer = Transfer.objects.get()
    assert status == 1 and report.new == [transfer.pk]
    assert (transfer.tx_hash, transfer.log_index, int(transfer.amount)) == (tx, -1, amount)
    # The balance check at the confirmed block finds nothing more.
    assert NativeBalance.objects.get().balance == amount


def test_eth_sent_by_a_contract_is_found_by_tracing(anvil, deposit):
    network = _register(anvil, confirmations=2)
    one, _ = anvil.forward(deposit.address, 3 * ETH)
    split, _ = anvil.forward(deposit.address, ETH, split=ETH // 4)
    _failed, status = anvil.forward(deposit.address, 5 * ETH, fail=True)
    assert status == 0
    anvil.mine(1)
    report = scan_network(
        network=network, chain=Chain(anvil.rpc_url), native_watch=[deposit.address]
    )
    rows = sorted(
        Transfer.objects.values_list("tx_hash", "log_index", "amount", "status"),
        key=lambda r: (r[0] != one, r[1]),
    )
    assert [(h, i, int(a), s) for h, i, a, s in rows] == [
        (one, -3, 3 * ETH, TransferStatus.CONFIRMED),
        (split, -4, ETH - ETH // 4, TransferStatus.CONFIRMED),
        (split, -3, ETH // 4, TransferStatus.CONFIRMED),
    ]
    assert sorted(report.new) == sorted(Transfer.objects.values_list("pk", flat=True))
    assert all(t.has_tx_hash for t in Transfer.objects.all())
    # The next round reconciles from the new baseline: nothing twice.
    anvil.mine(1)
    again = scan_network(
        network=network, chain=Chain(anvil.rpc_url), native_watch=[deposit.address]
    )
    assert again.new == [] and Transfer.objects.count() == 3


def test_eth_sent_by_a_contract_on_a_node_without_tracing_is_recorded_without_a_hash(
    anvil, deposit
):
    network = _register(anvil, confirmations=1)
    anvil.send_eth(deposit.address, ETH)
    anvil.forward(deposit.address, 2 * ETH)
    head = anvil.w3.eth.block_number
    with FaultProxy(anvil.rpc_url, refuse_methods=frozenset({"debug_traceBlockByNumber"})) as p:
        scan_network(network=network, chain=Chain(p.url), native_watch=[deposit.address])
    synthetic = Transfer.objects.get(log_index=-2)
    assert synthetic.tx_hash == f"balance:{head}:{deposit.address}"
    assert int(synthetic.amount) == 2 * ETH
    assert synthetic.status == TransferStatus.CONFIRMED
    assert (synthetic.has_tx_hash, synthetic.explorer_url) == (False, "")
    assert int(Transfer.objects.get(log_index=-1).amount) == ETH


def test_confirmation_headers_come_in_batches(anvil, acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    addresses = [deposit_address_allocate(merchant=acme).address for _ in range(30)]
    network = _register(anvil, confirmations=50)
    for address in addresses:
        anvil.pay(address, 1_000)  # a block each
    with FaultProxy(anvil.rpc_url) as proxy:
        first = scan_network(network=network, chain=Chain(proxy.url))
        assert len(first.new) == 30
        before = proxy.requests["eth_getBlockByNumber"], proxy.posts
        anvil.mine(1)
        scan_network(network=network, chain=Chain(proxy.url))
        headers = proxy.requests["eth_getBlockByNumber"] - before[0]
        posts = proxy.posts - before[1]
    # 30 pending transfers in 30 blocks: their headers in one batch, not 30 requests.
    assert headers >= 30
    assert posts <= 6


def test_eth_reconciliation_needs_one_call_per_500_addresses(anvil, acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    addresses = [deposit_address_allocate(merchant=acme).address for _ in range(501)]
    network = _register(anvil, confirmations=1)
    with FaultProxy(anvil.rpc_url) as proxy:
        scan_network(network=network, chain=Chain(proxy.url), native_watch=addresses)
        calls = proxy.requests["eth_call"]
    assert calls == 2
    assert NativeBalance.objects.count() == 501


def test_a_faulty_node_loses_and_doubles_nothing(anvil, acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    addresses = [deposit_address_allocate(merchant=acme).address for _ in range(4)]
    network = _register(anvil, confirmations=2)
    sent = []
    for index, address in enumerate(addresses):
        anvil.pay(address, 1_000 + index)
        sent.append(1_000 + index)
    anvil.forward(addresses[0], ETH)
    with FaultProxy(
        anvil.rpc_url,
        lag=0.3,
        drop=0.1,
        delay=0.05,
        bad_gateway=0.1,
        delay_seconds=1.5,
        max_log_range=3,
        seed=7,
    ) as proxy:
        for _round in range(12):
            scan_network(
                network=Network.objects.get(pk=network.pk),
                chain=Chain(proxy.url, timeout=1, backoff=0.01, attempts=3),
                native_watch=addresses,
            )
            anvil.mine(1)
        faults = dict(proxy.faults)
    for fault in ("lag", "drop", "bad_gateway", "range_refused"):
        assert faults.get(fault, 0) > 0, faults
    scan_network(
        network=Network.objects.get(pk=network.pk),
        chain=Chain(anvil.rpc_url),
        native_watch=addresses,
    )
    tokens = sorted(
        int(a)
        for a in Transfer.objects.filter(asset__symbol="USDC").values_list("amount", flat=True)
    )
    assert tokens == sent
    assert [
        int(a)
        for a in Transfer.objects.filter(asset__symbol="ETH").values_list("amount", flat=True)
    ] == [ETH]
    assert not Transfer.objects.exclude(status=TransferStatus.CONFIRMED).exists()


def test_ledger_check_compares_confirmed_transfers_with_the_chain(anvil, deposit, capsys):
    network = _register(anvil, confirmations=1)
    anvil.pay(deposit.address, 2_500_000)
    anvil.send_eth(deposit.address, ETH // 2)
    anvil.forward(deposit.address, ETH // 3)
    scan_network(network=network, chain=Chain(anvil.rpc_url), native_watch=[deposit.address])
    assert Transfer.objects.filter(status=TransferStatus.CONFIRMED).count() == 3
    call_command("ledger_check")
    assert "anvil: 3 transfer(s) match the chain." in capsys.readouterr().out

    token = Transfer.objects.get(log_index__gte=0)
    Transfer.objects.filter(pk=token.pk).update(amount=2_500_001)
    with pytest.raises(CommandError, match="1 transfer"):
        call_command("ledger_check")
    assert f"({token.tx_hash}:{token.log_index}): recorded 2500001, chain says 2500000" in (
        capsys.readouterr().out
    )


def test_beat_never_queues_a_round_behind_a_running_or_queued_one(anvil, deposit):
    from checkout.tasks import watch_networks

    network = _register(anvil, confirmations=1)
    anvil.pay(deposit.address, 1_000_000)
    # Its poll interval has passed.
    ChainCursor.objects.update(updated_at=timezone.now() - timedelta(minutes=5))
    held = round_lease_acquire(network=network)
    watch_networks()  # a round is running: nothing is queued (tasks run inline in tests)
    assert Transfer.objects.count() == 0
    assert Network.objects.get(pk=network.pk).round_queued_until is None
    Network.objects.filter(pk=network.pk, round_token=held).update(
        round_token="", round_lease_until=None, round_queued_until=timezone.now() + timedelta(60)
    )
    watch_networks()  # one is waiting in the broker already
    assert Transfer.objects.count() == 0
    Network.objects.filter(pk=network.pk).update(round_queued_until=None)
    watch_networks()
    assert Transfer.objects.count() == 1


def test_chain_watching_callbacks_and_emails_travel_on_their_own_queues():
    from config.celery import app

    def queue(task: str) -> str:
        return app.amqp.router.route({}, task)["queue"].name

    assert queue("checkout.tasks.watch_network") == "chain"
    assert queue("checkout.tasks.watch_networks") == "chain"
    assert queue("invoices.tasks.callback_deliver") == "callbacks"
    assert queue("invoices.tasks.callbacks_sweep") == "callbacks"
    assert queue("invoices.tasks.email_send") == "email"
    assert queue("merchants.tasks.send_invitation") == "email"
    assert queue("checkout.tasks.end_payments") == "celery"
    assert {q.name for q in app.conf.task_queues} == {"celery", "chain", "callbacks", "email"}


def test_a_round_on_a_node_slower_than_its_lease_keeps_the_lease_and_credits(
    anvil, deposit, settings
):
    """Every answer takes 0.8 s and the lease is 3 s: the round's fetches outlast the lease
    before its first write. It renews the lease from inside its node calls, so it is never
    taken over and thrown away (before, each retry lost its lease the same way: for ever)."""
    settings.CHAIN_ROUND_LEASE_SECONDS = 3
    network = _register(anvil, confirmations=1)
    anvil.pay(deposit.address, 2_000_000)
    anvil.mine(1)
    with FaultProxy(anvil.rpc_url, delay=1.0, delay_seconds=0.8) as slow:
        report = scan_network(network=network, chain=Chain(slow.url, timeout=5))
    assert report.rpc_calls * 0.8 > settings.CHAIN_ROUND_LEASE_SECONDS
    assert not report.skipped and report.error == ""
    assert report.new == report.confirmed == [Transfer.objects.get().pk]
    assert Network.objects.get(pk=network.pk).round_token == ""


def test_the_lease_is_renewed_before_node_calls_and_a_taken_over_round_calls_no_more(settings):
    settings.CHAIN_ROUND_LEASE_SECONDS = 2
    seed_networks()
    network = Network.objects.get(slug="anvil")
    chain = Chain.in_process()
    token = round_lease_acquire(network=network)
    with lease_kept(chain, network, token):
        # A round that ran long: its lease ran out, and no other worker took it.
        Network.objects.filter(pk=network.pk).update(round_lease_until=timezone.now())
        time.sleep(0.6)  # more than a quarter lease since the last renewal
        chain.head()
        until = Network.objects.get(pk=network.pk).round_lease_until
        assert until > timezone.now() + timedelta(seconds=1)
        assert round_lease_acquire(network=network) is None  # the round is alive: not free
        # Now the lease runs out and another worker takes the round over.
        Network.objects.filter(pk=network.pk).update(round_lease_until=timezone.now())
        assert round_lease_acquire(network=network)
        time.sleep(0.6)
        calls = chain.calls
        with pytest.raises(LeaseLost):
            chain.head()
        assert chain.calls == calls  # the stale round asked its node nothing more
    assert chain.before_call is None


def test_a_lease_shorter_than_two_timeouts_is_refused_at_start():
    env = {
        **os.environ,
        "DEBUG": "1",
        "CHAIN_RPC_TIMEOUT_SECONDS": "10",
        "CHAIN_ROUND_LEASE_SECONDS": "20",
    }
    done = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode != 0
    assert "CHAIN_ROUND_LEASE_SECONDS must be longer than 2 x CHAIN_RPC_TIMEOUT_SECONDS" in (
        done.stderr
    )
