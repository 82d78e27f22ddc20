import csv
import io
from decimal import Decimal

import pytest

from tests.evm import seed_networks
from tests.wallets.test_addresses import ABANDON_FIRST, ABANDON_XPUB
from wallets.addresses import deposit_address_allocate, wallet_set
from wallets.ledger import Leg, fx_account, ledger_post, merchant_account
from wallets.models import Asset, Network, Transfer, Wallet

pytestmark = pytest.mark.django_db


def credit(merchant, key: str, amount: str, memo: str = "") -> None:
    ledger_post(
        kind="payment",
        idempotency_key=key,
        reference=f"INV-{key}",
        memo=memo,
        legs=[
            Leg(fx_account(), "USD", -Decimal(amount)),
            Leg(merchant_account(merchant), "USD", Decimal(amount)),
        ],
    )


def test_owner_sets_an_xpub_and_sees_the_first_address(client_for, alice, acme):
    response = client_for(alice).post("/wallet/", {"xpub": ABANDON_XPUB}, follow=True)
    assert response.status_code == 200
    assert ABANDON_FIRST in response.content.decode()
    assert Wallet.objects.get(merchant=acme).first_address == ABANDON_FIRST


def test_a_private_key_is_refused_not_stored_and_not_echoed(client_for, alice):
    secret = "xprv9zDSsecretsecretsecret"
    response = client_for(alice).post("/wallet/", {"xpub": secret})
    assert response.status_code == 422
    assert "private key" in response.content.decode()
    assert secret not in response.content.decode()
    assert not Wallet.objects.exists()


def test_staff_can_look_but_not_change_the_wallet(client_for, bob):
    client = client_for(bob)
    assert client.get("/wallet/").status_code == 200
    assert client.post("/wallet/", {"xpub": ABANDON_XPUB}).status_code == 403
    assert not Wallet.objects.exists()


def test_balances_show_only_the_merchants_own_money(client_for, alice, charlie, acme, globex):
    credit(acme, "a1", "120.50")
    credit(globex, "g1", "999.00")
    page = client_for(alice).get("/balances/").content.decode()
    assert "$120.50" in page and "$999.00" not in page
    other = client_for(charlie).get("/balances/").content.decode()
    assert "$999.00" in other and "$120.50" not in other


def test_holdings_count_confirmed_and_confirming_transfers_per_asset(client_for, alice, acme):
    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    deposit = deposit_address_allocate(merchant=acme)
    network = Network.objects.get(slug="base")
    usdc = Asset.objects.get(network=network, symbol="USDC")
    for i, (amount, status) in enumerate(
        [(5_000_000, "confirmed"), (2_500_000, "executed"), (1, "orphaned")]
    ):
        Transfer.objects.create(
            network=network,
            asset=usdc,
            deposit_address=deposit,
            tx_hash=f"0x{i:064x}",
            log_index=0,
            block_number=10 + i,
            block_hash="0x" + "a" * 64,
            from_address="0x" + "1" * 40,
            to_address=deposit.address,
            amount=amount,
            status=status,
        )
    page = client_for(alice).get("/balances/").content.decode()
    assert "Base" in page and ">5<" in page.replace(" ", "") and ">2.5<" in page.replace(" ", "")


def test_ledger_filters_and_exports_csv_with_formula_cells_neutralised(client_for, alice, acme):
    credit(acme, "1", "10.00", memo='=HYPERLINK("http://evil")')
    credit(acme, "2", "20.00")
    client = client_for(alice)
    assert "INV-1" in client.get("/ledger/").content.decode()
    response = client.get("/ledger/", {"format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["date", "transaction", "kind", "reference", "currency", "amount", "memo"]
    assert sorted(r[5] for r in rows[1:]) == ["10", "20"]
    memo = next(r[6] for r in rows[1:] if r[3] == "INV-1")
    assert memo.startswith("'=")


def test_transfers_list_links_to_the_explorer(client_for, alice, acme):
    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    deposit = deposit_address_allocate(merchant=acme)
    network = Network.objects.get(slug="ethereum")
    usdt = Asset.objects.get(network=network, symbol="USDT")
    tx = "0x" + "b" * 64
    Transfer.objects.create(
        network=network,
        asset=usdt,
        deposit_address=deposit,
        tx_hash=tx,
        log_index=3,
        block_number=1,
        block_hash="0x" + "c" * 64,
        from_address="0x" + "1" * 40,
        to_address=deposit.address,
        amount=7_000_000,
    )
    page = client_for(alice).get("/transfers/").content.decode()
    assert f"https://etherscan.io/tx/{tx}" in page
    assert "7 USDT" in page


def test_wallet_pages_list_views_keep_a_fixed_number_of_queries(
    client_for, alice, acme, django_assert_max_num_queries
):
    for i in range(30):
        credit(acme, f"k{i}", "1.00")
    client = client_for(alice)
    with django_assert_max_num_queries(8):
        assert client.get("/ledger/").status_code == 200
