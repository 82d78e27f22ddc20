import threading

import pytest
from bip_utils import Bip32KeyData, Bip32Secp256k1
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import require_postgres
from tests.factories import MerchantFactory
from wallets.addresses import (
    HARDENED,
    deposit_address_allocate,
    derive_address,
    parse_account_xpub,
    wallet_next_addresses,
    wallet_set,
)
from wallets.chain import checksum_address
from wallets.models import DepositAddress, Wallet

# BIP39 test mnemonic "abandon (11 times) about": the account key m/44'/60'/0' and its first address,
# as every Ethereum wallet derives them.
ABANDON_XPUB = "xpub6DCoCpSuQZB2jawqnGMEPS63ePKWkwWPH4TU45Q7LPXWuNd8TMtVxRrgjtEshuqpK3mdhaWHPFsBngh5GFZaM6si3yZdUsT8ddYM3PwnATt"
ABANDON_FIRST = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
ABANDON_XPRV_PREFIX = "xprv9zDS"
# The same mnemonic's second account, m/44'/60'/1': another key of the same person.
ABANDON_ACCOUNT_1_XPUB = "xpub6DCoCpSuQZB2k9PnGSMK9tinTK8kx3hcv7F4BWwhs5N2wnwGiLg17r9J7j2JcYP9gkip3sC87J1F99YxeBHGuFMg6ejA8qQEKSuzzaKvqBR"
ABANDON_ACCOUNT_1_FIRST = "0x78839F6054d7ed13918bAe0473BA31b1Ca9D7265"


def reencode(xpub: str, *, parent: bytes = b"\0\0\0\0", index: int = HARDENED + 7, depth=3) -> str:
    """The same chain code and public key under other labels: derives the same addresses."""
    key = Bip32Secp256k1.FromExtendedKey(xpub)
    data = Bip32KeyData(depth=depth, index=index, chain_code=key.ChainCode(), parent_fprint=parent)
    return Bip32Secp256k1.FromPublicKey(key.PublicKey().KeyObject(), data).PublicKey().ToExtended()


def take(wallet: Wallet, xpub: str, *indexes: int) -> None:
    """Record `xpub`'s addresses at `indexes` as handed out by `wallet`, as if an earlier key
    or another business had used them."""
    for index in indexes:
        DepositAddress.objects.create(
            wallet=wallet,
            merchant=wallet.merchant,
            key_fingerprint="",
            derivation_index=index,
            address=derive_address(xpub, index).lower(),
        )


def test_first_address_matches_the_known_test_vector():
    assert derive_address(ABANDON_XPUB, 0) == ABANDON_FIRST
    assert parse_account_xpub(ABANDON_XPUB).first_address == ABANDON_FIRST


def test_second_account_key_derives_its_own_known_first_address():
    assert derive_address(ABANDON_ACCOUNT_1_XPUB, 0) == ABANDON_ACCOUNT_1_FIRST


def test_checksum_address_is_eip55():
    assert checksum_address(ABANDON_FIRST.lower()) == ABANDON_FIRST


def test_reencoded_key_has_another_text_but_the_same_fingerprint_and_addresses():
    other = reencode(ABANDON_XPUB, parent=b"\x12\x34\x56\x78", index=HARDENED + 3)
    assert other != ABANDON_XPUB
    original, same = parse_account_xpub(ABANDON_XPUB), parse_account_xpub(other)
    assert same.fingerprint == original.fingerprint
    assert same.first_address == ABANDON_FIRST
    assert parse_account_xpub(ABANDON_ACCOUNT_1_XPUB).fingerprint != original.fingerprint


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
@pytest.mark.parametrize(
    "encoding",
    [
        {"parent": b"\0\0\0\0"},
        {"parent": b"\xde\xad\xbe\xef", "index": HARDENED},
        {"index": HARDENED + 0x7FFFFFFF},
    ],
    ids=["parent-fingerprint", "parent-and-child-number", "child-number"],
)
def test_the_same_key_in_another_encoding_is_refused_for_a_second_merchant(acme, globex, encoding):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    with pytest.raises(ValidationError, match="another business") as caught:
        wallet_set(merchant=globex, xpub=reencode(ABANDON_XPUB, **encoding))
    assert caught.value.code == "taken"
    assert not Wallet.objects.filter(merchant=globex).exists()


@pytest.mark.django_db
def test_a_reencoding_with_other_depth_is_refused_and_not_stored(acme, globex):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    with pytest.raises(ValidationError) as caught:
        wallet_set(merchant=globex, xpub=reencode(ABANDON_XPUB, depth=0, index=0))
    assert caught.value.code == "wrong_depth"
    assert list(Wallet.objects.values_list("merchant__name", flat=True)) == ["Acme Tools"]


@pytest.mark.django_db
def test_the_same_key_reencoded_for_the_same_merchant_changes_nothing(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    deposit_address_allocate(merchant=acme)
    wallet = wallet_set(merchant=acme, xpub=reencode(ABANDON_XPUB))
    assert (wallet.xpub, wallet.next_index) == (ABANDON_XPUB, 1)


@pytest.mark.django_db
def test_a_key_given_up_by_one_business_can_be_connected_by_another(acme, globex):
    wallet_set(merchant=globex, xpub=ABANDON_XPUB)
    wallet_set(merchant=globex, xpub=ABANDON_ACCOUNT_1_XPUB)
    assert wallet_set(merchant=acme, xpub=ABANDON_XPUB).first_address == ABANDON_FIRST


@pytest.mark.django_db
def test_a_new_key_starts_at_index_zero(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    for _ in range(3):
        deposit_address_allocate(merchant=acme)
    wallet = wallet_set(merchant=acme, xpub=ABANDON_ACCOUNT_1_XPUB)
    assert wallet.next_index == 0
    first = deposit_address_allocate(merchant=acme)
    assert (first.derivation_index, first.address) == (0, ABANDON_ACCOUNT_1_FIRST.lower())
    assert first.key_fingerprint == parse_account_xpub(ABANDON_ACCOUNT_1_XPUB).fingerprint


@pytest.mark.django_db
def test_going_back_to_an_earlier_key_skips_the_addresses_it_handed_out(acme):
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    used = [deposit_address_allocate(merchant=acme).address for _ in range(3)]
    wallet_set(merchant=acme, xpub=ABANDON_ACCOUNT_1_XPUB)
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    again = deposit_address_allocate(merchant=acme)
    assert again.derivation_index == 3
    assert again.address not in used
    assert Wallet.objects.get(merchant=acme).next_index == 4


@pytest.mark.django_db
def test_an_address_taken_by_another_business_is_skipped_not_failed(acme, globex):
    # Globex used this key before and gave it up; its addresses 0, 1 and 3 are Globex's.
    globex_wallet = wallet_set(merchant=globex, xpub=ABANDON_XPUB)
    take(globex_wallet, ABANDON_XPUB, 0, 1, 3)
    wallet_set(merchant=globex, xpub=ABANDON_ACCOUNT_1_XPUB)
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)

    indexes = [deposit_address_allocate(merchant=acme).derivation_index for _ in range(3)]

    assert indexes == [2, 4, 5]
    assert DepositAddress.objects.filter(merchant=globex).count() == 3


@pytest.mark.django_db
def test_the_next_addresses_shown_are_the_ones_handed_out(acme, globex):
    other = wallet_set(merchant=globex, xpub=ABANDON_ACCOUNT_1_XPUB)
    take(other, ABANDON_XPUB, 1, 2, 4)
    wallet = wallet_set(merchant=acme, xpub=ABANDON_XPUB)

    shown = wallet_next_addresses(wallet=wallet, count=4)
    handed_out = [deposit_address_allocate(merchant=acme) for _ in range(4)]

    assert [i for i, _ in shown] == [0, 3, 5, 6]
    assert [(d.derivation_index, d.address) for d in handed_out] == [
        (i, a.lower()) for i, a in shown
    ]
    assert shown[0][1] == ABANDON_FIRST


@pytest.mark.django_db
def test_a_long_run_of_taken_addresses_costs_a_query_per_batch_not_per_address(acme, globex):
    other = wallet_set(merchant=globex, xpub=ABANDON_ACCOUNT_1_XPUB)
    take(other, ABANDON_XPUB, *range(45))
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    with CaptureQueriesContext(connection) as queries:
        deposit = deposit_address_allocate(merchant=acme)
    assert deposit.derivation_index == 45
    lookups = [q for q in queries.captured_queries if '"address" IN' in q["sql"]]
    assert len(lookups) == 3


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


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocation_skips_taken_addresses_and_never_fails():
    require_postgres()
    merchant, elsewhere = MerchantFactory(), MerchantFactory()
    # The key's addresses at these indexes are someone else's already.
    taken = {0, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 40}
    take(wallet_set(merchant=elsewhere, xpub=ABANDON_ACCOUNT_1_XPUB), ABANDON_XPUB, *taken)
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
    mine = DepositAddress.objects.filter(merchant=merchant)
    indices = sorted(mine.values_list("derivation_index", flat=True))
    free = [i for i in range(200) if i not in taken]
    assert indices == free[: threads * per_thread]
    assert mine.values("address").distinct().count() == threads * per_thread
    assert DepositAddress.objects.filter(merchant=elsewhere).count() == len(taken)
