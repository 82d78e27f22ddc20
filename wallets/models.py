"""Chains, deposit addresses, transfers seen on chain, and the double-entry ledger.

This app knows nothing of invoices or payments: the checkout app asks it for addresses and
transfers and posts to its ledger.
"""

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from merchants.fields import AmountField
from merchants.models import Merchant

# On-chain integers up to 2**256 fit in 78 digits; never a BigIntegerField (it overflows at
# about 9.2 ETH in wei).
BASE_UNIT_DIGITS = 78
# Ledger amounts in major units: enough decimals for an 18-decimal token.
LEDGER_DIGITS, LEDGER_PLACES = 78, 18
# Multicall3's address on most EVM chains; the dev setup places it there on anvil too.
MULTICALL3_ADDRESS = "0xca11bde05977b3631167028862be2a173976ca11"
# tx_hash of a native deposit found only by balance reconciliation, on a node without tracing:
# "balance:<block>:<address>", with log_index -2. Unique per block and address like a real hash.
BALANCE_TX_PREFIX = "balance:"


class NetworkQuerySet(models.QuerySet["Network"]):
    def active(self) -> "NetworkQuerySet":
        """Networks payments can use: enabled, and a node to watch them is configured; a dev
        chain only where dev chains are allowed (DEBUG)."""
        candidates = self.filter(enabled=True)
        if not settings.CHAIN_DEV_NETWORKS_ALLOWED:
            candidates = candidates.filter(is_dev=False)
        networks = [n.pk for n in candidates if n.effective_rpc_url]
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
    multicall_address = models.CharField(
        "Multicall3 address",
        max_length=42,
        blank=True,
        default=MULTICALL3_ADDRESS,
        help_text="Used to reconcile native deposit balances in batches (ETH sent by contracts). "
        "Empty turns that off. The setting CHAIN_{SLUG}_MULTICALL_ADDRESS overrides this.",
    )
    # The install's DepositFactory on this network (forwarder deposit addresses); empty
    # until an operator deploys it (admin) or the dev setup does.
    deposit_factory = models.CharField(
        "deposit factory address",
        max_length=42,
        blank=True,
        help_text="DepositFactory for forwarder deposit addresses. Deploy it from the network's "
        "admin page with your browser wallet.",
    )
    # What the last scan learned about the node, shown in admin.
    rpc_ok = models.BooleanField(null=True, editable=False)
    rpc_error = models.TextField(blank=True, editable=False)
    rpc_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Why the watcher refuses this network right now (wrong chain id, a dev chain outside
    # DEBUG); empty while it watches. Rechecked every round.
    watch_halted = models.CharField(max_length=300, blank=True, editable=False)
    # One watch round per network at a time: a lease with an expiry, so a killed worker holds
    # it for a while, never for ever. Every write of a round first renews the lease by its
    # token, so a worker that lost it writes nothing.
    round_token = models.CharField(max_length=32, blank=True, editable=False)
    round_lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    # A round is waiting in the broker: beat queues no other until it starts (or this expires).
    round_queued_until = models.DateTimeField(null=True, blank=True, editable=False)

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
        # Never below 1: a transfer counts once it is in a block the node returns, not before.
        return max(1, int(self._override("confirmations") or self.confirmations))

    @property
    def effective_multicall_address(self) -> str:
        return str(self._override("multicall_address") or self.multicall_address).lower()

    def clean(self) -> None:
        if not self.is_dev and self.confirmations < 1:
            raise ValidationError({"confirmations": "A real network needs at least 1."})
        address = self.multicall_address.strip().lower()
        if address and (len(address) != 42 or not address.startswith("0x")):
            raise ValidationError({"multicall_address": "Enter a 0x-prefixed 20-byte address."})
        self.multicall_address = address

    @property
    def relayer_key(self) -> str:
        """The gas-only auto-claim key (CHAIN_<SLUG>_RELAYER_KEY): environment only, never
        stored. It pays gas for factory claims, whose destination it cannot choose."""
        return str(self._override("relayer_key") or "")

    @property
    def auto_claim_usd(self) -> int:
        return int(self._override("auto_claim_usd") or 0)

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


class WalletMode(models.TextChoices):
    FORWARDER = "forwarder", "Account address + forwarders"
    XPUB = "xpub", "Extended public key (xpub)"


class Wallet(models.Model):
    """Where a merchant's money goes, in one of two modes, and never a key that can spend.

    `forwarder` (the default): an account address; each payment gets a keyless CREATE2
    forwarder address whose funds can only be claimed to the account it was made for.
    `xpub`: the account-level extended public key (BIP44 m/44'/60'/0'), each payment an
    address of the merchant's own wallet.
    """

    merchant = models.OneToOneField(Merchant, on_delete=models.CASCADE, related_name="wallet")
    mode = models.CharField(max_length=16, choices=WalletMode.choices, default=WalletMode.FORWARDER)
    # Forwarder mode: the lower-case account address new deposit addresses forward to, and
    # the secret seed of their salts. Changing the address affects new addresses only.
    account_address = models.CharField(max_length=42, blank=True)
    salt_seed = models.CharField(max_length=32, blank=True)
    # The next salt index of forwarder addresses; like next_index, taken under a row lock.
    next_salt_index = models.PositiveIntegerField(default=0)
    xpub = models.CharField(max_length=120, blank=True)
    # SHA-256 of chain code + public key: what makes two xpubs the same key, whatever their
    # version, depth, child number or parent fingerprint say. One key, one business.
    key_fingerprint = models.CharField(max_length=64, blank=True)
    first_address = models.CharField(max_length=42, blank=True)
    # The next derivation index of the current key; taken under a row lock, so addresses are
    # never shared. A new key starts again at 0.
    next_index = models.PositiveIntegerField(default=0)
    is_demo = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["xpub"], condition=~Q(xpub=""), name="wallet_unique_xpub"
            ),
            models.UniqueConstraint(
                fields=["key_fingerprint"],
                condition=~Q(key_fingerprint=""),
                name="wallet_unique_key_fingerprint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.merchant} wallet{' (demo)' if self.is_demo else ''}"

    @property
    def key_id(self) -> str:
        """A short name of the key for people: the start of its fingerprint."""
        return self.key_fingerprint[:8]

    @property
    def uses_forwarders(self) -> bool:
        return self.mode == WalletMode.FORWARDER


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
    # Forwarder addresses: the account they forward to, their 32-byte salt (0x hex) and the
    # factory they belong to, fixed for ever (a later account address changes nothing here).
    # derivation_index is then the wallet's salt index. Empty for xpub addresses.
    destination = models.CharField(max_length=42, blank=True)
    salt = models.CharField(max_length=66, blank=True)
    factory = models.CharField(max_length=42, blank=True)
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
        return "" if self.is_forwarder else derivation_path(self.derivation_index)

    @property
    def is_forwarder(self) -> bool:
        return bool(self.factory)


class ChainCursor(models.Model):
    """Where the scanner of a network resumes. Locked with SKIP LOCKED: one scanner at a time."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="cursor")
    next_block = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.network} @ {self.next_block}"


class NativeBalance(models.Model):
    """A watched native deposit address's balance at a confirmed block: the baseline against
    which the next reconciliation finds ETH that arrived without a top-level transaction."""

    network = models.ForeignKey(Network, on_delete=models.CASCADE, related_name="+")
    deposit_address = models.ForeignKey(DepositAddress, on_delete=models.CASCADE, related_name="+")
    block_number = models.PositiveBigIntegerField()
    balance = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["network", "deposit_address"], name="native_balance_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.deposit_address} @ {self.block_number}"


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
    # A real transaction hash, except "balance:<block>:<address>" (see has_tx_hash).
    tx_hash = models.CharField(max_length=66)
    # The log's index in its block; -1 for a native-coin transaction's value; -2 for native
    # coin found by balance reconciliation alone; -3 - n for the n-th value-moving call
    # inside a transaction (ETH sent by a contract, found by tracing).
    log_index = models.IntegerField()
    block_number = models.PositiveBigIntegerField()
    block_hash = models.CharField(max_length=66)
    from_address = models.CharField(max_length=42)
    to_address = models.CharField(max_length=42)
    amount = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0)
    status = models.CharField(
        max_length=16, choices=TransferStatus.choices, default=TransferStatus.EXECUTED
    )
    confirmations = models.PositiveIntegerField(default=0)
    # The status the consumer of transfers (checkout's settlement) last finished handling.
    # Anything where it differs from `status` still has to be handled: a crash between scan
    # and settlement delays a deposit, it never loses it.
    handled_status = models.CharField(max_length=16, blank=True, db_index=True)
    # Set while a confirmed transfer waits for a price to be credited (another asset than
    # quoted, no rate available): held visibly, posted by a retry once a rate exists.
    awaiting_valuation_since = models.DateTimeField(null=True, blank=True)
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
            # The valuation retry reads only the few held transfers, never the history.
            models.Index(
                fields=["awaiting_valuation_since"],
                condition=Q(awaiting_valuation_since__isnull=False),
                name="transfer_awaiting_value_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tx_hash}:{self.log_index}"

    @property
    def amount_major(self) -> Decimal:
        return self.asset.to_major(self.amount)

    @property
    def has_tx_hash(self) -> bool:
        """False for ETH found by balance reconciliation on a node without tracing: the
        money is real and confirmed, the transaction that brought it is unknown."""
        return bool(self.tx_hash) and not self.tx_hash.startswith(BALANCE_TX_PREFIX)

    @property
    def explorer_url(self) -> str:
        return self.network.tx_url(self.tx_hash) if self.has_tx_hash else ""

    @property
    def awaiting_valuation(self) -> bool:
        return self.awaiting_valuation_since is not None


# The ledger ------------------------------------------------------------------------------


class AccountKind(models.TextChoices):
    MERCHANT = "merchant", "Merchant balance"
    HOLDINGS = "holdings", "Holdings at deposit addresses"
    # Claimed from forwarder deposit addresses to a merchant's account address (per network).
    CLAIMED = "claimed", "Holdings at the account"
    FX = "fx", "Currency exchange"
    FEES = "fees", "Platform fees"
    HELD = "held", "Held by compliance"
    OFF_LEDGER = "external", "Outside world"


# Sign convention: a positive amount is a credit, a negative one a debit. Credit-normal accounts
# (what we owe merchants, fees earned) read naturally; holdings are debit-normal, so a holding of
# 100 USDC is stored as -100 and shown as 100.
DEBIT_NORMAL_KINDS = frozenset({AccountKind.HOLDINGS, AccountKind.CLAIMED})
# Merchant balances are money owed to the merchant, available or held back (a compliance hold):
# they can never go below zero. They are also the only balances cached in Balance rows (see
# ledger._move_balances).
NON_NEGATIVE_KINDS = frozenset({AccountKind.MERCHANT, AccountKind.HELD})
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
    amount = AmountField(max_digits=LEDGER_DIGITS, decimal_places=LEDGER_PLACES)

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
    amount = AmountField(max_digits=LEDGER_DIGITS, decimal_places=LEDGER_PLACES, default=Decimal(0))
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


# Claims ----------------------------------------------------------------------------------


class ClaimStatus(models.TextChoices):
    PREPARED = "prepared", "Prepared (waiting for a signature)"
    PENDING = "pending", "Pending (sent, not mined yet)"
    EXECUTED = "executed", "Executed (mined, confirming)"
    CONFIRMED = "confirmed", "Confirmed"
    FAILED = "failed", "Failed"
    # A newer claim of the same deposits was prepared before this one was ever sent.
    ABANDONED = "abandoned", "Abandoned (never sent)"


# Claims whose deposits are on their way: no other claim of them is prepared meanwhile.
CLAIM_IN_FLIGHT = (ClaimStatus.PENDING, ClaimStatus.EXECUTED)
# Claims that moved (or are moving) money out of their deposit addresses.
CLAIM_MOVED = (ClaimStatus.EXECUTED, ClaimStatus.CONFIRMED)
CLAIM_FINAL = (ClaimStatus.CONFIRMED, ClaimStatus.FAILED, ClaimStatus.ABANDONED)


class Claim(models.Model):
    """One call of DepositFactory.claim: prepared here, signed and sent by the merchant's
    browser wallet (or found on chain when someone else sent it), followed to confirmation.

    A claim mined in a block that a reorg drops goes back to pending (its transaction may be
    mined again); its deposits count as uncollected while it is not executed.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="claims")
    network = models.ForeignKey(Network, on_delete=models.PROTECT, related_name="claims")
    factory = models.CharField(max_length=42)
    destination = models.CharField(max_length=42)
    calldata = models.TextField()
    status = models.CharField(
        max_length=16, choices=ClaimStatus.choices, default=ClaimStatus.PREPARED
    )
    # Set once the transaction is known: reported by the browser, or seen on chain.
    tx_hash = models.CharField(max_length=66, blank=True)
    sender = models.CharField(max_length=42, blank=True)
    # Who sent it: the merchant's wallet through the page, the operator's gas-only relayer,
    # or someone else (found on chain only; they paid the gas, not the merchant).
    sent_by = models.CharField(max_length=16, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True)
    confirmations = models.PositiveIntegerField(default=0)
    estimated_gas = models.PositiveBigIntegerField(null=True, blank=True)
    # What it cost, from its receipt: gas used times the effective gas price, in wei.
    gas_used = models.PositiveBigIntegerField(null=True, blank=True)
    fee_wei = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0, null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    # The status the consumer (checkout's claim settlement) last finished handling.
    handled_status = models.CharField(max_length=16, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["network", "tx_hash"], condition=~Q(tx_hash=""), name="claim_unique_tx"
            ),
        ]
        indexes = [models.Index(fields=["network", "status"], name="claim_network_status_idx")]

    def __str__(self) -> str:
        return f"claim {self.pk} ({self.status})"

    @property
    def fee_major(self) -> Decimal | None:
        return None if self.fee_wei is None else Decimal(int(self.fee_wei)).scaleb(-18)

    @property
    def explorer_url(self) -> str:
        return self.network.tx_url(self.tx_hash) if self.tx_hash else ""

    @property
    def fee_values(self) -> list[tuple[str, Decimal]]:
        """The fee as valued in each currency its items were booked in (from the items)."""
        totals: dict[str, Decimal] = {}
        for item in self.items.all():
            if item.fee_value is not None and item.fee_currency:
                totals[item.fee_currency] = (
                    totals.get(item.fee_currency, Decimal(0)) + item.fee_value
                )
        return sorted(totals.items())


class ClaimItem(models.Model):
    """One deposit address and asset of a claim: what was uncollected when it was prepared,
    and what the chain says it moved."""

    claim = models.ForeignKey(Claim, on_delete=models.CASCADE, related_name="items")
    deposit_address = models.ForeignKey(
        DepositAddress, on_delete=models.PROTECT, related_name="claim_items"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="claim_items")
    expected = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0)
    # Base units moved, from the receipt's logs; None until executed.
    amount = AmountField(max_digits=BASE_UNIT_DIGITS, decimal_places=0, null=True, blank=True)
    # This item's share of the claim's fee (wei), and its value in `fee_currency` when the
    # consumer valued it (the invoice's currency, for checkout).
    fee_share_wei = AmountField(
        max_digits=BASE_UNIT_DIGITS, decimal_places=0, null=True, blank=True
    )
    fee_currency = models.CharField(max_length=16, blank=True)
    fee_value = AmountField(max_digits=LEDGER_DIGITS, decimal_places=LEDGER_PLACES, null=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["claim", "deposit_address", "asset"], name="claim_item_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.claim_id}: {self.deposit_address} {self.asset.symbol}"

    @property
    def amount_major(self) -> Decimal:
        return self.asset.to_major(self.amount if self.amount is not None else self.expected)


class ClaimCursor(models.Model):
    """Where the search for factory logs (claims anyone sent) resumes, per network."""

    network = models.OneToOneField(Network, on_delete=models.CASCADE, related_name="claim_cursor")
    next_block = models.PositiveBigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.network} claims @ {self.next_block}"
