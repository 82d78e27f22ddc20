import csv
import io
from decimal import Decimal

import pytest

from tests.evm import seed_networks
from tests.factories import PASSWORD, UserFactory
from tests.wallets.test_addresses import (
    ABANDON_ACCOUNT_1_XPUB,
    ABANDON_FIRST,
    ABANDON_XPUB,
    reencode,
    take,
)
from wallets.addresses import deposit_address_allocate, derive_address, wallet_set
from wallets.chain import checksum_address
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


def _transfer(
    deposit, *, symbol="USDT", amount=7_000_000, status="confirmed", n=0, slug="ethereum"
):
    network = Network.objects.get(slug=slug)
    return Transfer.objects.create(
        network=network,
        asset=Asset.objects.get(network=network, symbol=symbol),
        deposit_address=deposit,
        tx_hash=f"0x{deposit.pk:032x}{n:032x}",
        log_index=n,
        block_number=1 + n,
        block_hash="0x" + "c" * 64,
        from_address="0x" + "1" * 40,
        to_address=deposit.address,
        amount=amount,
        status=status,
    )


def test_a_second_business_pasting_a_reencoded_key_gets_a_form_error(
    client_for, alice, charlie, globex
):
    client_for(alice).post("/wallet/", {"xpub": ABANDON_XPUB})
    response = client_for(charlie).post("/wallet/", {"xpub": reencode(ABANDON_XPUB)})
    assert response.status_code == 422
    assert response.context["form"].errors["xpub"] == [
        "This key is already connected to another business. Each business needs a wallet "
        "account of its own: export the key of another account (m/44'/60'/1', …) or of "
        "another wallet."
    ]
    assert not Wallet.objects.filter(merchant=globex).exists()


def test_wallet_page_shows_the_addresses_really_handed_out_next_with_their_paths(
    client_for, alice, acme, globex
):
    take(wallet_set(merchant=globex, xpub=ABANDON_ACCOUNT_1_XPUB), ABANDON_XPUB, 1)
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    deposit_address_allocate(merchant=acme)  # index 0; 1 is taken, so 2 comes next

    page = client_for(alice).get("/wallet/").content.decode()

    assert "m/44&#x27;/60&#x27;/0&#x27;/0/2</td>" in page
    assert derive_address(ABANDON_XPUB, 2) in page
    assert derive_address(ABANDON_XPUB, 1) not in page
    assert "m/44&#x27;/60&#x27;/0&#x27;/0/6</td>" in page  # five shown: 2, 3, 4, 5, 6
    assert "20 unused addresses in a row" in page
    assert 'href="/wallet/addresses.csv"' in page


def test_transfers_page_shows_each_transfers_derivation_path(
    client_for, alice, acme, django_assert_max_num_queries
):
    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    deposits = [deposit_address_allocate(merchant=acme) for _ in range(12)]
    for deposit in deposits:
        _transfer(deposit)
    client = client_for(alice)
    with django_assert_max_num_queries(8):
        page = client.get("/transfers/").content.decode()
    for index in (0, 7, 11):
        assert f"m/44&#x27;/60&#x27;/0&#x27;/0/{index}</span>" in page


def test_admin_lists_the_derivation_path_of_transfers_and_addresses(acme):
    from django.test import Client

    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    deposit_address_allocate(merchant=acme)
    _transfer(deposit_address_allocate(merchant=acme))
    root = UserFactory(email="root@stablebill.test", is_staff=True, is_superuser=True)
    client = Client()
    assert client.login(email=root.email, password=PASSWORD)
    transfers = client.get("/admin/wallets/transfer/").content.decode()
    assert "m/44&#x27;/60&#x27;/0&#x27;/0/1" in transfers
    addresses = client.get("/admin/wallets/depositaddress/").content.decode()
    assert "m/44&#x27;/60&#x27;/0&#x27;/0/0" in addresses


def _csv_rows(response) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_funded_addresses_export_lists_paths_and_amounts_of_funded_addresses_only(
    client_for, victor, acme
):
    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    funded, _unused, orphaned_only, pending = (
        deposit_address_allocate(merchant=acme) for _ in range(4)
    )
    _transfer(funded, amount=7_000_000)
    _transfer(funded, amount=500_000, n=1)
    _transfer(funded, symbol="USDC", slug="base", amount=1_250_000, n=2)
    _transfer(orphaned_only, status="orphaned")
    _transfer(pending, status="executed", amount=2_000_000)

    rows = _csv_rows(client_for(victor).get("/wallet/addresses.csv"))

    assert rows[0] == [
        "address",
        "derivation_path",
        "derivation_index",
        "key",
        "network",
        "asset",
        "confirmed",
        "unconfirmed",
        "transfers",
        "first_seen",
        "last_seen",
    ]
    key = Wallet.objects.get(merchant=acme).key_fingerprint[:8] + " (current)"
    assert [r[:9] for r in rows[1:]] == [
        [ABANDON_FIRST, "m/44'/60'/0'/0/0", "0", key, "Base", "USDC", "1.25", "0", "1"],
        [ABANDON_FIRST, "m/44'/60'/0'/0/0", "0", key, "Ethereum", "USDT", "7.5", "0", "2"],
        [
            checksum_address(pending.address),
            "m/44'/60'/0'/0/3",
            "3",
            key,
            "Ethereum",
            "USDT",
            "0",
            "2",
            "1",
        ],
    ]


def test_funded_addresses_export_neutralises_formula_cells(client_for, alice, acme):
    seed_networks()
    network = Network.objects.get(slug="ethereum")
    Asset.objects.create(network=network, symbol="=HYPERLINK", name="Evil", decimals=0)
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    _transfer(deposit_address_allocate(merchant=acme), symbol="=HYPERLINK", amount=3)
    rows = _csv_rows(client_for(alice).get("/wallet/addresses.csv"))
    assert rows[1][5] == "'=HYPERLINK"
    assert rows[1][6] == "3"


def test_funded_addresses_export_shows_only_the_merchants_own_addresses(
    client_for, alice, charlie, acme, globex
):
    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    wallet_set(merchant=globex, xpub=ABANDON_ACCOUNT_1_XPUB)
    _transfer(deposit_address_allocate(merchant=acme))
    theirs = deposit_address_allocate(merchant=globex)
    _transfer(theirs)
    acme_rows = _csv_rows(client_for(alice).get("/wallet/addresses.csv"))
    globex_rows = _csv_rows(client_for(charlie).get("/wallet/addresses.csv"))
    assert [r[0] for r in acme_rows[1:]] == [ABANDON_FIRST]
    assert [r[0] for r in globex_rows[1:]] == [checksum_address(theirs.address)]
