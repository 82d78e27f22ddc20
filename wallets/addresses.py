"""Deposit addresses by BIP44 public derivation from a merchant's account xpub.

The `xpub` AddressProvider: m/44'/60'/0' is given, /0/i is derived here. No private key ever
reaches the server; CREATE2 forwarders can be a second provider later.
"""

from dataclasses import dataclass

from bip_utils import Base58ChecksumError, Bip32KeyError, Bip32Secp256k1, EthAddrEncoder
from django.core.exceptions import ValidationError
from django.db import transaction

from merchants.models import Merchant
from wallets.models import DepositAddress, Wallet

HARDENED = 0x80000000
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
    try:
        key = Bip32Secp256k1.FromExtendedKey(text)
    except (Bip32KeyError, Base58ChecksumError, ValueError):
        raise ValidationError("This is not a valid extended public key.", code="invalid") from None
    if not key.IsPublicOnly():
        raise ValidationError("Private keys are refused.", code="private_key")
    if key.Depth().ToInt() != 3 or key.Index().ToInt() < HARDENED:
        raise ValidationError(
            "Use the account-level key (path m/44'/60'/0'), not a key from another depth.",
            code="wrong_depth",
        )
    return AccountKey(xpub=text, first_address=derive_address(text, 0))


def derive_address(xpub: str, index: int) -> str:
    """Checksummed address of the external chain's `index`-th key (m/44'/60'/0'/0/index)."""
    child = Bip32Secp256k1.FromExtendedKey(xpub).DerivePath(f"0/{index}")
    return EthAddrEncoder.EncodeKey(child.PublicKey().KeyObject())


def wallet_set(*, merchant: Merchant, xpub: str, is_demo: bool = False) -> Wallet:
    """Attach or replace the merchant's xpub. Addresses already handed out stay valid."""
    account = parse_account_xpub(xpub)
    if Wallet.objects.filter(xpub=account.xpub).exclude(merchant=merchant).exists():
        raise ValidationError("This key is already used by another business.", code="taken")
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().filter(merchant=merchant).first()
        if wallet is None:
            return Wallet.objects.create(
                merchant=merchant,
                xpub=account.xpub,
                first_address=account.first_address,
                is_demo=is_demo,
            )
        if wallet.xpub != account.xpub:
            # The index sequence continues across keys, so switching back to an earlier key
            # can never hand out one of its addresses a second time.
            wallet.xpub, wallet.first_address = account.xpub, account.first_address
            wallet.is_demo = is_demo
            wallet.save(update_fields=["xpub", "first_address", "is_demo"])
        return wallet


def deposit_address_allocate(*, merchant: Merchant) -> DepositAddress:
    """The next unused address of the merchant's wallet, never handed out twice.

    The wallet row is locked while the index is taken and the address row inserted, so
    concurrent payments queue here instead of sharing an address.
    """
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(merchant=merchant)
        index = wallet.next_index
        address = derive_address(wallet.xpub, index).lower()
        wallet.next_index = index + 1
        wallet.save(update_fields=["next_index"])
        return DepositAddress.objects.create(
            wallet=wallet, merchant=merchant, derivation_index=index, address=address
        )
