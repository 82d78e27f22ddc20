"""Prepare the local anvil chain for `make run`: demo tokens, Multicall3, the DepositFactory,
the dev network, a demo wallet (account address + forwarders).

Only for local runs. It deploys our demo USDT/USDC, points the `anvil` network at the node,
enables it, and gives the demo merchant a generated wallet whose recovery phrase is written to
var/demo-wallet.txt (labelled demo everywhere), so demo payments can be inspected and swept.
"""

import json
from pathlib import Path
from typing import Any

from bip_utils import (
    Bip39MnemonicGenerator,
    Bip39SeedGenerator,
    Bip39WordsNum,
    Bip44,
    Bip44Changes,
    Bip44Coins,
)
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from contracts.deploy import deploy_demo_tokens, deploy_deposit_factory, deploy_multicall3
from merchants.models import Membership
from wallets.addresses import wallet_set_account
from wallets.chain import Chain, ChainError
from wallets.models import Network, Wallet
from wallets.scanner import cursor_reset


class Command(BaseCommand):
    help = "Deploy demo tokens to a local anvil and register them; give a merchant a demo wallet."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
        parser.add_argument(
            "--merchant-of", help="Email of a user whose business gets a demo wallet."
        )

    def handle(self, *args, rpc_url: str, merchant_of: str | None = None, **options) -> None:
        try:
            chain_id = Chain(rpc_url, attempts=10, backoff=0.3).chain_id()
        except ChainError as error:
            raise CommandError(f"No dev chain answers at {rpc_url}: {error}") from None
        network = Network.objects.get(slug="anvil")
        if chain_id != network.chain_id:
            raise CommandError(
                f"{rpc_url} is chain {chain_id}, not the dev chain {network.chain_id}."
            )
        var = Path(settings.VAR_DIR)
        state_file = var / "demo-chain.json"
        chain = Chain(rpc_url)
        known: dict[str, Any] | None = (
            json.loads(state_file.read_text()) if state_file.exists() else None
        )
        if known and all(chain.has_code(known[symbol]) for symbol in ("USDT", "USDC")):
            # The chain was restored from its saved state; the tokens are there.
            deployed: dict[str, Any] = known
        else:
            deployed = dict(deploy_demo_tokens(rpc_url))
            state_file.write_text(json.dumps(deployed, indent=2))
            # A fresh chain starts at block 0: scan it all.
            cursor_reset(network=network, next_block=0)
        for symbol in ("USDT", "USDC"):
            network.assets.filter(symbol=symbol).update(
                contract_address=deployed[symbol].lower(), enabled=True
            )
        # Multicall3 batches the balance reads that find ETH sent by contracts.
        network.multicall_address = deploy_multicall3(rpc_url).lower()
        # The DepositFactory of forwarder deposit addresses (real chains: the admin button).
        factory = deployed.get("deposit_factory", "")
        if not factory or not chain.has_code(factory):
            factory = deploy_deposit_factory(rpc_url)
            deployed["deposit_factory"] = factory
            state_file.write_text(json.dumps(deployed, indent=2))
        network.deposit_factory = factory.lower()
        network.rpc_url, network.enabled = rpc_url, True
        network.save(update_fields=["rpc_url", "enabled", "multicall_address", "deposit_factory"])
        self.stdout.write(
            f"  Dev chain {rpc_url}: demo USDT {deployed['USDT']}, USDC {deployed['USDC']},"
            f" Multicall3 {network.multicall_address}, DepositFactory {factory}"
        )
        self.stdout.write(
            f"  Demo payer {deployed['payer']} holds demo USDT and USDC;"
            f" its (public test) key: {deployed['payer_key']}"
        )
        if merchant_of:
            self._demo_wallet(merchant_of, var, chain)

    def _demo_wallet(self, email: str, var: Path, chain: Chain) -> None:
        membership = Membership.objects.select_related("merchant").filter(user__email=email).first()
        if membership is None:
            raise CommandError(f"No business for {email}.")
        merchant = membership.merchant
        if Wallet.objects.filter(merchant=merchant).exists():
            return
        mnemonic = str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_12))
        account = (
            Bip44.FromSeed(Bip39SeedGenerator(mnemonic).Generate(), Bip44Coins.ETHEREUM)
            .Purpose()
            .Coin()
            .Account(0)
        )
        # Account address + forwarders, the default for new merchants: deposits are claimed
        # to the demo account's first address, whose phrase a browser wallet can import.
        first = account.Change(Bip44Changes.CHAIN_EXT).AddressIndex(0).PublicKey().ToAddress()
        wallet_set_account(merchant=merchant, account_address=first, is_demo=True)
        # Gas for the demo account's claims (anvil only: it mints the balance).
        chain.w3.provider.make_request(
            "anvil_setBalance",  # type: ignore[arg-type]
            [first, hex(10**20)],
        )
        (var / "demo-wallet.txt").write_text(
            "DEMO WALLET for local runs only. Never use it for real money.\n"
            f"Recovery phrase: {mnemonic}\nAccount address: {first}\n"
            "Deposits are claimed to the account address from the Claims page; fund it with a "
            "little anvil ETH for gas.\n"
        )
        self.stdout.write(
            f"  Demo wallet for {merchant.name}; recovery phrase in {var / 'demo-wallet.txt'}"
        )
