"""DepositFactory on anvil: offline addresses, claims of tokens and ETH, and that nobody can
send a forwarder's funds anywhere but the destination it was derived with."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from eth_abi import encode
from web3 import Web3
from web3.exceptions import ContractCustomError, Web3RPCError
from web3.logs import DISCARD

from contracts.deploy import (
    ARTIFACT_PATH,
    FACTORY_ARTIFACT_PATH,
    PAYER_ADDRESS,
    deploy_demo_tokens,
    deploy_deposit_factory,
    deploy_no_return_token,
    load_artifact,
    load_factory_artifact,
)
from tests.chain import NODE_MODULES, REPO_ROOT, require_node_modules, running_anvil
from wallets.forwarders import (
    claim_calldata,
    forwarder_address,
    implementation_address,
    payment_salt,
)

MERCHANT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil account (2)
THIEF = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # anvil account (3)


@pytest.fixture(scope="module")
def deployed() -> Iterator[dict[str, Any]]:
    with running_anvil() as rpc_url:
        w3 = Web3(Web3.HTTPProvider(rpc_url))
        demo = dict(deploy_demo_tokens(rpc_url))
        demo["NORET"] = deploy_no_return_token(rpc_url)
        demo["factory"] = deploy_deposit_factory(rpc_url)
        demo["w3"] = w3
        yield demo


@pytest.fixture
def demo(deployed):
    w3 = deployed["w3"]
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield deployed
    assert w3.provider.make_request("evm_revert", [snapshot])["result"] is True


def factory(demo) -> Any:
    return demo["w3"].eth.contract(address=demo["factory"], abi=load_factory_artifact()["abi"])


def erc20(demo, symbol: str) -> Any:
    return demo["w3"].eth.contract(address=demo[symbol], abi=load_artifact()["abi"])


def send(demo, sender: str, to: str, data: str = "0x", value: int = 0) -> dict:
    w3 = demo["w3"]
    tx = {"from": sender, "to": Web3.to_checksum_address(to), "data": data, "value": value}
    tx_hash = w3.eth.send_transaction(tx)  # type: ignore[arg-type]
    return dict(w3.eth.wait_for_transaction_receipt(tx_hash))


def pay_token(demo, symbol: str, to: str, amount: int) -> None:
    data = erc20(demo, "USDT").encode_abi("transfer", [Web3.to_checksum_address(to), amount])
    receipt = send(demo, PAYER_ADDRESS, demo[symbol], data)
    assert receipt["status"] == 1


def claim(demo, destination: str, salts: list[bytes], tokens: list[str], sender=THIEF) -> dict:
    data = claim_calldata(destination=destination.lower(), salts=salts, tokens=tokens)
    return send(demo, sender, demo["factory"], data)


def balance(demo, symbol: str, owner: str) -> int:
    return erc20(demo, symbol).functions.balanceOf(Web3.to_checksum_address(owner)).call()


def test_python_computes_the_factorys_addresses_for_many_salts(demo):
    contract = factory(demo)
    assert implementation_address(demo["factory"].lower()) == (
        contract.functions.forwarderImplementation().call().lower()
    )
    seed = secrets.token_hex(16)
    for index in range(120):
        destination = Web3.to_checksum_address("0x" + secrets.token_hex(20))
        salt = payment_salt(seed=seed, index=index) if index % 2 else secrets.token_bytes(32)
        ours = forwarder_address(
            factory=demo["factory"].lower(), destination=destination.lower(), salt=salt
        )
        assert ours == contract.functions.forwarderAddress(destination, salt).call().lower()
        assert (
            ours == contract.functions.forwarderAddressByCreate2(destination, salt).call().lower()
        )


def test_claim_calldata_is_the_abi_encoding():
    salts = [secrets.token_bytes(32) for _ in range(3)]
    tokens = ["0x" + secrets.token_hex(20) for _ in range(2)]
    destination = "0x" + secrets.token_hex(20)
    selector = Web3.keccak(text="claim(address,bytes32[],address[])")[:4]
    expected = selector + encode(
        ["address", "bytes32[]", "address[]"], [destination, salts, tokens]
    )
    assert claim_calldata(destination=destination, salts=salts, tokens=tokens) == (
        "0x" + expected.hex()
    )


def _address(demo, salt: bytes, destination: str = MERCHANT) -> str:
    return forwarder_address(
        factory=demo["factory"].lower(), destination=destination.lower(), salt=salt
    )


def test_a_claim_deploys_the_forwarder_and_sweeps_a_token_to_the_destination(demo):
    salt = secrets.token_bytes(32)
    deposit = _address(demo, salt)
    pay_token(demo, "USDC", deposit, 25_000_000)
    assert demo["w3"].eth.get_code(Web3.to_checksum_address(deposit)) == b""
    before = balance(demo, "USDC", MERCHANT)
    receipt = claim(demo, MERCHANT, [salt], [demo["USDC"]])  # a stranger pays the gas
    assert receipt["status"] == 1
    assert balance(demo, "USDC", MERCHANT) == before + 25_000_000
    assert balance(demo, "USDC", deposit) == 0
    assert demo["w3"].eth.get_code(Web3.to_checksum_address(deposit)) != b""
    (event,) = factory(demo).events.Claimed().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["destination"] == MERCHANT and event["args"]["forwarders"] == 1


def test_a_batch_claims_tokens_and_eth_of_many_addresses_in_one_transaction(demo):
    w3 = demo["w3"]
    salts = [secrets.token_bytes(32) for _ in range(6)]
    deposits = [_address(demo, s) for s in salts]
    for i, deposit in enumerate(deposits):
        if i % 3 == 0:
            send(demo, PAYER_ADDRESS, deposit, value=10**17 * (i + 1))
        else:
            pay_token(demo, "USDT" if i % 3 == 1 else "NORET", deposit, 1_000_000 * (i + 1))
    eth_before = w3.eth.get_balance(MERCHANT)
    usdt_before, noret_before = balance(demo, "USDT", MERCHANT), balance(demo, "NORET", MERCHANT)
    receipt = claim(demo, MERCHANT, salts, [demo["USDT"], demo["NORET"]])
    assert receipt["status"] == 1
    assert w3.eth.get_balance(MERCHANT) == eth_before + 10**17 * (1 + 4)
    assert balance(demo, "USDT", MERCHANT) == usdt_before + 1_000_000 * (2 + 5)
    assert balance(demo, "NORET", MERCHANT) == noret_before + 1_000_000 * (3 + 6)
    for deposit in deposits:
        assert w3.eth.get_balance(Web3.to_checksum_address(deposit)) == 0
    ether = factory(demo).events.EtherClaimed().process_receipt(receipt, errors=DISCARD)
    assert sorted(e["args"]["amount"] for e in ether) == [10**17, 4 * 10**17]


def test_the_same_address_can_be_claimed_again_after_new_payments(demo):
    salt = secrets.token_bytes(32)
    deposit = _address(demo, salt)
    before = balance(demo, "USDC", MERCHANT)
    for round_ in range(3):
        pay_token(demo, "USDC", deposit, 7_000_000)
        send(demo, PAYER_ADDRESS, deposit, value=10**16)  # a deployed forwarder takes ETH
        assert claim(demo, MERCHANT, [salt], [demo["USDC"]])["status"] == 1
        assert balance(demo, "USDC", MERCHANT) == before + 7_000_000 * (round_ + 1)
        assert demo["w3"].eth.get_balance(Web3.to_checksum_address(deposit)) == 0


def test_a_usdt_style_token_without_return_value_is_claimed(demo):
    salt = secrets.token_bytes(32)
    deposit = _address(demo, salt)
    pay_token(demo, "NORET", deposit, 3_000_000)
    assert claim(demo, MERCHANT, [salt], [demo["NORET"]])["status"] == 1
    assert balance(demo, "NORET", deposit) == 0
    assert balance(demo, "NORET", MERCHANT) == 3_000_000


def test_nobody_can_send_a_forwarders_funds_elsewhere(demo):
    w3 = demo["w3"]
    salt = secrets.token_bytes(32)
    deposit = _address(demo, salt)
    pay_token(demo, "USDC", deposit, 9_000_000)
    # The same salt with the thief's address names another forwarder, which holds nothing.
    assert claim(demo, THIEF, [salt], [demo["USDC"]])["status"] == 1
    assert balance(demo, "USDC", deposit) == 9_000_000
    assert balance(demo, "USDC", THIEF) == 0
    # Deployed by a first claim, the forwarder obeys its factory only: a direct call of its
    # sweep (there is no initializer to front-run) reverts for anyone else.
    assert claim(demo, MERCHANT, [salt], [])["status"] == 1  # deploys; sweeps ETH only
    sweep = Web3.keccak(text="sweep(address,address[])")[:4] + encode(
        ["address", "address[]"], [THIEF, [demo["USDC"]]]
    )
    implementation = factory(demo).functions.forwarderImplementation().call()
    for target in (deposit, implementation):
        with pytest.raises((Web3RPCError, ContractCustomError)) as raised:
            w3.eth.call({"from": THIEF, "to": Web3.to_checksum_address(target), "data": sweep})
        assert Web3.keccak(text="OnlyFactory()")[:4].hex() in str(raised.value)
    assert balance(demo, "USDC", deposit) == 9_000_000
    # Another factory (anyone can deploy one) derives other addresses; it cannot reach ours.
    other = deploy_deposit_factory(
        demo["w3"].provider.endpoint_uri,
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",  # account (3)
    )
    data = claim_calldata(destination=THIEF.lower(), salts=[salt], tokens=[demo["USDC"]])
    assert send(demo, THIEF, other, data)["status"] == 1
    assert balance(demo, "USDC", deposit) == 9_000_000
    # And the funds still go where they belong.
    assert claim(demo, MERCHANT, [salt], [demo["USDC"]])["status"] == 1
    assert balance(demo, "USDC", MERCHANT) == 9_000_000


def test_a_claim_without_destination_reverts(demo):
    data = claim_calldata(destination="0x" + "0" * 40, salts=[bytes(32)], tokens=[])
    with pytest.raises((Web3RPCError, ContractCustomError)) as raised:
        demo["w3"].eth.call({"from": THIEF, "to": demo["factory"], "data": data})
    assert Web3.keccak(text="ZeroDestination()")[:4].hex() in str(raised.value)


@pytest.mark.parametrize("name", ["DepositFactory", "DemoNoReturnToken"])
def test_build_reproduces_the_committed_artifacts(tmp_path, name):
    require_node_modules(NODE_MODULES / "solc" / "package.json")
    require_node_modules(NODE_MODULES / "@openzeppelin" / "contracts" / "package.json")
    node = shutil.which("node")
    assert node
    out = tmp_path / f"{name}.json"
    subprocess.run(
        [node, "contracts/build.js", "--contract", name, "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=180,
    )
    committed = ARTIFACT_PATH.with_name(f"{name}.json")
    assert out.read_bytes() == committed.read_bytes(), f"{committed.name} is stale"
    assert json.loads(FACTORY_ARTIFACT_PATH.read_text())["bytecode"].startswith("0x")
