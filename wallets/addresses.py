"""Deposit addresses by BIP44 public derivation from a merchant's account xpub.

The `xpub` AddressProvider: m/44'/60'/0' is given, /0/i is derived here. No private key ever
reaches the server. The `forwarder` provider (wallets.forwarders) is chosen per wallet; the
allocation of both lives here.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from types import ModuleType
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from merchants.models import Merchant
from wallets.forwarders import (
    forwarder_address,
    new_salt_seed,
    parse_account_address,
    payment_salt,
)
from wallets.models import DepositAddress, Network, Wallet, WalletMode

if TYPE_CHECKING:
    from bip_utils import Bip32Secp256k1


def _bip() -> ModuleType:
    """bip_utils, imported on first use: importing it loads every coin it knows, some 0.3 s
    of CPU in each process (web and worker processes, every management command), most of
    which never derive an address."""
    import bip_utils

    return bip_utils


HARDENED = 0x80000000
# Addresses looked up at once when skipping taken ones.
LOOKAHEAD = 20
# Version prefixes of private extended keys: such a key must be refused and never stored.
PRIVATE_PREFIXES = ("xprv", "tprv", "yprv", "zprv", "Yprv", "Zprv", "uprv", "vprv", "Ltpv")
# Prefixes other coins and Bitcoin address formats use for public keys.
WRONG_COIN_PREFIXES = (
    "tpub",
    "ypub",
    "zpub",
    "Ypub",
    "Zpub",
    "upub",
    "vpub",
    "Ltub",
    "Mtub",
    "dgub",
)


@dataclass(frozen=True)
class AccountKey:
    xpub: str
    first_address: str
    # What makes the key this key: see key_fingerprint().
    fingerprint: str


def key_fingerprint(key: "Bip32Secp256k1") -> str:
    """SHA-256 of chain code + compressed public key, the two things every address depends on.

    Version bytes, depth, child number and parent fingerprint are labels: an xpub re-encoded
    with other labels derives exactly the same addresses, so it must count as the same key.
    """
    material = key.ChainCode().ToBytes() + key.PublicKey().RawCompressed().ToBytes()
    return hashlib.sha256(material).hexdigest()


def parse_account_xpub(raw: str) -> AccountKey:
    """Check that `raw` is an Ethereum BIP44 account-level extended public key.

    The coin type is not encoded in an xpub, so the first derived address is returned too:
    the merchant compares it with their wallet's first receiving address.
    """
    text = raw.strip()
    if text.startswith(PRIVATE_PREFIXES):
        raise ValidationError(
            "This is a private key. Never paste it anywhere; paste the account's extended "
            "PUBLIC key (it starts with xpub) instead.",
            code="private_key",
        )
    if text.startswith(WRONG_COIN_PREFIXES):
        raise ValidationError(
            "This key belongs to another coin or network. Export the Ethereum account key "
            "(m/44'/60'/0'), which starts with xpub.",
            code="wrong_coin",
        )
    if not text.startswith("xpub"):
        raise ValidationError("An extended public key starts with xpub.", code="not_xpub")
    bip = _bip()
    try:
        key = bip.Bip32Secp256k1.FromExtendedKey(text)
    except (bip.Bip32KeyError, bip.Base58ChecksumError, ValueError):
        raise ValidationError("This is not a valid extended public key.", code="invalid") from None
    if not key.IsPublicOnly():
        raise ValidationError("Private keys are refused.", code="private_key")
    if key.Depth().ToInt() != 3 or key.Index().ToInt() < HARDENED:
        raise ValidationError(
            "Use the account-level key (path m/44'/60'/0'), not a key from another depth.",
            code="wrong_depth",
        )
    return AccountKey(
        xpub=text, first_address=derive_address(text, 0), fingerprint=key_fingerprint(key)
    )


def derive_address(xpub: str, index: int) -> str:
    """Checksummed address of the external chain's `index`-th key (m/44'/60'/0'/0/index)."""
    bip = _bip()
    child = bip.Bip32Secp256k1.FromExtendedKey(xpub).DerivePath(f"0/{index}")
    return bip.EthAddrEncoder.EncodeKey(child.PublicKey().KeyObject())


def _derive_range(xpub: str, start: int, count: int) -> list[tuple[int, str]]:
    """(index, lower-case address) for `count` indexes from `start`, deriving /0 once."""
    bip = _bip()
    chain = bip.Bip32Secp256k1.FromExtendedKey(xpub).ChildKey(0)
    return [
        (i, bip.EthAddrEncoder.EncodeKey(chain.ChildKey(i).PublicKey().KeyObject()).lower())
        for i in range(start, start + count)
    ]


def _free_addresses(xpub: str, start: int) -> Iterator[tuple[int, str]]:
    """The key's addresses from index `start` on, minus those already in DepositAddress.

    An address can be taken although this wallet never handed it out: the same key was
    connected to another business before, or an earlier key of this one. Looked up a batch
    at a time, so a long run of taken addresses costs one query per batch, not per address.
    """
    index = start
    while True:
        batch = _derive_range(xpub, index, LOOKAHEAD)
        taken = set(
            DepositAddress.objects.filter(address__in=[a for _, a in batch]).values_list(
                "address", flat=True
            )
        )
        yield from ((i, a) for i, a in batch if a not in taken)
        index += LOOKAHEAD


def wallet_next_addresses(*, wallet: Wallet, count: int = 5) -> list[tuple[int, str]]:
    """The (index, checksummed address) pairs the next payments will really get."""
    free = islice(_free_addresses(wallet.xpub, wallet.next_index), count)
    return [(index, derive_address(wallet.xpub, index)) for index, _ in free]


def wallet_set(*, merchant: Merchant, xpub: str, is_demo: bool = False) -> Wallet:
    """Attach or replace the merchant's xpub. Addresses already handed out stay valid.

    A key is refused when another business holds it, in whatever encoding: the unique
    fingerprint decides, so two businesses racing for one key cannot both get it.
    """
    account = parse_account_xpub(xpub)
    taken = ValidationError(
        "This key is already connected to another business. Each business needs a wallet "
        "account of its own: export the key of another account (m/44'/60'/1', …) or of "
        "another wallet.",
        code="taken",
    )
    try:
        with transaction.atomic():
            wallet = Wallet.objects.select_for_update().filter(merchant=merchant).first()
            if wallet is None:
                return Wallet.objects.create(
                    merchant=merchant,
                    mode=WalletMode.XPUB,
                    xpub=account.xpub,
                    key_fingerprint=account.fingerprint,
                    first_address=account.first_address,
                    is_demo=is_demo,
                )
            if wallet.mode != WalletMode.XPUB:
                # Back to (or newly in) xpub mode: forwarder addresses handed out stay valid.
                wallet.mode = WalletMode.XPUB
                wallet.save(update_fields=["mode"])
            if wallet.key_fingerprint != account.fingerprint:
                # A new key starts at index 0. Addresses of a key used here before are in
                # DepositAddress and are skipped by the allocation, never handed out again.
                wallet.xpub, wallet.key_fingerprint = account.xpub, account.fingerprint
                wallet.first_address, wallet.is_demo = account.first_address, is_demo
                wallet.next_index = 0
                wallet.save(
                    update_fields=[
                        "xpub",
                        "key_fingerprint",
                        "first_address",
                        "is_demo",
                        "next_index",
                    ]
                )
            return wallet
    except IntegrityError:
        others = Wallet.objects.filter(key_fingerprint=account.fingerprint).exclude(
            merchant=merchant
        )
        if others.exists():
            raise taken from None
        # Two first saves of one merchant raced on the merchant's row; the other one won.
        return wallet_set(merchant=merchant, xpub=xpub, is_demo=is_demo)


class ForwarderUnavailable(Exception):
    """No forwarder deposit address can be made on this network (no factory deployed)."""


def wallet_set_account(
    *, merchant: Merchant, account_address: str, is_demo: bool = False
) -> Wallet:
    """Switch the merchant to "account address + forwarders", or change the account address.

    Deposit addresses handed out keep the destination they were derived with: only addresses
    made from now on forward to the new account. The salt index never restarts, so no
    address is ever made twice.
    """
    try:
        address = parse_account_address(account_address)
    except ValueError as error:
        raise ValidationError(str(error), code="invalid") from None
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().filter(merchant=merchant).first()
        if wallet is None:
            try:
                with transaction.atomic():
                    return Wallet.objects.create(
                        merchant=merchant,
                        mode=WalletMode.FORWARDER,
                        account_address=address,
                        salt_seed=new_salt_seed(),
                        is_demo=is_demo,
                    )
            except IntegrityError:
                # Two first saves of one merchant raced; the other one won: update it.
                wallet = Wallet.objects.select_for_update().get(merchant=merchant)
        wallet.mode, wallet.account_address = WalletMode.FORWARDER, address
        wallet.salt_seed = wallet.salt_seed or new_salt_seed()
        wallet.is_demo = is_demo
        wallet.save(update_fields=["mode", "account_address", "salt_seed", "is_demo"])
        return wallet


def wallet_next_forwarders(*, wallet: Wallet, factory: str, count: int = 3) -> list[str]:
    """The next forwarder deposit addresses under `factory`, for the settings page."""
    return [
        forwarder_address(
            factory=factory,
            destination=wallet.account_address,
            salt=payment_salt(seed=wallet.salt_seed, index=index),
        )
        for index in range(wallet.next_salt_index, wallet.next_salt_index + count)
    ]


def deposit_address_allocate(
    *, merchant: Merchant, network: Network | None = None
) -> DepositAddress:
    """The next free address of the merchant's wallet, never handed out twice.

    The wallet row is locked while the index is taken and the address row inserted, so
    concurrent payments queue here instead of sharing an address. An address that is taken
    already (see `_free_addresses`) is skipped: the payment gets the next one, never an error.
    A forwarder wallet needs the network: the address depends on that network's factory.
    """
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(merchant=merchant)
        if wallet.uses_forwarders:
            return _forwarder_allocate(wallet, network)
        for index, address in _free_addresses(wallet.xpub, wallet.next_index):
            try:
                # A savepoint: should the address be taken between the look-up and here,
                # the unique index says so and the next one is tried.
                with transaction.atomic():
                    deposit = DepositAddress.objects.create(
                        wallet=wallet,
                        merchant=merchant,
                        key_fingerprint=wallet.key_fingerprint,
                        derivation_index=index,
                        address=address,
                    )
            except IntegrityError:
                continue
            wallet.next_index = index + 1
            wallet.save(update_fields=["next_index"])
            return deposit
    raise AssertionError("unreachable: _free_addresses never ends")


def _forwarder_allocate(wallet: Wallet, network: Network | None) -> DepositAddress:
    factory = network.deposit_factory if network is not None else ""
    if not factory:
        where = network.name if network is not None else "this network"
        raise ForwarderUnavailable(
            f"Payments on {where} are not possible yet: the deposit factory is not deployed "
            "there. The operator deploys it from the network's admin page."
        )
    index = wallet.next_salt_index
    salt = payment_salt(seed=wallet.salt_seed, index=index)
    deposit = DepositAddress.objects.create(
        wallet=wallet,
        merchant=wallet.merchant,
        derivation_index=index,
        destination=wallet.account_address,
        salt="0x" + salt.hex(),
        factory=factory,
        address=forwarder_address(factory=factory, destination=wallet.account_address, salt=salt),
    )
    wallet.next_salt_index = index + 1
    wallet.save(update_fields=["next_salt_index"])
    return deposit
