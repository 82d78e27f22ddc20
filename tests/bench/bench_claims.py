"""Gas and signatures to collect deposits: forwarder claims against the xpub sweep.

For batches of 1, 10 and 100 deposits (ERC-20 and ETH) on anvil:

- forwarder: one `DepositFactory.claim` of the whole batch, signed once by the merchant's
  wallet; gas per deposit on the first claim (forwarders deployed by it) and on a repeated
  claim of the same addresses (permanent invoices), from the receipts.
- xpub: what an xpub merchant spends to sweep the same deposits to the account: an ERC-20
  address first gets ETH for gas (one transaction from the account), then sends its tokens
  (one transaction each); an ETH address sends its balance less the fee (one each).

The account already holds some of each token (the usual case after the first sweep), the same
in both. Goal: forwarder gas at most 1.0x the xpub sweep, one signature per batch. Figures are
printed, never asserted. Run with `make bench`.
"""

import secrets

import pytest
from eth_account import Account
from web3 import Web3

from contracts.deploy import (
    PAYER_ADDRESS,
    deploy_demo_tokens,
    deploy_deposit_factory,
    load_artifact,
)
from tests.chain import running_anvil
from wallets.forwarders import claim_calldata, forwarder_address

MERCHANT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil account (2)
BATCHES = (1, 10, 100)
AMOUNT = 5_000_000
ETH_AMOUNT = 10**16


def _mined(w3: Web3, tx_hash) -> dict:
    receipt = dict(w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120))
    assert receipt["status"] == 1
    return receipt


def _send(w3: Web3, sender: str, to: str, data: str = "0x", value: int = 0) -> dict:
    tx = {"from": sender, "to": Web3.to_checksum_address(to), "data": data, "value": value}
    return _mined(w3, w3.eth.send_transaction(tx))  # type: ignore[arg-type]


def _pay(w3: Web3, token, to: str, amount: int) -> None:
    data = token.encode_abi("transfer", [Web3.to_checksum_address(to), amount])
    _send(w3, PAYER_ADDRESS, token.address, data)


def _forwarder(w3: Web3, factory: str, token, n: int, native: bool) -> tuple[float, float]:
    salts = [secrets.token_bytes(32) for _ in range(n)]
    deposits = [
        forwarder_address(factory=factory.lower(), destination=MERCHANT.lower(), salt=s)
        for s in salts
    ]
    tokens = [] if native else [token.address]
    data = claim_calldata(destination=MERCHANT.lower(), salts=salts, tokens=tokens)
    per_deposit = []
    for _round in range(2):  # first claim deploys the forwarders, the second reuses them
        for deposit in deposits:
            if native:
                _send(w3, PAYER_ADDRESS, deposit, value=ETH_AMOUNT)
            else:
                _pay(w3, token, deposit, AMOUNT)
        receipt = _send(w3, MERCHANT, factory, data)
        per_deposit.append(receipt["gasUsed"] / n)
    return per_deposit[0], per_deposit[1]


def _xpub(w3: Web3, token, n: int, native: bool) -> tuple[float, int]:
    accounts = [Account.create() for _ in range(n)]
    gas = 0
    signatures = 0
    price = w3.eth.gas_price * 2
    for account in accounts:
        if native:
            _send(w3, PAYER_ADDRESS, account.address, value=ETH_AMOUNT)
        else:
            _pay(w3, token, account.address, AMOUNT)
            # The account funds the address with gas for one token transfer.
            gas += _send(w3, MERCHANT, account.address, value=80_000 * price)["gasUsed"]
            signatures += 1
    for account in accounts:
        nonce = w3.eth.get_transaction_count(account.address)
        if native:
            tx = {
                "to": MERCHANT,
                "value": ETH_AMOUNT - 21_000 * price,
                "gas": 21_000,
                "gasPrice": price,
                "nonce": nonce,
                "chainId": w3.eth.chain_id,
            }
        else:
            tx = token.functions.transfer(MERCHANT, AMOUNT).build_transaction(
                {"from": account.address, "nonce": nonce, "gasPrice": price, "gas": 80_000}
            )
        signed = account.sign_transaction(tx)
        gas += _mined(w3, w3.eth.send_raw_transaction(signed.raw_transaction))["gasUsed"]
        signatures += 1
    return gas / n, signatures


@pytest.mark.django_db
def test_claim_gas_against_the_xpub_sweep():
    with running_anvil() as rpc_url:
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 120}))
        demo = deploy_demo_tokens(rpc_url)
        factory = deploy_deposit_factory(rpc_url)
        token = w3.eth.contract(address=demo["USDC"], abi=load_artifact()["abi"])
        _pay(w3, token, MERCHANT, 1)  # the account holds the token already
        print()
        print(
            f"{'asset':6} {'batch':>5} | {'claim gas/deposit':>17} {'repeat':>8} | "
            f"{'xpub gas/deposit':>16} | {'ratio':>5} {'repeat':>6} | signatures claim/xpub"
        )
        for native in (False, True):
            for n in BATCHES:
                first, repeat = _forwarder(w3, factory, token, n, native)
                xpub, signatures = _xpub(w3, token, n, native)
                print(
                    f"{'ETH' if native else 'ERC-20':6} {n:>5} | {first:>17,.0f} {repeat:>8,.0f} |"
                    f" {xpub:>16,.0f} | {first / xpub:>5.2f} {repeat / xpub:>6.2f} |"
                    f" 1 / {signatures}"
                )
