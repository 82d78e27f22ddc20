import pytest

from tests.evm import TesterChain, seed_networks  # noqa: F401 (re-exported for the tests here)
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import deposit_address_allocate, wallet_set


@pytest.fixture
def deposit(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    return deposit_address_allocate(merchant=acme)
