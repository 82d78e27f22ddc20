"""An in-process EVM chain (eth-tester) with our demo token, and the seeded dev network.

Imported by tests/conftest.py so every test directory can use the fixtures. web3 and
eth-tester are imported on first use of a chain, not here: that import is a second of CPU,
which every pytest process would otherwise pay at start-up, the inner runs of the skip-policy
tests and the workers' shares that never touch a chain included.
"""

import importlib
import json
from pathlib import Path

import pytest
from eth_utils import to_checksum_address

from wallets.chain import Chain
from wallets.models import Network
from wallets.scanner import cursor_reset

CHAIN_ID = 31337  # the seeded dev network's (anvil's)
ARTIFACT = json.loads(
    (Path(__file__).resolve().parents[1] / "contracts" / "artifacts" / "DemoToken.json").read_text()
)


class TesterChain:
    """An in-process chain (eth-tester) with our demo token deployed on it."""

    def __init__(self) -> None:
        from web3 import EthereumTesterProvider, Web3
        from web3.providers.eth_tester.defaults import API_ENDPOINTS, static_return

        # The dev network's chain id, which every watch round checks (eth-tester has its own):
        # signed transactions carry it, and eth_chainId answers it.
        endpoints = {**API_ENDPOINTS, "eth": {**API_ENDPOINTS["eth"]}}
        endpoints["eth"]["chainId"] = static_return(CHAIN_ID)
        self.provider = EthereumTesterProvider(api_endpoints=endpoints)
        self.provider.ethereum_tester.backend.chain.chain_id = CHAIN_ID
        self.w3 = Web3(self.provider)
        self.owner = self.w3.eth.accounts[0]
        self.payer = self.w3.eth.accounts[1]
        factory = self.w3.eth.contract(abi=ARTIFACT["abi"], bytecode=ARTIFACT["bytecode"])
        tx = factory.constructor("Demo USD Coin", "USDC", 6).transact({"from": self.owner})
        address = self.w3.eth.get_transaction_receipt(tx)["contractAddress"]
        self.token = self.w3.eth.contract(address=address, abi=ARTIFACT["abi"])
        self.token.functions.mint(self.payer, 10**12).transact({"from": self.owner})

    @property
    def token_address(self) -> str:
        return self.token.address.lower()

    def pay(self, to: str, amount: int) -> str:
        # A fixed gas limit (a transfer takes about 52,000) skips a gas estimate per payment,
        # which costs twice the transfer itself on eth-tester.
        tx = self.token.functions.transfer(to_checksum_address(to), amount).transact(
            {"from": self.payer, "gas": 100_000}
        )
        return tx.to_0x_hex()

    def send_eth(self, to: str, wei: int) -> str:
        tx = self.w3.eth.send_transaction(
            {"from": self.payer, "to": to_checksum_address(to), "value": wei}
        )
        return tx.to_0x_hex()

    def mine(self, blocks: int) -> None:
        self.provider.ethereum_tester.mine_blocks(blocks)

    def chain(self) -> Chain:
        return Chain(provider=self.provider)


_shared: tuple[TesterChain, object] | None = None


@pytest.fixture
def tester():
    """The in-process chain as it is right after the token deploy and the payer's mint, as if
    new. One chain per test process: built on first use (about 0.1 s of CPU, more than many
    tests take), then rewound to a snapshot of that state before each test, with automatic
    mining back on. A test that needs a chain nobody else touches builds a TesterChain()."""
    global _shared
    if _shared is None:
        chain = TesterChain()
        _shared = (chain, chain.provider.ethereum_tester.take_snapshot())
    else:
        chain, snapshot = _shared
        chain.provider.ethereum_tester.revert_to_snapshot(snapshot)
        chain.provider.ethereum_tester.enable_auto_mine_transactions()
    return chain


def seed_networks() -> None:
    """The networks the data migration seeds; transactional tests flush them, so re-seed."""
    if not Network.objects.filter(slug="anvil").exists():
        from django.apps import apps

        seed = importlib.import_module("wallets.migrations.0002_seed_networks").seed
        seed(apps, None)


@pytest.fixture
def dev_network(db, tester):
    """The seeded dev network pointed at the in-process chain's token, scanned from block 0."""
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.enabled = True
    network.confirmations = 3
    network.save()
    network.assets.filter(symbol="USDC").update(contract_address=tester.token_address)
    cursor_reset(network=network, next_block=0)
    return network
