"""Claims: moving what forwarder deposit addresses hold to the merchant's account address.

The server prepares the factory call (`claim_prepare`); the merchant's browser wallet signs
and sends it and the page reports the transaction (`claim_submit`); the watcher
(wallets.claim_watch) follows it to confirmation from its receipt. Nothing here holds a key:
whoever sends a claim can only move the money to the destination the addresses were derived
with. This module knows deposit addresses and assets, never invoices (checkout adds those).
"""

import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from merchants.fields import exact_totals
from merchants.models import Merchant
from wallets.chain import Chain, ChainError, Signer, address_of_key
from wallets.forwarders import claim_calldata
from wallets.models import (
    CLAIM_IN_FLIGHT,
    CLAIM_MOVED,
    Asset,
    Claim,
    ClaimItem,
    ClaimStatus,
    DepositAddress,
    Network,
    Transfer,
    TransferStatus,
    Wallet,
)

TX_HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
# Forwarders per claim transaction: 100 cost about 5.2 M gas (tests/bench/bench_claims.py),
# well inside every chain's block gas limit.
MAX_CLAIM_ITEMS = 100


class ClaimError(Exception):
    """A claim that cannot be prepared or recorded; the message is for the merchant."""


@dataclass(frozen=True)
class Uncollected:
    """What one forwarder address holds in one asset and has not been claimed yet."""

    deposit_address_id: int
    address: str
    destination: str
    network_id: int
    asset_id: int
    received: int  # base units in live deposits (confirming or confirmed)
    confirmed: int
    claimed: int  # base units moved out by executed or confirmed claims
    in_flight: bool  # a sent claim of it is not mined yet

    @property
    def amount(self) -> int:
        return max(0, self.received - self.claimed)


def uncollected(
    *,
    merchant: Merchant,
    deposit_ids: list[int] | None = None,
    network: Network | None = None,
) -> list[Uncollected]:
    """Per forwarder deposit address and asset: deposits minus claims, for one merchant.

    Summed exactly from the few rows of these addresses (merchants.fields.exact_totals); a
    deposit address of an xpub wallet never appears (its funds are in the merchant's own
    wallet already)."""
    deposits = DepositAddress.objects.filter(merchant=merchant).exclude(factory="")
    if deposit_ids is not None:
        deposits = deposits.filter(pk__in=deposit_ids)
    transfers = Transfer.objects.filter(deposit_address__in=deposits).exclude(
        status=TransferStatus.ORPHANED
    )
    if network is not None:
        transfers = transfers.filter(network=network)
    received: dict[tuple[int, int, int], list[int]] = defaultdict(lambda: [0, 0])
    for row in exact_totals(
        transfers, ["deposit_address_id", "network_id", "asset_id", "status"], "amount"
    ):
        key = (row["deposit_address_id"], row["network_id"], row["asset_id"])
        received[key][0] += int(row["total"])
        if row["status"] == TransferStatus.CONFIRMED:
            received[key][1] += int(row["total"])
    if not received:
        return []
    items = ClaimItem.objects.filter(deposit_address_id__in={k[0] for k in received})
    claimed: dict[tuple[int, int, int], int] = defaultdict(int)
    for row in exact_totals(
        items.filter(claim__status__in=CLAIM_MOVED, amount__isnull=False),
        ["deposit_address_id", "claim__network_id", "asset_id"],
        "amount",
    ):
        claimed[(row["deposit_address_id"], row["claim__network_id"], row["asset_id"])] += int(
            row["total"]
        )
    flying = set(
        items.filter(claim__status=ClaimStatus.PENDING).values_list(
            "deposit_address_id", "claim__network_id", "asset_id"
        )
    )
    addresses = {d.pk: d for d in DepositAddress.objects.filter(pk__in={k[0] for k in received})}
    out = []
    for key in sorted(received):
        deposit = addresses[key[0]]
        total, confirmed = received[key]
        out.append(
            Uncollected(
                deposit_address_id=key[0],
                address=deposit.address,
                destination=deposit.destination,
                network_id=key[1],
                asset_id=key[2],
                received=total,
                confirmed=confirmed,
                claimed=claimed.get(key, 0),
                in_flight=key in flying,
            )
        )
    return out


def claim_prepare(
    *,
    merchant: Merchant,
    network: Network,
    deposit_ids: list[int],
    sender: str = "",
    chain: Chain | None = None,
) -> Claim:
    """Prepare one factory call that claims everything the given addresses hold on `network`.

    Refused with a message (ClaimError) when: the factory is missing there; an address is
    not a forwarder of this merchant or belongs to another factory or account; nothing is
    there to claim; a claim of it is already on its way. Preparing again replaces an older
    prepared claim of the same addresses that was never sent."""
    ids = sorted(set(deposit_ids))
    if not ids:
        raise ClaimError("Select at least one deposit to claim.")
    if len(ids) > MAX_CLAIM_ITEMS:
        raise ClaimError(f"At most {MAX_CLAIM_ITEMS} deposit addresses fit in one claim.")
    factory = network.deposit_factory
    if not factory:
        raise ClaimError(
            f"The deposit factory is not deployed on {network.name} yet, so nothing can be "
            "claimed there. The operator deploys it from the network's admin page."
        )
    with transaction.atomic():
        # One prepare per merchant at a time: two clicks never make two live claims.
        Wallet.objects.select_for_update().filter(merchant=merchant).first()
        deposits = list(DepositAddress.objects.filter(merchant=merchant, pk__in=ids))
        if len(deposits) != len(ids):
            raise ClaimError("Some of the selected deposit addresses are not yours.")
        foreign = [d for d in deposits if d.factory != factory]
        if foreign:
            raise ClaimError(
                f"{foreign[0].address} is not a forwarder of the factory on {network.name}; "
                "it cannot be claimed there."
            )
        destinations = {d.destination for d in deposits}
        if len(destinations) != 1:
            raise ClaimError(
                "The selection forwards to more than one account address; claim each "
                "account's deposits separately."
            )
        holdings = uncollected(merchant=merchant, deposit_ids=ids, network=network)
        busy = [u for u in holdings if u.in_flight]
        if busy:
            raise ClaimError(
                f"A claim of {busy[0].address} is already on its way; wait until it is mined."
            )
        due = [u for u in holdings if u.amount > 0]
        if not due:
            raise ClaimError("There is nothing to claim at the selected addresses.")
        assets = {a.pk: a for a in Asset.objects.filter(network=network)}
        stray = [u for u in due if u.asset_id not in assets]
        if stray:
            raise ClaimError("A deposit is in an asset this network does not list.")
        empty = set(ids) - {u.deposit_address_id for u in due}
        if empty:
            address = next(d.address for d in deposits if d.pk in empty)
            raise ClaimError(f"There is nothing to claim at {address}.")
        tokens = sorted({assets[u.asset_id].contract_address for u in due} - {""})
        by_id = {d.pk: d for d in deposits}
        destination = destinations.pop()
        salts = [bytes.fromhex(by_id[i].salt.removeprefix("0x")) for i in ids]
        data = claim_calldata(destination=destination, salts=salts, tokens=tokens)
        # An older claim of these addresses that was never sent is superseded.
        stale = set(
            ClaimItem.objects.filter(
                deposit_address_id__in=ids, claim__status=ClaimStatus.PREPARED
            ).values_list("claim_id", flat=True)
        )
        Claim.objects.filter(pk__in=stale, status=ClaimStatus.PREPARED).update(
            status=ClaimStatus.ABANDONED
        )
        claim = Claim.objects.create(
            merchant=merchant,
            network=network,
            factory=factory,
            destination=destination,
            calldata=data,
        )
        ClaimItem.objects.bulk_create(
            ClaimItem(
                claim=claim,
                deposit_address_id=u.deposit_address_id,
                asset_id=u.asset_id,
                expected=Decimal(u.amount),
            )
            for u in due
        )
    estimate = _estimate(network, factory, data, sender, chain)
    if estimate is not None:
        Claim.objects.filter(pk=claim.pk).update(estimated_gas=estimate)
        claim.estimated_gas = estimate
    return claim


def _estimate(
    network: Network, factory: str, data: str, sender: str, chain: Chain | None
) -> int | None:
    """The node's gas estimate, or None when it cannot say (the page says so)."""
    try:
        chain = chain or Chain(
            network.effective_rpc_url, timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS, attempts=1
        )
        return chain.estimate_gas(sender=sender, to=factory, data=data)
    except ChainError:
        return None


def claim_submit(
    *, merchant: Merchant, claim_id: int, tx_hash: str, sender: str, chain_id: int
) -> Claim:
    """The browser wallet sent the prepared claim: record its transaction. The same report
    twice is harmless; a wallet on another chain is refused before anything is written."""
    claim = Claim.objects.select_related("network").filter(merchant=merchant, pk=claim_id).first()
    if claim is None:
        raise ClaimError("No such claim.")
    if chain_id != claim.network.chain_id:
        raise ClaimError(
            f"Your wallet is on chain {chain_id}, but this claim is for {claim.network.name} "
            f"(chain {claim.network.chain_id}). Switch networks in the wallet and sign again."
        )
    # Whole-string matches: `$` also matches before a trailing newline, and a hash with one
    # was stored and then broke every receipt request of the network's claim rounds.
    tx_hash, sender = (tx_hash or "").strip(), (sender or "").strip()
    if not TX_HASH_RE.fullmatch(tx_hash):
        raise ClaimError("The wallet answered something that is not a transaction hash.")
    if sender and not ADDRESS_RE.fullmatch(sender):
        raise ClaimError("The wallet answered an invalid sender address.")
    tx_hash = tx_hash.lower()
    if claim.tx_hash == tx_hash:
        return claim
    try:
        with transaction.atomic():
            moved = Claim.objects.filter(pk=claim.pk, status=ClaimStatus.PREPARED).update(
                status=ClaimStatus.PENDING,
                tx_hash=tx_hash,
                sender=sender.lower(),
                sent_by="wallet",
                sent_at=timezone.now(),
            )
    except IntegrityError:
        # The watcher saw this transaction first and recorded it as its own claim.
        raise ClaimError("This transaction is recorded already.") from None
    claim.refresh_from_db()
    if not moved and claim.tx_hash != tx_hash:
        raise ClaimError(f"This claim is {claim.get_status_display().lower()} already.")
    return claim


def claim_in_flight_ids(*, merchant: Merchant) -> set[int]:
    """Deposit addresses of the merchant with a sent claim that is not confirmed yet."""
    return set(
        ClaimItem.objects.filter(
            claim__merchant=merchant, claim__status__in=CLAIM_IN_FLIGHT
        ).values_list("deposit_address_id", flat=True)
    )


def claims_of(*, merchant: Merchant, deposit_ids: list[int] | None = None):
    """The merchant's claims (newest first), optionally only those touching some addresses."""
    claims = Claim.objects.filter(merchant=merchant).exclude(status=ClaimStatus.ABANDONED)
    if deposit_ids is not None:
        claims = claims.filter(Q(items__deposit_address_id__in=deposit_ids)).distinct()
    return claims.select_related("network").prefetch_related(
        "items__asset", "items__deposit_address"
    )


def claim_relay(*, claim: Claim, chain: Chain | None = None) -> Claim:
    """Send a prepared claim from the network's gas-only relayer key (auto-claim)."""
    network = claim.network
    if not network.relayer_key:
        raise ClaimError(f"No relayer is configured for {network.name}.")
    chain = chain or Chain(network.effective_rpc_url, timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS)
    signer = Signer(chain, network.relayer_key)
    gas = claim.estimated_gas or chain.estimate_gas(
        sender=signer.address, to=claim.factory, data=claim.calldata
    )
    tx_hash = signer.send_data(
        claim.factory, claim.calldata, gas=gas * 12 // 10, nonce=signer.next_nonce()
    )
    Claim.objects.filter(pk=claim.pk, status=ClaimStatus.PREPARED).update(
        status=ClaimStatus.PENDING,
        tx_hash=tx_hash.lower(),
        sender=signer.address.lower(),
        sent_by="relayer",
        sent_at=timezone.now(),
    )
    claim.refresh_from_db()
    return claim


def relayer_address(network: Network) -> str:
    """The relayer's public address, or "" when none is configured."""
    if not network.relayer_key:
        return ""
    return address_of_key(network.relayer_key)
