import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from tests.conftest import require_postgres
from tests.factories import MerchantFactory
from wallets.addresses import (
    deposit_address_allocate,
    derive_address,
    parse_account_xpub,
    wallet_set,
)
from wallets.models import DepositAddress, Wallet

# BIP39 test mnemonic "abandon (11 times) about": the account key m/44'/60'/0' and its first address,
# as every Ethereum wallet derives them.
ABANDON_XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
ABANDON_FIRST = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
ABANDON_XPRV_PREFIX = "xprv9zDS"


def test_first_address_matches_the_known_test_vector():
    assert derive_address(ABANDON_XPUB, 0) == ABANDON_FIRST
    assert parse_account_xpub(ABANDON_XPUB).first_address == ABANDON_FIRST


def test_addresses_differ_by_index():
    addresses = {derive_address(ABANDON_XPUB, i) for i in range(20)}
    assert len(addresses) == 20


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (ABANDON_XPRV_PREFIX + "x" * 103, "private_key"),
        (
            "tpubD6NzVbkrYhZ4XgiXtGrdW5XDAPFCL9h7we1vwNCpn8tGbBcgfVYjXyhWo4E1xkh56hjod1RhGjxbaTLV3X4FyWuejifB9jusQ46QzG87VKp",
            "wrong_coin",
        ),
        (
            "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs",
            "wrong_coin",
        ),
        ("hello", "not_xpub"),
        ("xpub" + "1" * 107, "invalid"),
        # The master public key of the same mnemonic: right format, wrong depth.
        (
            "xpub661MyMwAqRbcFkPHucMnrGNzDwb6teAX1RbKQmqtEF8kK3Z7LZ59qafCjB9eCRLiTVG3uxBxgKvRgbubRhqSKXnGGb1aoaqLrpMBDrVxga8",
            "wrong_depth",
        ),
    ],
)
def test_bad_extended_keys_are_refused_with_a_reason(raw, code):
    with pytest.raises(ValidationError) as caught:
        parse_account_xpub(raw)
    assert caught.value.code == code


@pytest.mark.django_db
def test_private_key_is_never_stored(acme):
    with pytest.raises(ValidationError):
        wallet_set(merchant=acme, xpub=ABANDON_XPRV_PREFIX + "abc")
    assert not Wallet.objects.exists()


@pytest.mark.django_db
def test_an_xpub_belongs_to_one_merchant(acme, globex):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    with pytest.raises(ValidationError, match="another business"):
        wallet_set(merchant=globex, xpub=ABANDON_XPUB)


@pytest.mark.django_db
def test_allocation_hands_out_consecutive_lowercase_addresses(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    first = deposit_address_allocate(merchant=acme)
    second = deposit_address_allocate(merchant=acme)
    assert (first.derivation_index, second.derivation_index) == (0, 1)
    assert first.address == ABANDON_FIRST.lower()
    assert second.address == derive_address(ABANDON_XPUB, 1).lower()


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocation_never_shares_an_address():
    require_postgres()
    merchant = MerchantFactory()
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    threads, per_thread = 8, 10
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def allocate() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                deposit_address_allocate(merchant=merchant)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=allocate) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    indices = sorted(DepositAddress.objects.values_list("derivation_index", flat=True))
    assert indices == list(range(threads * per_thread))
    assert DepositAddress.objects.values("address").distinct().count() == threads * per_thread
