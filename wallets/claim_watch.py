"""Follows claims on chain: finds the factory's Claimed logs (claims anyone sent, the page's
and pasted ones alike) and reads every in-flight claim's receipt each round.

A claim's state is re-derived from its receipt every round, so a reorg is handled without
special cases: a receipt that disappears sends an executed claim back to pending (and its
deposits back to uncollected); a confirmed claim is final, like a confirmed transfer. Runs
under the network's round lease (wallets.scanner), fetching first and writing after.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from wallets.chain import Chain, ChainError, ClaimReceipt
from wallets.models import (
    Asset,
    Claim,
    ClaimCursor,
    ClaimItem,
    ClaimStatus,
    DepositAddress,
    Network,
    Transfer,
)
from wallets.scanner import (
    RESCAN_BLOCKS,
    LeaseLost,
    _lease_renew,
    lease_kept,
    round_lease_acquire,
    round_lease_release,
)

logger = logging.getLogger(__name__)
# A sent claim the node has no receipt for this long was dropped (or replaced by the wallet).
DROPPED_AFTER = timedelta(hours=1)


@dataclass
class ClaimReport:
    network: str
    skipped: bool = False
    found: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    error: str = ""


def watch_claims(
    *, network: Network, chain: Chain | None = None, relayer: str = "", max_chunks: int = 50
) -> ClaimReport:
    """One claim round of a network. `relayer`: the gas-only relayer's address, if any."""
    report = ClaimReport(network=network.slug)
    if not network.deposit_factory:
        return report
    token = round_lease_acquire(network=network)
    if token is None:
        report.skipped = True
        return report
    try:
        chain = chain or Chain(
            network.effective_rpc_url, timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS
        )
        with lease_kept(chain, network, token):
            if chain.chain_id() != network.chain_id:
                report.error = "wrong chain"
                return report
            head = chain.head()
            for _ in range(max_chunks):
                if _find(network, chain, head, token, report, relayer.lower()):
                    break
            _follow(network, chain, head, token, report)
    except ChainError as error:
        report.error = str(error)
        logger.warning("Claim round of %s stopped: %s", network.slug, error)
    except LeaseLost:
        report.skipped = True
    finally:
        round_lease_release(network=network, token=token)
    return report


def _find(
    network: Network, chain: Chain, head: int, token: str, report: ClaimReport, relayer: str
) -> bool:
    """One range of factory logs; True once the head is reached."""
    lookback = max(network.effective_confirmations, RESCAN_BLOCKS)
    cursor = ClaimCursor.objects.filter(network=network).first()
    if cursor is None:
        # First claim round of this network: no claim can predate the first deposit to one
        # of its forwarders, so start there (or near the head when there is none yet).
        first = (
            Transfer.objects.filter(
                network=network, deposit_address__factory=network.deposit_factory
            )
            .order_by("block_number")
            .values_list("block_number", flat=True)
            .first()
        )
        start_at = min(head - lookback, first) if first is not None else head - lookback
        cursor, _ = ClaimCursor.objects.get_or_create(
            network=network, defaults={"next_block": max(0, start_at)}
        )
    start = max(0, cursor.next_block - lookback)
    end = min(head, cursor.next_block + network.effective_max_block_range - 1)
    if start > end:
        return True
    seen = chain.claim_logs(start, end, network.deposit_factory)
    known = set(
        Claim.objects.filter(network=network, tx_hash__in=[s.tx_hash for s in seen]).values_list(
            "tx_hash", flat=True
        )
    )
    new = sorted({s.tx_hash for s in seen} - known)
    receipts = chain.claim_receipts(new, network.deposit_factory) if new else {}
    with transaction.atomic():
        _lease_renew(network, token)
        for tx_hash in new:
            receipt = receipts.get(tx_hash)
            if receipt is not None and receipt.succeeded:
                claim = _record_found(network, receipt, relayer)
                if claim is not None:
                    report.found.append(claim.pk)
        ClaimCursor.objects.filter(pk=cursor.pk).update(
            next_block=Greatest(F("next_block"), end + 1), updated_at=timezone.now()
        )
    return end >= head


def _record_found(network: Network, receipt: ClaimReceipt, relayer: str) -> Claim | None:
    """A claim transaction nobody reported: match it to the merchant's prepared claim of the
    same addresses (calldata pasted into some wallet), or record it as sent by someone else."""
    senders = {m.sender for m in receipt.moves}
    deposits = list(
        DepositAddress.objects.filter(address__in=senders, factory=network.deposit_factory)
    )
    if not deposits:
        return None  # moved nothing of ours (an empty claim, or another install's)
    merchant_id = deposits[0].merchant_id
    destination = deposits[0].destination
    prepared = (
        Claim.objects.filter(
            network=network,
            merchant_id=merchant_id,
            destination=destination,
            status=ClaimStatus.PREPARED,
            items__deposit_address__in=deposits,
        )
        .order_by("-pk")
        .first()
    )
    if relayer and receipt.sender == relayer:
        sent_by = "relayer"
    elif receipt.sender == destination:
        sent_by = "wallet"  # the merchant's own account sent (and paid for) it
    else:
        sent_by = "other"
    if prepared is not None:
        Claim.objects.filter(pk=prepared.pk, status=ClaimStatus.PREPARED).update(
            status=ClaimStatus.PENDING,
            tx_hash=receipt.tx_hash,
            sender=receipt.sender,
            sent_by="wallet",
            sent_at=timezone.now(),
        )
        return prepared
    claim = Claim.objects.create(
        merchant_id=merchant_id,
        network=network,
        factory=network.deposit_factory,
        destination=destination,
        calldata="",
        status=ClaimStatus.PENDING,
        tx_hash=receipt.tx_hash,
        sender=receipt.sender,
        sent_by=sent_by,
        sent_at=timezone.now(),
    )
    return claim


def _follow(network: Network, chain: Chain, head: int, token: str, report: ClaimReport) -> None:
    flying = list(
        Claim.objects.filter(
            network=network, status__in=(ClaimStatus.PENDING, ClaimStatus.EXECUTED)
        ).exclude(tx_hash="")
    )
    if not flying:
        return
    receipts = chain.claim_receipts([c.tx_hash for c in flying], network.deposit_factory)
    needed = network.effective_confirmations
    with transaction.atomic():
        _lease_renew(network, token)
        for claim in flying:
            if _apply(claim, receipts.get(claim.tx_hash), head, needed):
                report.changed.append(claim.pk)


def _apply(claim: Claim, receipt: ClaimReceipt | None, head: int, needed: int) -> bool:
    """Bring one claim in line with its receipt; True if its status changed."""
    now = timezone.now()
    current = Claim.objects.filter(pk=claim.pk, status=claim.status)
    if receipt is None:
        if claim.status == ClaimStatus.EXECUTED:
            # A reorg dropped the block: the deposits are uncollected again until the
            # transaction is mined anew (or never).
            logger.warning("Claim %s (%s) left the chain in a reorg", claim.pk, claim.tx_hash)
            ClaimItem.objects.filter(claim=claim).update(amount=None)
            return bool(
                current.update(
                    status=ClaimStatus.PENDING,
                    block_number=None,
                    block_hash="",
                    confirmations=0,
                    executed_at=None,
                )
            )
        if claim.sent_at is not None and now - claim.sent_at > DROPPED_AFTER:
            return bool(
                current.update(
                    status=ClaimStatus.FAILED,
                    failure_reason="The transaction was never mined (the wallet dropped or "
                    "replaced it); nothing moved.",
                    confirmed_at=now,
                )
            )
        return False
    depth = head - receipt.block_number + 1
    fields = {
        "block_number": receipt.block_number,
        "block_hash": receipt.block_hash,
        "confirmations": max(0, depth),
        "sender": claim.sender or receipt.sender,
        "gas_used": receipt.gas_used,
        "fee_wei": Decimal(receipt.fee_wei),
    }
    if not receipt.succeeded:
        if depth < needed:
            current.update(**fields)  # mined but reverted: final once confirmed
            return False
        _share_fee(claim, receipt.fee_wei)
        return bool(
            current.update(
                status=ClaimStatus.FAILED,
                failure_reason=receipt.reason or "The transaction reverted.",
                confirmed_at=now,
                **fields,
            )
        )
    _record_moves(claim, receipt)
    status = ClaimStatus.CONFIRMED if depth >= needed else ClaimStatus.EXECUTED
    if status == ClaimStatus.CONFIRMED:
        _share_fee(claim, receipt.fee_wei)
        fields["confirmed_at"] = now
    if claim.status != ClaimStatus.EXECUTED:
        fields["executed_at"] = now
    return bool(current.update(status=status, **fields)) and status != claim.status


def _record_moves(claim: Claim, receipt: ClaimReceipt) -> None:
    """Each item's amount from the receipt's logs; items for what moved without being
    listed (a claim found on chain, a token sent meanwhile)."""
    assets = {a.contract_address: a for a in Asset.objects.filter(network_id=claim.network_id)}
    moved: dict[tuple[str, str], int] = {}
    for move in receipt.moves:
        if move.recipient == claim.destination and move.token in assets:
            key = (move.sender, move.token)
            moved[key] = moved.get(key, 0) + move.amount
    deposits = {
        d.address: d
        for d in DepositAddress.objects.filter(
            address__in={s for s, _ in moved}, merchant_id=claim.merchant_id
        )
    }
    items = {
        (i.deposit_address.address, i.asset.contract_address): i
        for i in ClaimItem.objects.filter(claim=claim).select_related("deposit_address", "asset")
    }
    for key, item in items.items():
        swept = Decimal(moved.get(key, 0))
        if item.amount != swept:
            ClaimItem.objects.filter(pk=item.pk).update(amount=swept)
    for (sender, token_address), amount in moved.items():
        if (sender, token_address) in items or sender not in deposits:
            continue
        ClaimItem.objects.get_or_create(
            claim=claim,
            deposit_address=deposits[sender],
            asset=assets[token_address],
            defaults={"expected": Decimal(0), "amount": Decimal(amount)},
        )


def _share_fee(claim: Claim, fee_wei: int) -> None:
    """Split the fee over the claim's deposit addresses (the first takes the remainder)."""
    items = list(ClaimItem.objects.filter(claim=claim).order_by("pk"))
    addresses = sorted({i.deposit_address_id for i in items})
    if not addresses:
        return
    share, rest = divmod(fee_wei, len(addresses))
    seen: set[int] = set()
    for item in items:
        if item.deposit_address_id in seen:
            value = 0  # one share per address, on its first item
        else:
            seen.add(item.deposit_address_id)
            value = share + (rest if item.deposit_address_id == addresses[0] else 0)
        ClaimItem.objects.filter(pk=item.pk).update(fee_share_wei=Decimal(value))
