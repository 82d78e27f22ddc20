"""The demo ERC-20 on a real local chain (anvil), and the reproducibility of its build."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractCustomError

from contracts.deploy import (
    ARTIFACT_PATH,
    DEPLOYER_ADDRESS,
    PAYER_ADDRESS,
    deploy_demo_tokens,
    load_artifact,
)
from tests.chain import NODE_MODULES, REPO_ROOT, require_node_modules, running_anvil

GRANT = 1_000_000 * 10**6
TRANSFER_TOPIC = Web3.keccak(text="Transfer(address,address,uint256)")
RECIPIENT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil default account (2)


@pytest.fixture(scope="module")
def deployed() -> Iterator[tuple[Web3, dict[str, Any]]]:
    with running_anvil() as rpc_url:
        yield Web3(Web3.HTTPProvider(rpc_url)), dict(deploy_demo_tokens(rpc_url))


@pytest.fixture
def chain(deployed):
    """The deployed demo chain, rolled back after each test (anvil's evm_snapshot/evm_revert)."""
    w3, _demo = deployed
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield deployed
    assert w3.provider.make_request("evm_revert", [snapshot])["result"] is True


def token(w3: Web3, address: str) -> Any:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact()["abi"])


def test_deployment_describes_the_demo_chain(chain):
    w3, demo = chain
    assert demo["chain_id"] == 31337 == w3.eth.chain_id
    assert demo["payer"] == PAYER_ADDRESS
    assert Account.from_key(demo["payer_key"]).address == demo["payer"]
    assert demo["USDT"] != demo["USDC"]
    for symbol in ("USDT", "USDC"):
        assert Web3.is_checksum_address(demo[symbol])
        assert w3.eth.get_code(demo[symbol]) != b""


@pytest.mark.parametrize(
    ("symbol", "name"), [("USDT", "Demo Tether USD"), ("USDC", "Demo USD Coin")]
)
def test_token_metadata(chain, symbol, name):
    w3, demo = chain
    contract = token(w3, demo[symbol])
    assert contract.functions.name().call() == name
    assert contract.functions.symbol().call() == symbol
    assert contract.functions.decimals().call() == 6
    assert contract.functions.owner().call() == DEPLOYER_ADDRESS


@pytest.mark.parametrize("symbol", ["USDT", "USDC"])
def test_payer_holds_a_million(chain, symbol):
    w3, demo = chain
    contract = token(w3, demo[symbol])
    assert contract.functions.balanceOf(demo["payer"]).call() == GRANT
    assert contract.functions.totalSupply().call() == GRANT


def test_transfer_from_payer_emits_transfer_event(chain):
    w3, demo = chain
    contract = token(w3, demo["USDC"])
    payer = Account.from_key(demo["payer_key"])
    assert contract.functions.balanceOf(RECIPIENT).call() == 0
    amount = 12_345_678  # 12.345678 USDC

    tx = contract.functions.transfer(RECIPIENT, amount).build_transaction(
        {"from": payer.address, "nonce": w3.eth.get_transaction_count(payer.address)}
    )
    tx_hash = w3.eth.send_raw_transaction(payer.sign_transaction(dict(tx)).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    assert receipt["status"] == 1

    (log,) = receipt["logs"]
    assert log["address"] == demo["USDC"]
    assert log["topics"] == [
        TRANSFER_TOPIC,
        bytes.fromhex(payer.address[2:].lower().rjust(64, "0")),
        bytes.fromhex(RECIPIENT[2:].lower().rjust(64, "0")),
    ]
    assert int.from_bytes(log["data"], "big") == amount

    (event,) = contract.events.Transfer().process_receipt(receipt)
    assert event["args"] == {"from": payer.address, "to": RECIPIENT, "value": amount}
    assert contract.functions.balanceOf(RECIPIENT).call() == amount
    assert contract.functions.balanceOf(payer.address).call() == GRANT - amount


def test_only_the_owner_may_mint(chain):
    w3, demo = chain
    contract = token(w3, demo["USDT"])
    not_owner = Web3.keccak(text="NotOwner()")[:4].to_0x_hex()
    with pytest.raises(ContractCustomError) as raised:
        contract.functions.mint(PAYER_ADDRESS, 1).call({"from": PAYER_ADDRESS})
    assert raised.value.data == not_owner
    contract.functions.mint(PAYER_ADDRESS, 1).call({"from": DEPLOYER_ADDRESS})  # the owner may


def test_deploys_under_interval_mining():
    with running_anvil(block_time=0.2) as rpc_url:
        demo = deploy_demo_tokens(rpc_url)
        w3 = Web3(Web3.HTTPProvider(rpc_url))
        assert token(w3, demo["USDT"]).functions.balanceOf(demo["payer"]).call() == GRANT


def test_build_reproduces_the_committed_artifact(tmp_path):
    require_node_modules(NODE_MODULES / "solc" / "package.json")
    node = shutil.which("node")
    assert node, "node is not on PATH (the npm dev tools need Node 20+)"
    out = tmp_path / "DemoToken.json"
    subprocess.run(
        [node, "contracts/build.js", "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.read_bytes() == ARTIFACT_PATH.read_bytes(), (
        "contracts/artifacts/DemoToken.json is stale: run `npm run build:contracts` and commit it"
    )
