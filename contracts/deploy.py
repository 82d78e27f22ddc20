"""Deploy the demo stablecoins (USDT and USDC stand-ins) to a running local anvil.

    python -m contracts.deploy --rpc-url http://127.0.0.1:8545

prints, as JSON, what `deploy_demo_tokens` returns: both token addresses, the demo payer's
address and private key, and the chain id.

The keys below are anvil's (and Hardhat's) default dev accounts, derived from the public
mnemonic "test test test test test test test test test test test junk". They are published
test keys that anyone can sign with: never send real funds to these addresses and never
use them on a chain other than a local dev chain.
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path
from typing import Any, TypedDict

from wallets.chain import Chain, Signer

ARTIFACT_PATH = Path(__file__).resolve().parent / "artifacts" / "DemoToken.json"
MULTICALL3_ARTIFACT_PATH = ARTIFACT_PATH.with_name("Multicall3.json")
FACTORY_ARTIFACT_PATH = ARTIFACT_PATH.with_name("DepositFactory.json")
NO_RETURN_ARTIFACT_PATH = ARTIFACT_PATH.with_name("DemoNoReturnToken.json")
# Where Multicall3 lives on real chains; the dev chain gets it at the same address.
MULTICALL3_ADDRESS = "0xcA11bde05977b3631167028862bE2a173976CA11"

# anvil default account (0): deploys the tokens and owns them (the only one allowed to mint).
DEPLOYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
DEPLOYER_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
# anvil default account (1): the demo "payer", who holds the demo stablecoins.
PAYER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
PAYER_ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"

# symbol -> (name, decimals)
DEMO_TOKENS: dict[str, tuple[str, int]] = {
    "USDT": ("Demo Tether USD", 6),
    "USDC": ("Demo USD Coin", 6),
}
PAYER_GRANT = 1_000_000  # whole tokens of each, minted to the payer

RECEIPT_TIMEOUT = 60.0  # seconds; generous for interval mining (--block-time)


class DemoDeployment(TypedDict):
    """What `deploy_demo_tokens` returns (addresses are EIP-55 checksummed hex strings)."""

    USDT: str
    USDC: str
    payer: str
    payer_key: str
    chain_id: int


@cache
def load_artifact() -> dict[str, Any]:
    """The committed build of contracts/DemoToken.sol: {"abi", "bytecode", "solcVersion"}."""
    artifact: dict[str, Any] = json.loads(ARTIFACT_PATH.read_text())
    return artifact


def deploy_demo_tokens(rpc_url: str) -> DemoDeployment:
    """Deploy demo USDT and USDC (6 decimals each) from anvil's first default account and
    mint 1,000,000 of each to anvil's second default account, the demo payer.

    Every call deploys fresh contracts. On a fresh anvil the addresses are deterministic,
    since they depend only on the deployer's address and nonce:
    USDT at 0x5FbDB2315678afecb367f032d93F642f64180aa3,
    USDC at 0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512.
    """
    chain = Chain(rpc_url, timeout=30)
    deployer = Signer(chain, DEPLOYER_KEY)
    artifact = load_artifact()

    # All transactions go out back to back with explicit nonces, so interval mining
    # (anvil --block-time) costs one block rather than one per transaction.
    nonce = deployer.next_nonce()
    deploy_hashes: dict[str, str] = {}
    for symbol, (name, decimals) in DEMO_TOKENS.items():
        deploy_hashes[symbol] = deployer.deploy(
            artifact["abi"], artifact["bytecode"], [name, symbol, decimals], nonce=nonce
        )
        nonce += 1
    addresses = {
        symbol: deployer.wait(tx_hash, timeout=RECEIPT_TIMEOUT)["contract_address"]
        for symbol, tx_hash in deploy_hashes.items()
    }
    mint_hashes = []
    for symbol, (_name, decimals) in DEMO_TOKENS.items():
        mint_hashes.append(
            deployer.call(
                addresses[symbol],
                artifact["abi"],
                "mint",
                [PAYER_ADDRESS, PAYER_GRANT * 10**decimals],
                nonce=nonce,
            )
        )
        nonce += 1
    for tx_hash in mint_hashes:
        deployer.wait(tx_hash, timeout=RECEIPT_TIMEOUT)

    return {
        "USDT": addresses["USDT"],
        "USDC": addresses["USDC"],
        "payer": PAYER_ADDRESS,
        "payer_key": PAYER_KEY,
        "chain_id": chain.chain_id(),
    }


def deploy_multicall3(rpc_url: str) -> str:
    """Put Multicall3's runtime code at its canonical address on anvil (anvil_setCode), so
    the dev chain batches balance reads exactly where real chains do. Idempotent."""
    chain = Chain(rpc_url, timeout=30)
    runtime = json.loads(MULTICALL3_ARTIFACT_PATH.read_text())["deployedBytecode"]
    answer = chain.w3.provider.make_request(
        "anvil_setCode",  # type: ignore[arg-type]
        [MULTICALL3_ADDRESS, runtime],
    )
    if answer.get("error"):
        raise RuntimeError(f"anvil_setCode failed: {answer['error']}")
    return MULTICALL3_ADDRESS


def load_factory_artifact() -> dict[str, Any]:
    """The committed build of contracts/DepositFactory.sol (OpenZeppelin Clones, SafeERC20)."""
    artifact: dict[str, Any] = json.loads(FACTORY_ARTIFACT_PATH.read_text())
    return artifact


def deploy_deposit_factory(rpc_url: str, private_key: str = DEPLOYER_KEY) -> str:
    """Deploy a DepositFactory (the dev chain's; real chains deploy it from the operator's
    browser wallet in admin). Returns its checksummed address."""
    chain = Chain(rpc_url, timeout=30)
    signer = Signer(chain, private_key)
    artifact = load_factory_artifact()
    tx_hash = signer.deploy(artifact["abi"], artifact["bytecode"], [], nonce=signer.next_nonce())
    return str(signer.wait(tx_hash, timeout=RECEIPT_TIMEOUT)["contract_address"])


def deploy_no_return_token(rpc_url: str, symbol: str = "USDT", decimals: int = 6) -> str:
    """Deploy a USDT-style demo token (transfer returns nothing) and mint the payer a grant."""
    chain = Chain(rpc_url, timeout=30)
    deployer = Signer(chain, DEPLOYER_KEY)
    artifact = json.loads(NO_RETURN_ARTIFACT_PATH.read_text())
    nonce = deployer.next_nonce()
    tx_hash = deployer.deploy(
        artifact["abi"], artifact["bytecode"], [f"Demo {symbol}", symbol, decimals], nonce=nonce
    )
    address = str(deployer.wait(tx_hash, timeout=RECEIPT_TIMEOUT)["contract_address"])
    mint = deployer.call(
        address,
        artifact["abi"],
        "mint",
        [PAYER_ADDRESS, PAYER_GRANT * 10**decimals],
        nonce=nonce + 1,
    )
    deployer.wait(mint, timeout=RECEIPT_TIMEOUT)
    return address


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m contracts.deploy",
        description="Deploy demo USDT/USDC to a local anvil and fund the demo payer.",
    )
    parser.add_argument("--rpc-url", default="http://127.0.0.1:8545", help="anvil's JSON-RPC URL")
    args = parser.parse_args(argv)
    deployed: dict[str, Any] = dict(deploy_demo_tokens(args.rpc_url))
    deployed["multicall3"] = deploy_multicall3(args.rpc_url)
    deployed["deposit_factory"] = deploy_deposit_factory(args.rpc_url)
    print(json.dumps(deployed, indent=2))


if __name__ == "__main__":
    main()
