"""Forwarder wallets without a chain: account addresses, offline deposit addresses, the
Wallet page's two modes, and the claim pages' answers to bad input."""

import json

import pytest

from checkout.services import CheckoutError, payment_start
from tests.evm import seed_networks
from tests.factories import make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import (
    ForwarderUnavailable,
    deposit_address_allocate,
    wallet_set,
    wallet_set_account,
)
from wallets.forwarders import forwarder_address, parse_account_address, payment_salt
from wallets.models import Asset, Claim, Network, Wallet, WalletMode

pytestmark = pytest.mark.django_db
ACCOUNT = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
OTHER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
FACTORY = "0x5fbdb2315678afecb367f032d93f642f64180aa3"


@pytest.fixture
def network(db):
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.deposit_factory = FACTORY
    network.enabled = True
    network.rpc_url = "http://127.0.0.1:9"  # nobody answers: estimates are skipped
    network.save()
    return network


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0x12", "40 hex digits"),
        ("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "40 hex digits"),
        ("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293Bc", "checksum"),
        ("0x" + "0" * 40, "zero address"),
    ],
)
def test_bad_account_addresses_are_refused_with_a_reason(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_account_address(raw)


def test_account_addresses_are_kept_lower_case_whatever_their_case():
    assert parse_account_address(f"  {ACCOUNT} ") == ACCOUNT.lower()
    assert parse_account_address(ACCOUNT.lower()) == ACCOUNT.lower()


def test_forwarder_addresses_are_offline_unique_and_keep_their_account(acme, network):
    wallet = wallet_set_account(merchant=acme, account_address=ACCOUNT)
    assert (wallet.mode, wallet.account_address) == (WalletMode.FORWARDER, ACCOUNT.lower())
    first = deposit_address_allocate(merchant=acme, network=network)
    second = deposit_address_allocate(merchant=acme, network=network)
    assert first.address != second.address
    assert (first.derivation_index, second.derivation_index) == (0, 1)
    salt = bytes.fromhex(first.salt.removeprefix("0x"))
    assert salt == payment_salt(seed=wallet.salt_seed, index=0)
    assert first.address == forwarder_address(
        factory=FACTORY, destination=ACCOUNT.lower(), salt=salt
    )
    # A new account address: new addresses only; the old ones keep theirs.
    wallet_set_account(merchant=acme, account_address=OTHER)
    third = deposit_address_allocate(merchant=acme, network=network)
    first.refresh_from_db()
    assert first.destination == ACCOUNT.lower() and third.destination == OTHER.lower()
    assert third.derivation_index == 2


def test_a_network_without_factory_takes_no_forwarder_payment(acme, network):
    wallet_set_account(merchant=acme, account_address=ACCOUNT)
    network.deposit_factory = ""
    network.save()
    with pytest.raises(ForwarderUnavailable, match="not deployed"):
        deposit_address_allocate(merchant=acme, network=network)
    invoice = make_invoice(acme, issue=True)
    with pytest.raises(CheckoutError, match="deposit factory is not deployed"):
        payment_start(invoice=invoice, asset=Asset.objects.get(network=network, symbol="USDC"))


def test_switching_modes_keeps_both_settings(acme, network):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    wallet = wallet_set_account(merchant=acme, account_address=ACCOUNT)
    assert wallet.uses_forwarders and wallet.xpub == ABANDON_XPUB
    wallet = wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    assert wallet.mode == WalletMode.XPUB
    assert not deposit_address_allocate(merchant=acme).is_forwarder


def test_owner_chooses_an_account_address_on_the_wallet_page(client_for, alice, acme, network):
    client = client_for(alice)
    page = client.get("/wallet/").content.decode()
    assert "Account address + forwarders" in page and "Recommended" in page
    bad = client.post("/wallet/", {"mode": "forwarder", "account_address": "0xnope"})
    assert bad.status_code == 422
    assert "40 hex digits" in bad.content.decode()
    assert not Wallet.objects.filter(merchant=acme).exists()  # nothing half-written
    response = client.post(
        "/wallet/", {"mode": "forwarder", "account_address": ACCOUNT}, follow=True
    )
    text = response.content.decode()
    assert response.status_code == 200
    assert ACCOUNT in text
    assert "affects new deposit addresses only" in text
    assert "Next addresses on Local dev chain" in text


def test_claim_pages_answer_bad_input_with_messages_never_500(client_for, alice, acme, network):
    wallet_set_account(merchant=acme, account_address=ACCOUNT)
    client = client_for(alice)
    for data in (
        {},
        {"network": "x", "deposit": "1"},
        {"network": str(network.pk), "deposit": "-4"},
        {"network": "999999", "deposit": "1"},
        {"network": str(network.pk), "deposit": "99999"},
        {"network": str(network.pk), "deposit": "1" * 40},
    ):
        response = client.post("/claims/prepare/", data)
        assert response.status_code == 400, data
        assert "Cannot claim" in response.content.decode()
    assert not Claim.objects.exists()
    claim = Claim.objects.create(
        merchant=acme, network=network, factory=FACTORY, destination=ACCOUNT.lower(), calldata="0x"
    )
    url = f"/claims/{claim.pk}/sent/"
    for data, message in (
        ({"tx_hash": "0x" + "a" * 64, "chain_id": "nope"}, "which chain"),
        ({"tx_hash": "0x" + "a" * 64, "chain_id": "1"}, "on chain 1"),
        ({"tx_hash": "0xzz", "chain_id": "31337"}, "transaction hash"),
        ({"tx_hash": "0x" + "a" * 64, "chain_id": "31337", "sender": "bob"}, "sender"),
    ):
        response = client.post(url, data)
        assert response.status_code == 400
        assert message in json.loads(response.content)["error"]
    claim.refresh_from_db()
    assert claim.status == "prepared" and claim.tx_hash == ""
    ok = client.post(url, {"tx_hash": "0x" + "a" * 64, "chain_id": "0x7a69"})
    assert ok.status_code == 200 and json.loads(ok.content)["status"] == "pending"
    again = client.post(url, {"tx_hash": "0x" + "a" * 64, "chain_id": "31337"})
    assert again.status_code == 200  # the same report twice is harmless
    other = client.post(url, {"tx_hash": "0x" + "b" * 64, "chain_id": "31337"})
    assert other.status_code == 400 and "already" in json.loads(other.content)["error"]


def test_claims_page_keeps_a_fixed_number_of_queries(
    client_for, alice, acme, network, django_assert_max_num_queries
):
    from wallets.models import Transfer

    wallet_set_account(merchant=acme, account_address=ACCOUNT)
    usdc = Asset.objects.get(network=network, symbol="USDC")
    client = client_for(alice)

    def add(n: int) -> None:
        for i in range(n):
            invoice = make_invoice(acme, issue=True)
            payment = payment_start(invoice=invoice, asset=usdc)
            Transfer.objects.create(
                network=network,
                asset=usdc,
                deposit_address=payment.deposit_address,
                tx_hash="0x" + f"{invoice.pk:064x}",
                log_index=i,
                block_number=1,
                block_hash="0x" + "cd" * 32,
                from_address="0x" + "1" * 40,
                to_address=payment.deposit_address.address,
                amount=5_000_000,
                status="confirmed",
            )

    add(2)
    with django_assert_max_num_queries(40) as few:
        assert client.get("/claims/").status_code == 200
    add(8)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get("/claims/")
    assert page.content.decode().count('class="claim-card"') == 10


@pytest.mark.django_db(transaction=True)
def test_preparing_the_same_claim_at_once_leaves_one_live_claim(acme):
    import threading

    from django.db import connection

    from tests.conftest import require_postgres
    from wallets.claims import claim_prepare
    from wallets.models import ClaimStatus, Transfer

    require_postgres()
    seed_networks()
    network = Network.objects.get(slug="anvil")
    network.deposit_factory, network.rpc_url = FACTORY, "http://127.0.0.1:9"
    network.save()
    wallet_set_account(merchant=acme, account_address=ACCOUNT)
    usdc = Asset.objects.get(network=network, symbol="USDC")
    deposit = deposit_address_allocate(merchant=acme, network=network)
    Transfer.objects.create(
        network=network,
        asset=usdc,
        deposit_address=deposit,
        tx_hash="0x" + "ab" * 32,
        log_index=0,
        block_number=1,
        block_hash="0x" + "cd" * 32,
        from_address="0x" + "1" * 40,
        to_address=deposit.address,
        amount=5_000_000,
        status="confirmed",
    )
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            barrier.wait()
            claim_prepare(merchant=acme, network=network, deposit_ids=[deposit.pk])
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    statuses = sorted(Claim.objects.values_list("status", flat=True))
    assert statuses == [ClaimStatus.ABANDONED] * 3 + [ClaimStatus.PREPARED]
