"""Many payers at once on one merchant's wallet, some of whose addresses are taken already."""

import threading

import pytest
from django.db import connection

from checkout.models import Payment
from checkout.services import payment_start
from tests.conftest import require_postgres
from tests.evm import seed_networks
from tests.factories import MerchantFactory, make_invoice
from tests.wallets.test_addresses import ABANDON_ACCOUNT_1_XPUB, ABANDON_XPUB, take
from wallets.addresses import wallet_set
from wallets.models import Asset, DepositAddress, Network


@pytest.mark.django_db(transaction=True)
def test_concurrent_payments_get_distinct_free_addresses_and_none_fails():
    require_postgres()
    seed_networks()
    Network.objects.filter(slug="anvil").update(enabled=True)
    usdc = Asset.objects.get(network__slug="anvil", symbol="USDC")
    merchant, elsewhere = MerchantFactory(), MerchantFactory()
    # The same key was connected to another business before, which handed out these.
    taken = {1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 30}
    take(wallet_set(merchant=elsewhere, xpub=ABANDON_ACCOUNT_1_XPUB), ABANDON_XPUB, *taken)
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    payers = 24
    invoices = [
        make_invoice(merchant, items=[("Seat", "1", "25.00")], issue=True) for _ in range(payers)
    ]
    barrier = threading.Barrier(payers)
    errors: list[BaseException] = []

    def pay(invoice) -> None:
        try:
            barrier.wait()
            payment_start(invoice=invoice, asset=usdc)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=pay, args=(invoice,)) for invoice in invoices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    payments = Payment.objects.filter(invoice__merchant=merchant).select_related("deposit_address")
    assert payments.count() == payers
    indexes = sorted(p.deposit_address.derivation_index for p in payments)
    assert indexes == [i for i in range(100) if i not in taken][:payers]
    assert len({p.deposit_address.address for p in payments}) == payers
    assert DepositAddress.objects.filter(merchant=elsewhere).count() == len(taken)
