"""Finds deposits on chain and follows them to confirmation.

Per network, the scanner walks blocks from its cursor in chunks. Each chunk is one database
transaction: lock the cursor (SKIP LOCKED, so one scanner at a time), fetch the Transfer logs
of the enabled tokens (and native transfers), match their recipients against all deposit
addresses with one indexed query, insert new transfers, advance the cursor, commit. A crash
loses at most the chunk in flight, which the next scan repeats; unique (network, tx, log)
makes the repeat harmless. Cost follows the logs in the range, not the number of addresses.
"""

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from wallets.chain import Chain, ChainError, SeenTransfer
from wallets.models import Asset, ChainCursor, DepositAddress, Network, Transfer, TransferStatus

logger = logging.getLogger(__name__)


@dataclass
class ScanReport:
    network: str
    from_block: int | None = None
    to_block: int | None = None
    skipped: bool = False
    new: list[int] = field(default_factory=list)
    revived: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)
    rpc_calls: int = 0
    error: str = ""


def scan_network(
    *, network: Network, chain: Chain | None = None, max_chunks: int = 100
) -> ScanReport:
    report = ScanReport(network=network.slug)
    try:
        chain = chain or Chain(network.effective_rpc_url)
        head = chain.head()
        for chunk in range(max_chunks):
            if _scan_chunk(
                network=network, chain=chain, head=head, first=chunk == 0, report=report
            ):
                break
        if not report.skipped:
            _follow_confirmations(network=network, chain=chain, head=head, report=report)
    except ChainError as error:
        report.error = str(error)
        logger.warning("Scan of %s stopped: %s", network.slug, error)
        Network.objects.filter(pk=network.pk).update(
            rpc_ok=False, rpc_error=str(error)[:2000], rpc_checked_at=timezone.now()
        )
    else:
        Network.objects.filter(pk=network.pk).update(
            rpc_ok=True, rpc_error="", rpc_checked_at=timezone.now()
        )
    if chain is not None:
        report.rpc_calls = chain.calls
    return report


def cursor_reset(*, network: Network, next_block: int) -> ChainCursor:
    cursor, _ = ChainCursor.objects.update_or_create(
        network=network, defaults={"next_block": next_block}
    )
    return cursor


def _scan_chunk(
    *, network: Network, chain: Chain, head: int, first: bool, report: ScanReport
) -> bool:
    """Scan one chunk; True when the scan has reached the head (or must stop)."""
    lookback = network.effective_confirmations
    with transaction.atomic():
        cursor = (
            ChainCursor.objects.select_for_update(skip_locked=True).filter(network=network).first()
        )
        if cursor is None:
            if ChainCursor.objects.filter(network=network).exists():
                report.skipped = True  # another scanner is on this network right now
                return True
            # A network seen for the first time starts near the head, not at genesis.
            cursor, _ = ChainCursor.objects.get_or_create(
                network=network, defaults={"next_block": max(0, head - lookback)}
            )
            cursor = ChainCursor.objects.select_for_update().get(pk=cursor.pk)
        # Blocks near the head can still be replaced by a reorg: each scan looks back over the
        # unconfirmed window once, so a transfer re-mined in another block is found again.
        start = max(0, cursor.next_block - lookback) if first else cursor.next_block
        end = min(head, cursor.next_block + network.effective_max_block_range - 1)
        if start > end:
            return True
        tokens = {asset.contract_address: asset for asset in network.assets.filter(enabled=True)}
        seen = chain.token_transfers(start, end, [t for t in tokens if t])
        if "" in tokens:
            seen += chain.native_transfers(start, end)
        _store(network=network, seen=seen, assets=tokens, report=report)
        cursor.next_block = max(cursor.next_block, end + 1)
        cursor.save(update_fields=["next_block", "updated_at"])
    report.from_block = start if report.from_block is None else report.from_block
    report.to_block = end
    return end >= head


def _store(
    *, network: Network, seen: list[SeenTransfer], assets: dict[str, Asset], report: ScanReport
) -> None:
    recipients = {item.recipient for item in seen}
    if not recipients:
        return
    deposits = {d.address: d for d in DepositAddress.objects.filter(address__in=recipients)}
    for item in seen:
        deposit = deposits.get(item.recipient)
        asset = assets.get(item.token)
        if deposit is None or asset is None:
            continue
        transfer, created = Transfer.objects.get_or_create(
            network=network,
            tx_hash=item.tx_hash,
            log_index=item.log_index,
            defaults={
                "asset": asset,
                "deposit_address": deposit,
                "block_number": item.block_number,
                "block_hash": item.block_hash,
                "from_address": item.sender,
                "to_address": item.recipient,
                "amount": item.amount,
            },
        )
        if created:
            report.new.append(transfer.pk)
        elif transfer.status == TransferStatus.ORPHANED and transfer.block_hash != item.block_hash:
            # The same transaction made it into the new chain: it counts again.
            revived = Transfer.objects.filter(
                pk=transfer.pk, status=TransferStatus.ORPHANED
            ).update(
                status=TransferStatus.EXECUTED,
                block_number=item.block_number,
                block_hash=item.block_hash,
                confirmations=0,
                orphaned_at=None,
            )
            if revived:
                report.revived.append(transfer.pk)


def _follow_confirmations(*, network: Network, chain: Chain, head: int, report: ScanReport) -> None:
    """Count confirmations of unconfirmed transfers; re-check each block hash first.

    Confirmed transfers are final and never looked at again. Updates are conditional on the
    status, so two scanners racing here report each change once.
    """
    needed = network.effective_confirmations
    canonical: dict[int, str | None] = {}
    pending = Transfer.objects.filter(network=network, status=TransferStatus.EXECUTED).order_by(
        "block_number"
    )
    for transfer in pending:
        number = transfer.block_number
        if number not in canonical:
            canonical[number] = chain.block_hash(number) if number <= head else None
        now = timezone.now()
        if canonical[number] != transfer.block_hash:
            if Transfer.objects.filter(pk=transfer.pk, status=TransferStatus.EXECUTED).update(
                status=TransferStatus.ORPHANED, orphaned_at=now, confirmations=0
            ):
                report.orphaned.append(transfer.pk)
                logger.warning("Transfer %s orphaned by a reorg at block %s", transfer, number)
            continue
        confirmations = head - number + 1
        if confirmations >= needed:
            if Transfer.objects.filter(pk=transfer.pk, status=TransferStatus.EXECUTED).update(
                status=TransferStatus.CONFIRMED, confirmations=confirmations, confirmed_at=now
            ):
                report.confirmed.append(transfer.pk)
        elif confirmations != transfer.confirmations:
            Transfer.objects.filter(pk=transfer.pk, status=TransferStatus.EXECUTED).update(
                confirmations=confirmations
            )
