"""Chains, deposit addresses, transfers seen on chain, and the double-entry ledger.

This app knows nothing of invoices or payments: the checkout app asks it for addresses and
transfers and posts to its ledger.
"""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from merchants.models import Merchant

# On-chain integers up to 2**256 fit in 78 digits; never a BigIntegerField (it overflows at
# about 9.2 ETH in wei).
BASE_UNIT_DIGITS = 78
# Ledger amounts in major units: enough decimals for an 18-decimal token.
LEDGER_DIGITS, LEDGER_PLACES = 78, 18


class NetworkQuerySet(models.QuerySet["Network"]):
    def active(self) -> "NetworkQuerySet":
        """Networks payments can use: enabled, and a node to watch them is configured."""
        networks = [n.pk for n in self.filter(enabled=True) if n.effective_rpc_url]
        return self.filter(pk__in=networks)


class Network(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=60)
    chain_id = models.PositiveBigIntegerField(unique=True)
    native_symbol = models.CharField(max_length=12, default="ETH")
    rpc_url = models.CharField(
        "RPC URL", max_length=500, blank=True, help_text="CHAIN_<SLUG>_RPC_URL overrides this."
    )
    confirmations = models.PositiveIntegerField(default=12)
    poll_interval_seconds = models.PositiveIntegerField(default=15)
    max_block_range = models.PositiveIntegerField(
        default=2000, help_text="Largest eth_getLogs range asked at once; halved when refused."
    )
    explorer_tx_url = models.CharField(
        "explorer URL for transactions",
        max_length=300,
        blank=True,
        help_text="With {tx} where the transaction hash goes.",
    )
    enabled = models.BooleanField(default=True)
    is_dev = models.BooleanField(
        default=False, help_text="A local development chain; never enable in production."
    )
    # What the last scan learned about the node, shown in admin.
    rpc_ok = models.BooleanField(null=True, editable=False)
    rpc_error = models.TextField(blank=True, editable=False)
    rpc_checked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = NetworkQuerySet.as_manager()

    class Meta:
        ordering = ["is_dev", "name"]

    def __str__(self) -> str:
        return self.name

    def _override(self, knob: str):
        return settings.CHAIN_OVERRIDES.get(self.slug, {}).get(knob)

    @property
    def effective_rpc_url(self) -> str:
        return str(self._override("rpc_url") or self.rpc_url)

    @property
    def effective_confirmations(self) -> int:
        return int(self._override("confirmations") or self.confirmations)

    @property
    def effective_poll_seconds(self) -> int:
        return int(self._override("poll_seconds") or self.poll_interval_seconds)

    @property
    def effective_max_block_range(self) -> int:
        return int(self._override("max_block_range") or self.max_block_range)

    def tx_url(self, tx_hash: str) -> str:
        template = str(self._override("explorer_tx_url") or self.explorer_tx_url)
        return template.replace("{tx}", tx_hash) if template else ""


class Asset(models.Model):
    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="assets")
    symbol = models.CharField(max_length=12)
    name = models.CharField(max_length=60)
    decimals = models.PositiveSmallIntegerField()
    # Lower-case 0x address of the token contract; empty for the network's native coin.
    contract_address = models.CharField(max_length=42, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["network", "symbol"]
        constraints = [
            models.UniqueConstraint(fields=["network", "symbol"], name="asset_unique_symbol"),
            models.UniqueConstraint(
                fields=["network", "contract_address"],
                condition=~Q(contract_address=""),
                name="asset_unique_contract",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol} on {self.network}"

    @property
    def is_native(self) -> bool:
        return not self.contract_address

    def to_major(self, base_units: int | Decimal) -> Decimal:
        return Decimal(int(base_units)).scaleb(-self.decimals)

    def clean(self) -> None:
        address = self.contract_address.strip().lower()
        if address and (len(address) != 42 or not address.startswith("0x")):
            raise ValidationError({"contract_address": "Enter a 0x-prefixed 20-byte address."})
        self.contract_address = address


class Wallet(models.Model):
    """A merchant's account-level extended public key (BIP44 m/44'/60'/0').

    Only the public key is stored: the server can derive deposit addresses but never spend.
    """

    merchant = models.OneToOneField(Merchant, on_delete=models.CASCADE, related_name="wallet")
    xpub = models.CharField(max_length=120, unique=True)
    # SHA-256 of chain code + public key: what makes two xpubs the same key, whatever their
    # version, depth, child number or parent fingerprint say. One key, one business.
    key_fingerprint = models.CharField(max_length=64, unique=True)
    first_address = models.CharField(max_length=42)
    # The next derivation index of the current key; taken under a row lock, so addresses are
    # never shared. A new key starts again at 0.
    next_index = models.PositiveIntegerField(default=0)
    is_demo = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.merchant} wallet{' (demo)' if self.is_demo else ''}"

    @property
    def key_id(self) -> str:
        """A short name of the key for people: the start of its fingerprint."""
        return self.key_fingerprint[:8]


# The external (receiving) chain of the account key: m/44'/60'/0' is the merchant's, /0/i ours.
DERIVATION_PREFIX = "m/44'/60'/0'/0/"


def derivation_path(index: int) -> str:
    return f"{DERIVATION_PREFIX}{index}"


class DepositAddress(models.Model):
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="addresses")
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, related_name="deposit_addresses"
    )
    # The key the address was derived from (Wallet.key_fingerprint at the time): a wallet may
    # change keys, and each key's indexes start at 0. Empty for addresses made before keys were
    # fingerprinted, whose key is no longer known.
    key_fingerprint = models.CharField(max_length=64, blank=True)
    derivation_index = models.PositiveIntegerField()
    # Lower-case, so the scanner matches log addresses with one indexed equality lookup.
    # Every address ever handed out stays matched: money sent late is still recorded. Unique
    # across merchants too: an address that is taken is skipped, never handed out again.
    address = models.CharField(max_length=42, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["key_fingerprint", "derivation_index"],
                condition=~Q(key_fingerprint=""),
                name="deposit_unique_key_index",
            )
        ]

    def __str__(self) -> str:
        return self.address

    @property
    def derivation_path(self) -> str:
        return derivation_path(self.derivation_index)


class ChainCursor(models.Model):
    """Where the scanner of a network resumes. Locked with SKIP LOCKED: one scanner at a time."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="cursor")
    next_block = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.network} @ {self.next_block}"


class TransferStatus(models.TextChoices):
    EXECUTED = "executed", "Executed (mined, confirming)"
    CONFIRMED = "confirmed", "Confirmed"
    ORPHANED = "orphaned", "Orphaned by a reorg"


class Transfer(models.Model):
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="transfers")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="transfers")
    deposit_address = models.ForeignKey(
        DepositAddress, on_delete=models.PROTECT, related_name="transfers"
    )
    tx_hash = models.CharField(max_length=66)
    # The log's index in its block; -1 for a native-coin transfer (a transaction, not a log).
    log_index = models.IntegerField()
    block_number = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=66)
    from_address = models.CharField(max_length=42)
    to_address = models.CharField(max_length=42)
    amount = models.DecimalField(max_digits=BASE_UNIT_DIGITS, decimal_places=0)
    status = models.CharField(
        max_length=16, choices=TransferStatus.choices, default=TransferStatus.EXECUTED
    )
    confirmations = models.PositiveIntegerField(default=0)
    # The status the consumer of transfers (checkout's settlement) last finished handling.
    # Anything where it differs from `status` still has to be handled: a crash between scan
    # and settlement delays a deposit, it never loses it.
    handled_status = models.CharField(max_length=16, blank=True, db_index=True)
    seen_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    orphaned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-block_number", "-log_index"]
        constraints = [
            models.UniqueConstraint(
                fields=["network", "tx_hash", "log_index"], name="transfer_unique_log"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="transfer_amount_not_negative"),
        ]
        indexes = [
            models.Index(fields=["network", "status"], name="transfer_network_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.tx_hash}:{self.log_index}"

    @property
    def amount_major(self) -> Decimal:
        return self.asset.to_major(self.amount)

    @property
    def explorer_url(self) -> str:
        return self.network.tx_url(self.tx_hash)


# The ledger ------------------------------------------------------------------------------


class AccountKind(models.TextChoices):
    MERCHANT = "merchant", "Merchant balance"
    HOLDINGS = "holdings", "Holdings at deposit addresses"
    FX = "fx", "Currency exchange"
    FEES = "fees", "Platform fees"
    OFF_LEDGER = "external", "Outside world"


# Sign convention: a positive amount is a credit, a negative one a debit. Credit-normal accounts
# (what we owe merchants, fees earned) read naturally; holdings are debit-normal, so a holding of
# 100 USDC is stored as -100 and shown as 100.
DEBIT_NORMAL_KINDS = frozenset({AccountKind.HOLDINGS})
# Merchant balances are money owed to the merchant: they can never go below zero. They are
# also the only balances cached in Balance rows (see ledger._move_balances).
NON_NEGATIVE_KINDS = frozenset({AccountKind.MERCHANT})
CACHED_KINDS = NON_NEGATIVE_KINDS


class LedgerAccount(models.Model):
    code = models.CharField(max_length=120, unique=True)
    kind = models.CharField(max_length=16, choices=AccountKind.choices)
    merchant = models.ForeignKey(
        Merchant, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    name = models.CharField(max_length=120)

    def __str__(self) -> str:
        return self.code

    def natural(self, amount: Decimal) -> Decimal:
        """The amount as a person reads it for this kind of account."""
        return -amount if self.kind in DEBIT_NORMAL_KINDS else amount


class ImmutableQuerySet(models.QuerySet):
    def update(self, **kwargs):  # type: ignore[override]
        raise PermissionError("Ledger rows are append-only; post a reversal instead.")

    def delete(self):  # type: ignore[override]
        raise PermissionError("Ledger rows are append-only; post a reversal instead.")


class AppendOnly(models.Model):
    objects = ImmutableQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise PermissionError("Ledger rows are append-only; post a reversal instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):  # type: ignore[override]
        raise PermissionError("Ledger rows are append-only; post a reversal instead.")


class LedgerTransaction(AppendOnly):
    kind = models.CharField(max_length=40)
    reference = models.CharField(max_length=120, blank=True, db_index=True)
    # The same business event always carries the same key, so a retried posting is a no-op.
    idempotency_key = models.CharField(max_length=200, unique=True)
    memo = models.TextField(blank=True)
    reverses = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="reversed_by"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key}"


class LedgerEntry(AppendOnly):
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    currency = models.CharField(max_length=16)
    amount = models.DecimalField(max_digits=LEDGER_DIGITS, decimal_places=LEDGER_PLACES)

    class Meta:
        ordering = ["pk"]
        indexes = [models.Index(fields=["account", "currency"], name="entry_account_idx")]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="entry_not_zero")]

    def __str__(self) -> str:
        return f"{self.account} {self.amount} {self.currency}"


class Balance(models.Model):
    """Cached sum of an account's entries in one currency, updated in the posting's transaction."""

    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="balances")
    currency = models.CharField(max_length=16)
    amount = models.DecimalField(
        max_digits=LEDGER_DIGITS, decimal_places=LEDGER_PLACES, default=Decimal(0)
    )
    non_negative = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "currency"], name="balance_unique"),
            models.CheckConstraint(
                condition=Q(non_negative=False) | Q(amount__gte=0), name="balance_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account} {self.amount} {self.currency}"
