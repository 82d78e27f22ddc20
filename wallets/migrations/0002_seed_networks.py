"""The networks and tokens Stablebill knows out of the box; admins may add or disable rows."""

from django.db import migrations

NETWORKS = [
    # slug, name, chain id, native symbol, confirmations, poll seconds, explorer, rpc, enabled, dev
    ("ethereum", "Ethereum", 1, "ETH", 12, 15, "https://etherscan.io/tx/{tx}", "", True, False),
    ("polygon", "Polygon PoS", 137, "POL", 64, 5, "https://polygonscan.com/tx/{tx}", "", True, False),
    ("base", "Base", 8453, "ETH", 12, 5, "https://basescan.org/tx/{tx}", "", True, False),
    ("arbitrum", "Arbitrum One", 42161, "ETH", 20, 5, "https://arbiscan.io/tx/{tx}", "", True, False),
    # The local anvil dev chain: off until `make run` turns it on with its demo tokens.
    ("anvil", "Local dev chain", 31337, "ETH", 2, 1, "", "http://127.0.0.1:8545", False, True),
]

TOKENS = {
    "ethereum": [
        ("USDT", "Tether USD", 6, "0xdac17f958d2ee523a2206206994597c13d831ec7"),
        ("USDC", "USD Coin", 6, "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"),
        ("ETH", "Ether", 18, ""),
    ],
    "polygon": [
        ("USDT", "Tether USD", 6, "0xc2132d05d31c914a87c6611c10748aeb04b58e8f"),
        ("USDC", "USD Coin", 6, "0x3c499c542cef5e3811e1192ce70d8cc03d5c3359"),
    ],
    "base": [
        ("USDT", "Tether USD", 6, "0xfde4c96c8593536e31f229ea8f37b2ada2699bb2"),
        ("USDC", "USD Coin", 6, "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913"),
        ("ETH", "Ether", 18, ""),
    ],
    "arbitrum": [
        ("USDT", "Tether USD", 6, "0xfd086bc7cd5c481dcc9c85ebe478a1c0b69fcbb9"),
        ("USDC", "USD Coin", 6, "0xaf88d065e77c8cc2239327c5edb3a432268e5831"),
        ("ETH", "Ether", 18, ""),
    ],
    # Where the deploy script puts the demo tokens on a fresh anvil (deployer nonce 0 and 1);
    # `make run` re-registers whatever the deploy returns.
    "anvil": [
        ("USDT", "Demo Tether USD", 6, "0x5fbdb2315678afecb367f032d93f642f64180aa3"),
        ("USDC", "Demo USD Coin", 6, "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"),
        ("ETH", "Ether", 18, ""),
    ],
}


def seed(apps, schema_editor):
    Network = apps.get_model("wallets", "Network")
    Asset = apps.get_model("wallets", "Asset")
    for slug, name, chain_id, native, confs, poll, explorer, rpc, enabled, dev in NETWORKS:
        network, _ = Network.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name, "chain_id": chain_id, "native_symbol": native, "confirmations": confs,
                "poll_interval_seconds": poll, "explorer_tx_url": explorer, "rpc_url": rpc,
                "enabled": enabled, "is_dev": dev,
            },
        )
        for symbol, token_name, decimals, address in TOKENS[slug]:
            Asset.objects.update_or_create(
                network=network, symbol=symbol,
                defaults={"name": token_name, "decimals": decimals, "contract_address": address},
            )


class Migration(migrations.Migration):
    dependencies = [("wallets", "0001_initial")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
