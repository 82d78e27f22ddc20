"""A forwarder merchant on a real anvil chain: pay invoices, watch, prepare and sign claims.

The merchant's account is anvil's unlocked account (2), which signs claims the way a browser
wallet does (eth_sendTransaction); the payer is account (1)."""

from __future__ import annotations

from web3 import Web3

from checkout.services import payment_start
from checkout.tasks import watch_network
from contracts.deploy import (
    PAYER_ADDRESS,
    deploy_demo_tokens,
    deploy_deposit_factory,
    deploy_multicall3,
    deploy_no_return_token,
    load_artifact,
)
from tests.evm import seed_networks
from tests.factories import make_invoice
from wallets.addresses import wallet_set_account
from wallets.claims import claim_prepare, claim_submit
from wallets.models import Asset, Claim, Network
from wallets.scanner import cursor_reset

ACCOUNT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil account (2): the merchant's
STRANGER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # anvil account (3)


class ClaimShop:
    def __init__(self, merchant, rpc_url: str, *, confirmations: int = 2) -> None:
        self.merchant, self.rpc_url = merchant, rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url))
        self.deployed = dict(deploy_demo_tokens(rpc_url))
        # Demo USDT behaves like the real one: its transfer returns nothing.
        self.deployed["USDT"] = deploy_no_return_token(rpc_url)
        deploy_multicall3(rpc_url)
        self.factory = deploy_deposit_factory(rpc_url).lower()
        seed_networks()
        network = Network.objects.get(slug="anvil")
        network.rpc_url, network.enabled = rpc_url, True
        network.confirmations = confirmations
        network.deposit_factory = self.factory
        network.save()
        for symbol in ("USDT", "USDC"):
            network.assets.filter(symbol=symbol).update(
                contract_address=self.deployed[symbol].lower(), enabled=True
            )
        cursor_reset(network=network, next_block=0)
        self.network = network
        self.wallet = wallet_set_account(merchant=merchant, account_address=ACCOUNT)
        self.abi = load_artifact()["abi"]

    def asset(self, symbol: str) -> Asset:
        return Asset.objects.get(network=self.network, symbol=symbol)

    def invoice(self, total: str = "100.00", **fields):
        return make_invoice(self.merchant, items=[("Service", "1", total)], issue=True, **fields)

    def start(self, invoice, symbol: str = "USDC"):
        return payment_start(invoice=invoice, asset=self.asset(symbol))

    def pay(self, address: str, units: int, symbol: str = "USDC") -> str:
        if symbol == "ETH":
            return self.send(PAYER_ADDRESS, address, value=units)
        token = self.w3.eth.contract(address=self.deployed[symbol], abi=self.abi)
        data = token.encode_abi("transfer", [Web3.to_checksum_address(address), units])
        return self.send(PAYER_ADDRESS, self.deployed[symbol], data=data)

    def send(self, sender: str, to: str, *, data: str = "0x", value: int = 0, gas=None) -> str:
        tx = {"from": sender, "to": Web3.to_checksum_address(to), "data": data, "value": value}
        if gas is not None:
            tx["gas"] = gas
        tx_hash = self.w3.eth.send_transaction(tx)  # type: ignore[arg-type]
        self.w3.eth.wait_for_transaction_receipt(tx_hash)
        return tx_hash.to_0x_hex()

    def balance(self, symbol: str, owner: str = ACCOUNT) -> int:
        if symbol == "ETH":
            return self.w3.eth.get_balance(Web3.to_checksum_address(owner))
        token = self.w3.eth.contract(address=self.deployed[symbol], abi=self.abi)
        return token.functions.balanceOf(Web3.to_checksum_address(owner)).call()

    def mine(self, blocks: int) -> None:
        self.w3.provider.make_request("anvil_mine", [blocks])  # type: ignore[arg-type]

    def watch(self) -> None:
        watch_network(self.network.pk)

    def confirm(self) -> None:
        self.mine(self.network.confirmations)
        self.watch()

    def prepare(self, payments) -> Claim:
        return claim_prepare(
            merchant=self.merchant,
            network=self.network,
            deposit_ids=[p.deposit_address_id for p in payments],
            sender=ACCOUNT,
        )

    def sign(self, claim: Claim, *, sender: str = ACCOUNT, gas=None, report=True) -> str:
        """What the page's "Sign claim" does: the wallet sends the prepared call."""
        tx_hash = self.send(sender, claim.factory, data=claim.calldata, gas=gas)
        if report:
            claim_submit(
                merchant=self.merchant,
                claim_id=claim.pk,
                tx_hash=tx_hash,
                sender=sender,
                chain_id=self.network.chain_id,
            )
        return tx_hash
