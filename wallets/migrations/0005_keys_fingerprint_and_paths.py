"""Fingerprint wallet keys (chain code + public key) so one key in two encodings is one key,
and record on each deposit address the key it came from, so a new key can start at index 0."""

import hashlib

from django.db import migrations, models
from django.db.models import Q


def _fingerprint(xpub: str) -> str:
    from bip_utils import Bip32Secp256k1

    key = Bip32Secp256k1.FromExtendedKey(xpub)
    material = key.ChainCode().ToBytes() + key.PublicKey().RawCompressed().ToBytes()
    return hashlib.sha256(material).hexdigest()


def fingerprint_keys(apps, schema_editor):
    # Imported here: every `migrate` loads every migration module, and bip_utils is heavy.
    from bip_utils import Bip32Secp256k1, EthAddrEncoder

    Wallet = apps.get_model("wallets", "Wallet")
    DepositAddress = apps.get_model("wallets", "DepositAddress")
    seen: dict[str, int] = {}
    for wallet in Wallet.objects.all():
        fingerprint = _fingerprint(wallet.xpub)
        if fingerprint in seen:
            raise RuntimeError(
                f"Wallets {seen[fingerprint]} and {wallet.pk} hold the same key in two "
                "encodings; give one of the merchants another key before migrating."
            )
        seen[fingerprint] = wallet.pk
        Wallet.objects.filter(pk=wallet.pk).update(key_fingerprint=fingerprint)
        # Only addresses the current key really derives are known to be its own; earlier
        # keys were not kept, so their addresses stay without a fingerprint.
        account = Bip32Secp256k1.FromExtendedKey(wallet.xpub).DerivePath("0")
        for address in DepositAddress.objects.filter(wallet_id=wallet.pk):
            child = account.ChildKey(address.derivation_index)
            derived = EthAddrEncoder.EncodeKey(child.PublicKey().KeyObject()).lower()
            if derived == address.address:
                DepositAddress.objects.filter(pk=address.pk).update(key_fingerprint=fingerprint)


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0004_transfer_handled_status"),
    ]

    operations = [
        migrations.AddField(
            model_name="wallet",
            name="key_fingerprint",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="depositaddress",
            name="key_fingerprint",
            field=models.CharField(blank=True, default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(fingerprint_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="wallet",
            name="key_fingerprint",
            field=models.CharField(max_length=64, unique=True),
        ),
        migrations.RemoveConstraint(
            model_name="depositaddress",
            name="deposit_unique_index",
        ),
        migrations.AddConstraint(
            model_name="depositaddress",
            constraint=models.UniqueConstraint(
                condition=~Q(key_fingerprint=""),
                fields=("key_fingerprint", "derivation_index"),
                name="deposit_unique_key_index",
            ),
        ),
    ]
