"""What watching the chain costs, and what the ledger can take.

1. The scanner over the same 1,000+ blocks holding 2,000 Transfer logs on anvil, with 10, 1,000
   and 100,000 open deposit addresses: RPC calls and seconds per 1,000 blocks. The goal is a
   ratio near 1 between the largest and the smallest case.
2. The naive alternative, asking every open address's token balance each tick, at 10,000
   open addresses: RPC calls per tick, and seconds per tick extrapolated from a measured sample.
3. Ledger postings per second on PostgreSQL, 8 concurrent writers against 1 writer.
4. Native ETH reconciliation (Multicall3 balances at a confirmed block) at 10, 1,000 and
   10,000 watched ETH deposit addresses: RPC calls and seconds per round, and the ratio of
   the largest to the smallest case (calls grow with addresses/500).

Run with `make bench` (with DATABASE_URL for part 3). Figures are printed, never asserted.
"""

import secrets
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from web3 import Web3

from contracts.deploy import PAYER_KEY, deploy_demo_tokens, deploy_multicall3, load_artifact
from tests.chain import running_anvil
from tests.evm import seed_networks
from tests.factories import MerchantFactory
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import wallet_set
from wallets.chain import Chain, Signer
from wallets.ledger import (
    Leg,
    fees_account,
    fx_account,
    holdings_account,
    ledger_post,
    merchant_account,
)
from wallets.models import DepositAddress, NativeBalance, Network, Transfer, Wallet
from wallets.scanner import cursor_reset, scan_network

LOGS = 2_000
EMPTY_BLOCKS = 1_000
OURS = 10  # of the 2,000 transfers, this many go to open deposit addresses


def _fill_chain(rpc_url: str, deployed: dict, targets: list[str]) -> int:
    """Send LOGS token transfers in few blocks, then mine EMPTY_BLOCKS; return the head."""
    chain = Chain(rpc_url, timeout=300)  # mining 1,000 blocks at once takes a while
    payer = Signer(chain, PAYER_KEY)
    abi = load_artifact()["abi"]
    chain.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    nonce = payer.next_nonce()
    for index, to in enumerate(targets):
        payer.call(deployed["USDC"], abi, "transfer", [to, 1_000 + index], nonce=nonce + index)
    chain.w3.provider.make_request("anvil_mine", [10])  # type: ignore[arg-type]
    chain.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    chain.w3.provider.make_request("anvil_mine", [EMPTY_BLOCKS])  # type: ignore[arg-type]
    return chain.head()


def _random_address() -> str:
    return "0x" + secrets.token_hex(20)


@pytest.mark.django_db
def test_scanner_cost_against_open_addresses(capsys):
    seed_networks()
    merchant = MerchantFactory()
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    wallet = Wallet.objects.get(merchant=merchant)
    ours = [_random_address() for _ in range(OURS)]
    strangers = [_random_address() for _ in range(LOGS - OURS)]
    targets = strangers[: LOGS // 2] + ours + strangers[LOGS // 2 :]
    results = []
    with running_anvil() as rpc_url:
        deployed = deploy_demo_tokens(rpc_url)
        head = _fill_chain(rpc_url, deployed, targets)
        network = Network.objects.get(slug="anvil")
        network.rpc_url, network.enabled, network.confirmations = rpc_url, True, 1
        network.max_block_range = 2_000
        network.save()
        network.assets.filter(symbol="USDT").update(contract_address=deployed["USDT"].lower())
        network.assets.filter(symbol="USDC").update(contract_address=deployed["USDC"].lower())
        network.assets.filter(symbol="ETH").update(enabled=False)  # tokens only: the case
        open_count = 0
        for size in (10, 1_000, 100_000):
            extra = size - open_count
            first = ours if open_count == 0 else []
            rows = first + [_random_address() for _ in range(extra - len(first))]
            DepositAddress.objects.bulk_create(
                DepositAddress(
                    wallet=wallet, merchant=merchant, derivation_index=open_count + i, address=a
                )
                for i, a in enumerate(rows)
            )
            open_count = size
            Transfer.objects.all().delete()
            cursor_reset(network=network, next_block=0)
            chain = Chain(rpc_url)
            start = time.perf_counter()
            report = scan_network(network=network, chain=chain)
            seconds = time.perf_counter() - start
            assert report.error == ""
            assert len(report.new) == OURS
            results.append((size, report.rpc_calls, seconds, head + 1))

        # The naive way: one balanceOf per open address and token, every tick.
        sample = [_random_address() for _ in range(300)]
        naive_chain = Chain(rpc_url)
        start = time.perf_counter()
        for owner in sample:
            naive_chain.token_balance(deployed["USDC"], owner)
        per_call = (time.perf_counter() - start) / len(sample)

    naive_calls = 10_000 * 2  # two tokens
    with capsys.disabled():
        print(
            f"\nscanner over {results[0][3]:,} blocks holding {LOGS:,} Transfer logs ({OURS} ours)"
        )
        print(f"{'open addresses':>16}{'RPC calls':>11}{'calls/1k blocks':>17}{'s/1k blocks':>13}")
        for size, calls, seconds, blocks in results:
            print(
                f"{size:>16,}{calls:>11}{calls / blocks * 1000:>17.2f}{seconds / blocks * 1000:>13.3f}"
            )
        small, large = results[0], results[-1]
        print(
            f"100,000 vs 10 open addresses: RPC calls x{large[1] / small[1]:.2f}, seconds x{large[2] / small[2]:.2f}"
        )
        scan_seconds = small[2] / small[3] * 1000
        print(
            f"naive balance polling at 10,000 open addresses: {naive_calls:,} RPC calls per tick, "
            f"~{naive_calls * per_call:.1f} s per tick ({per_call * 1000:.2f} ms a call measured over "
            f"{len(sample)} calls); the scanner: {small[1] / small[3] * 1000:.2f} calls and "
            f"{scan_seconds:.3f} s per 1,000 blocks"
        )


def _post_many(merchant, prefix: str, count: int) -> None:
    holdings, fx, fees, owed = (
        holdings_account("base"),
        fx_account(),
        fees_account(),
        merchant_account(merchant),
    )
    for i in range(count):
        ledger_post(
            kind="payment",
            idempotency_key=f"{prefix}:{i}",
            legs=[
                Leg(holdings, "USDC", -Decimal("10")),
                Leg(fx, "USDC", Decimal("10")),
                Leg(fx, "USD", -Decimal("10.00")),
                Leg(owed, "USD", Decimal("9.90")),
                Leg(fees, "USD", Decimal("0.10")),
            ],
        )


@pytest.mark.django_db(transaction=True)
def test_ledger_postings_per_second(capsys):
    if connection.vendor != "postgresql":
        pytest.skip("ledger throughput is measured on PostgreSQL: set DATABASE_URL")
    per_writer = 150
    merchants = [MerchantFactory() for _ in range(8)]
    for m in merchants:
        merchant_account(m)
    holdings_account("base"), fx_account(), fees_account()

    start = time.perf_counter()
    _post_many(merchants[0], "single", per_writer)
    single_rate = per_writer / (time.perf_counter() - start)

    def run(writers: int, label: str, same_merchant: bool) -> float:
        barrier = threading.Barrier(writers)

        def work(index: int) -> None:
            try:
                barrier.wait()
                _post_many(merchants[0 if same_merchant else index], f"{label}:{index}", per_writer)
            finally:
                connection.close()

        threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return writers * per_writer / (time.perf_counter() - start)

    spread = run(8, "spread", same_merchant=False)
    hot = run(8, "hot", same_merchant=True)
    with capsys.disabled():
        print(f"\nledger postings/s on PostgreSQL (5 legs each): 1 writer {single_rate:.0f}")
        print(f"8 writers, 8 merchants: {spread:.0f} ({spread / single_rate:.2f} x 1 writer)")
        print(
            f"8 writers, one merchant (same balance rows, serialized by their locks): "
            f"{hot:.0f} ({hot / single_rate:.2f} x 1 writer)"
        )


@pytest.mark.django_db
def test_native_reconciliation_cost_against_watched_addresses(capsys):
    seed_networks()
    merchant = MerchantFactory()
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    wallet = Wallet.objects.get(merchant=merchant)
    results = []
    with running_anvil() as rpc_url:
        deploy_multicall3(rpc_url)
        network = Network.objects.get(slug="anvil")
        network.rpc_url, network.enabled, network.confirmations = rpc_url, True, 1
        network.save()
        network.assets.exclude(symbol="ETH").update(enabled=False)  # the native part alone
        chain = Chain(rpc_url)
        payer = Signer(chain, PAYER_KEY)
        created = 0
        for size in (10, 1_000, 10_000):
            rows = [_random_address() for _ in range(size - created)]
            DepositAddress.objects.bulk_create(
                DepositAddress(
                    wallet=wallet, merchant=merchant, derivation_index=created + i, address=a
                )
                for i, a in enumerate(rows)
            )
            created = size
            watched = list(DepositAddress.objects.values_list("address", flat=True))
            # One of them got ETH since the last round: a round always has work.
            chain.w3.provider.make_request("anvil_mine", [1])  # type: ignore[arg-type]
            payer._send(
                {
                    "to": Web3.to_checksum_address(watched[-1]),
                    "value": 10**15,
                    "nonce": payer.next_nonce(),
                    "gas": 21_000,
                    "gasPrice": chain.w3.eth.gas_price,
                    "chainId": 31337,
                }
            )
            cursor_reset(network=network, next_block=chain.head())
            counting = Chain(rpc_url)
            start = time.perf_counter()
            report = scan_network(network=network, chain=counting, native_watch=watched)
            seconds = time.perf_counter() - start
            assert report.error == ""
            assert NativeBalance.objects.count() == size
            results.append((size, report.rpc_calls, seconds))
    with capsys.disabled():
        print("\nnative reconciliation (Multicall3 getEthBalance, 500 addresses a call)")
        print(f"{'watched ETH addresses':>22}{'RPC calls/round':>17}{'s/round':>10}")
        for size, calls, seconds in results:
            print(f"{size:>22,}{calls:>17}{seconds:>10.3f}")
        small, large = results[0], results[-1]
        print(
            f"10,000 vs 10 addresses (x1,000): RPC calls x{large[1] / small[1]:.2f}, "
            f"seconds x{large[2] / small[2]:.2f}"
        )
