"""The scanner against web3's in-process chain (eth-tester): fast, no node needed."""

import logging

import pytest

from tests.evm import seed_networks
from wallets.chain import Chain, ChainUnavailable, _parse_transfer_log
from wallets.models import ChainCursor, Network, Transfer, TransferStatus
from wallets.scanner import cursor_reset, scan_network

pytestmark = pytest.mark.django_db


def test_a_token_deposit_is_found_counted_and_confirmed(tester, dev_network, deposit):
    tx = tester.pay(deposit.address, 25_000_000)
    tester.pay("0x000000000000000000000000000000000000dEaD", 1)  # someone else's transfer

    report = scan_network(network=dev_network, chain=tester.chain())
    transfer = Transfer.objects.get()
    assert report.new == [transfer.pk]
    assert (transfer.tx_hash, transfer.amount, transfer.status) == (
        tx,
        25_000_000,
        TransferStatus.EXECUTED,
    )
    assert transfer.asset.symbol == "USDC"
    assert transfer.deposit_address == deposit
    assert transfer.amount_major == pytest.approx(25) and str(transfer.amount_major) == "25.000000"
    assert transfer.confirmations == 2  # its block and the one after it (the stranger's)

    tester.mine(1)
    report = scan_network(network=dev_network, chain=tester.chain())
    transfer.refresh_from_db()
    assert report.confirmed == [transfer.pk]
    assert (transfer.status, transfer.confirmations) == (TransferStatus.CONFIRMED, 3)
    assert transfer.confirmed_at is not None


def test_native_eth_deposit_is_found(tester, dev_network, deposit):
    tx = tester.send_eth(deposit.address, 10**17)
    scan_network(network=dev_network, chain=tester.chain())
    transfer = Transfer.objects.get()
    assert (transfer.tx_hash, transfer.log_index, transfer.amount) == (tx, -1, 10**17)
    assert transfer.asset.symbol == "ETH"


def test_rescanning_the_same_blocks_doubles_nothing(tester, dev_network, deposit):
    tester.pay(deposit.address, 5)
    tester.pay(deposit.address, 7)
    scan_network(network=dev_network, chain=tester.chain())
    cursor_reset(network=dev_network, next_block=0)
    report = scan_network(network=dev_network, chain=tester.chain())
    assert report.new == []
    assert sorted(Transfer.objects.values_list("amount", flat=True)) == [5, 7]


def test_cursor_advances_to_the_head_in_chunks(tester, dev_network, deposit):
    Network.objects.filter(pk=dev_network.pk).update(max_block_range=2)
    dev_network.refresh_from_db()
    for amount in (1, 2, 3, 4):
        tester.pay(deposit.address, amount)
    chain = tester.chain()
    head = chain.head()
    report = scan_network(network=dev_network, chain=chain)
    assert ChainCursor.objects.get(network=dev_network).next_block == head + 1
    assert sorted(Transfer.objects.values_list("amount", flat=True)) == [1, 2, 3, 4]
    assert report.to_block == head


def test_cost_does_not_depend_on_how_many_addresses_are_open(tester, dev_network, acme, deposit):
    from wallets.addresses import deposit_address_allocate

    tester.pay(deposit.address, 1)
    calls_few = scan_network(network=dev_network, chain=tester.chain()).rpc_calls
    for _ in range(200):
        deposit_address_allocate(merchant=acme)
    cursor_reset(network=dev_network, next_block=0)
    calls_many = scan_network(network=dev_network, chain=tester.chain()).rpc_calls
    assert calls_many == calls_few


def test_unreachable_node_is_recorded_and_nothing_moves(dev_network, deposit):
    before = ChainCursor.objects.get(network=dev_network).next_block
    chain = Chain("http://127.0.0.1:9", attempts=2, backoff=0.01, timeout=0.5)
    report = scan_network(network=dev_network, chain=chain)
    assert "failed after 2 attempts" in report.error
    assert report.rpc_calls == 2
    dev_network.refresh_from_db()
    assert dev_network.rpc_ok is False and "eth_chainId" in dev_network.rpc_error
    assert ChainCursor.objects.get(network=dev_network).next_block == before


def test_network_without_rpc_url_reports_instead_of_crashing(db):
    seed_networks()
    network = Network.objects.get(slug="ethereum")
    report = scan_network(network=network)
    assert "No RPC URL" in report.error
    with pytest.raises(ChainUnavailable):
        Chain("")


def test_non_standard_transfer_logs_are_skipped_and_logged(caplog):
    erc721 = {
        "topics": ["0x" + "dd" * 32, "0x" + "00" * 32, "0x" + "00" * 32, "0x" + "00" * 31 + "07"],
        "data": "0x",
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": 3,
        "blockNumber": 9,
        "blockHash": "0x" + "cd" * 32,
        "address": "0x" + "11" * 20,
    }
    with caplog.at_level(logging.WARNING, logger="wallets.chain"):
        assert _parse_transfer_log(erc721) is None
    assert "4 topics" in caplog.text
    short = dict(erc721, topics=erc721["topics"][:3], data="0x1234")
    assert _parse_transfer_log(short) is None


def test_multicall_balance_calls_are_encoded_as_the_abi_says():
    from eth_abi import decode, encode
    from web3 import Web3

    from wallets.chain import (
        AGGREGATE3,
        GET_ETH_BALANCE,
        decode_balance_results,
        encode_balance_calls,
    )

    multicall = "0xca11bde05977b3631167028862be2a173976ca11"
    owners = ["0x" + f"{i:040x}" for i in (1, 2**150, 2**159 + 7)]
    inner = [GET_ETH_BALANCE + encode(["address"], [owner]) for owner in owners]
    expected = AGGREGATE3 + encode(
        ["(address,bool,bytes)[]"], [[(multicall, False, data) for data in inner]]
    )
    assert encode_balance_calls(multicall, owners) == expected
    assert Web3.keccak(text="aggregate3((address,bool,bytes)[])")[:4] == AGGREGATE3
    answer = encode(
        ["(bool,bytes)[]"], [[(True, encode(["uint256"], [v])) for v in (0, 5, 2**200)]]
    )
    assert decode_balance_results(answer) == [0, 5, 2**200]
    assert decode(["(bool,bytes)[]"], answer)[0][2][1] == encode(["uint256"], [2**200])
