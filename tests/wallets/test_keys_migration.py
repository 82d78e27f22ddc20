"""The migration that fingerprints keys fills in what existing rows need, and nothing else."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.wallets.test_addresses import ABANDON_ACCOUNT_1_XPUB, ABANDON_XPUB
from wallets.addresses import derive_address, parse_account_xpub

BEFORE = [("wallets", "0004_transfer_handled_status")]
AFTER = [("wallets", "0005_keys_fingerprint_and_paths")]


@pytest.mark.django_db(transaction=True)
def test_existing_wallets_and_their_own_addresses_get_the_keys_fingerprint():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    # Merchants as they are today (that app never depends on wallets), wallets as before.
    merchants = [node for node in executor.loader.graph.leaf_nodes() if node[0] == "merchants"]
    old = executor.loader.project_state(BEFORE + merchants).apps
    Merchant = old.get_model("merchants", "Merchant")
    Wallet = old.get_model("wallets", "Wallet")
    DepositAddress = old.get_model("wallets", "DepositAddress")
    merchant = Merchant.objects.create(name="Before")
    # The wallet's key now is account 1; index 0 came from it, index 1 from an earlier key.
    wallet = Wallet.objects.create(
        merchant=merchant, xpub=ABANDON_ACCOUNT_1_XPUB, first_address="x", next_index=2
    )
    for index, xpub in ((0, ABANDON_ACCOUNT_1_XPUB), (1, ABANDON_XPUB)):
        DepositAddress.objects.create(
            wallet=wallet,
            merchant=merchant,
            derivation_index=index,
            address=derive_address(xpub, index).lower(),
        )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    fingerprint = parse_account_xpub(ABANDON_ACCOUNT_1_XPUB).fingerprint
    assert new.get_model("wallets", "Wallet").objects.get().key_fingerprint == fingerprint
    addresses = new.get_model("wallets", "DepositAddress").objects.order_by("derivation_index")
    assert list(addresses.values_list("derivation_index", "key_fingerprint")) == [
        (0, fingerprint),
        (1, ""),
    ]

    # Back to the latest state for the tests that follow.
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
