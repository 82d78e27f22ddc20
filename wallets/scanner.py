"""Finds deposits on chain and follows them to confirmation.

A watch round of a network runs under the network's lease (one round per network at a time,
across workers; a killed worker's lease expires). It checks the node's chain id, then walks
blocks from the cursor in chunks, then re-checks unconfirmed transfers, then reconciles the
balances of watched native deposit addresses. Every step fetches from the node first and
writes after, in a short transaction that starts by renewing the lease: no database
transaction (or SQLite's write lock) is ever held while waiting on the node, and a worker
whose lease was taken over writes nothing. The lease is also renewed from inside the
node calls while a round fetches, so a slow node or a loaded worker cannot make a live round
lose its lease between two writes, again and again (a round that never reaches its writes
never credits anything).

A crash loses at most the step in flight, which the next round repeats; unique
(network, tx, log) makes the repeat harmless. Cost follows the logs in the range, not the
number of addresses; native reconciliation costs one call per 500 watched addresses.
"""

import logging
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from merchants.fields import exact_totals
from wallets.chain import Chain, ChainError, InternalTransfer, SeenTransfer, Unsupported
from wallets.models import (
    BALANCE_TX_PREFIX,
    Asset,
    ChainCursor,
    DepositAddress,
    NativeBalance,
    Network,
    Transfer,
    TransferStatus,
)

logger = logging.getLogger(__name__)
# How long a queued round keeps beat from queueing another (a lost message costs this much).
QUEUED_SECONDS = 300
# Each round scans at least this many blocks below its cursor again: a load-balanced node's
# stale backend may have answered the last range without its newest blocks.
RESCAN_BLOCKS = 8


class LeaseLost(Exception):
    """Another worker took this network's round over (our lease expired meanwhile)."""


@contextmanager
def lease_kept(chain: Chain, network: Network, token: str) -> Iterator[None]:
    """Renew the round's lease before the chain's calls (at most every quarter lease), so
    only a worker that stopped, not one waiting on its node, gives its round up. A call
    made after another worker took over raises LeaseLost at once: no fetch is wasted."""
    every = settings.CHAIN_ROUND_LEASE_SECONDS / 4
    renewed = time.monotonic()

    def renew() -> None:
        nonlocal renewed
        if time.monotonic() - renewed >= every:
            _lease_renew(network, token)
            renewed = time.monotonic()

    outer = chain.before_call
    chain.before_call = renew
    try:
        yield
    finally:
        chain.before_call = outer


@dataclass
class ScanReport:
    network: str
    from_block: int | None = None
    to_block: int | None = None
    skipped: bool = False
    halted: str = ""
    new: list[int] = field(default_factory=list)
    revived: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    orphaned: list[int] = field(default_factory=list)
    rpc_calls: int = 0
    error: str = ""


def scan_network(
    *,
    network: Network,
    chain: Chain | None = None,
    max_chunks: int = 100,
    native_watch: Iterable[str] = (),
) -> ScanReport:
    """One watch round. `native_watch`: the native deposit addresses whose balances are
    reconciled (the caller knows which payments are open; this app does not)."""
    report = ScanReport(network=network.slug)
    if network.is_dev and not settings.CHAIN_DEV_NETWORKS_ALLOWED:
        _halt(network, report, "dev chain: refused outside DEBUG")
        return report
    token = round_lease_acquire(network=network)
    if token is None:
        report.skipped = True  # another round of this network is running
        return report
    try:
        chain = chain or Chain(
            network.effective_rpc_url, timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS
        )
        with lease_kept(chain, network, token):
            chain_id = chain.chain_id()
            if chain_id != network.chain_id:
                _halt(
                    network,
                    report,
                    f"wrong chain: the node reports chain id {chain_id}, "
                    f"expected {network.chain_id}",
                )
                return report
            head = chain.head()
            for chunk in range(max_chunks):
                if _scan_chunk(
                    network=network,
                    chain=chain,
                    head=head,
                    first=chunk == 0,
                    report=report,
                    token=token,
                ):
                    break
            _follow_confirmations(
                network=network, chain=chain, head=head, report=report, token=token
            )
            watch = sorted({a.lower() for a in native_watch})
            if watch:
                _reconcile_native(
                    network=network,
                    chain=chain,
                    head=head,
                    watch=watch,
                    report=report,
                    token=token,
                )
    except ChainError as error:
        report.error = str(error)
        logger.warning("Watch round of %s stopped: %s", network.slug, error)
        Network.objects.filter(pk=network.pk).update(
            rpc_ok=False,
            rpc_error=str(error)[:2000],
            rpc_checked_at=timezone.now(),
            watch_halted="",
        )
    except LeaseLost:
        report.skipped = True
        logger.warning("Watch round of %s lost its lease; another worker took over", network.slug)
    else:
        Network.objects.filter(pk=network.pk).update(
            rpc_ok=True, rpc_error="", rpc_checked_at=timezone.now(), watch_halted=""
        )
    finally:
        round_lease_release(network=network, token=token)
        if chain is not None:
            report.rpc_calls = chain.calls
    return report


def _halt(network: Network, report: ScanReport, reason: str) -> None:
    """Stop watching the network until the cause goes away: nothing is scanned or credited."""
    report.halted = report.error = reason
    logger.error("Not watching %s: %s", network.slug, reason)
    Network.objects.filter(pk=network.pk).update(
        watch_halted=reason[:300], rpc_checked_at=timezone.now()
    )


# The round's lease -------------------------------------------------------------------------


def _lease_free(now) -> Q:
    return Q(round_lease_until__isnull=True) | Q(round_lease_until__lt=now)


def round_lease_acquire(*, network: Network) -> str | None:
    """Take the network's round lease; None while another round holds it."""
    token = secrets.token_hex(16)
    now = timezone.now()
    taken = (
        Network.objects.filter(pk=network.pk)
        .filter(_lease_free(now))
        .update(
            round_token=token,
            round_lease_until=now + timedelta(seconds=settings.CHAIN_ROUND_LEASE_SECONDS),
            round_queued_until=None,
        )
    )
    return token if taken else None


def _lease_renew(network: Network, token: str) -> None:
    """First statement of every write of a round: on SQLite it takes the write lock at once,
    on PostgreSQL it locks the network row, so a stale worker cannot interleave.

    The token alone decides: an expired lease that no other worker took is still ours. The
    expiry only lets another worker take a stopped round over; a round that merely ran long
    and found nobody in its place goes on instead of throwing its fetched work away."""
    now = timezone.now()
    renewed = Network.objects.filter(pk=network.pk, round_token=token).update(
        round_lease_until=now + timedelta(seconds=settings.CHAIN_ROUND_LEASE_SECONDS)
    )
    if not renewed:
        raise LeaseLost(network.slug)


def round_lease_release(*, network: Network, token: str) -> None:
    Network.objects.filter(pk=network.pk, round_token=token).update(
        round_token="", round_lease_until=None
    )


def round_queue(*, network: Network) -> bool:
    """Claim the right to queue a round: False while one is running or already waiting in
    the broker, so rounds never pile up behind a slow node."""
    now = timezone.now()
    return bool(
        Network.objects.filter(pk=network.pk)
        .filter(_lease_free(now))
        .filter(Q(round_queued_until__isnull=True) | Q(round_queued_until__lt=now))
        .update(round_queued_until=now + timedelta(seconds=QUEUED_SECONDS))
    )


def cursor_reset(*, network: Network, next_block: int) -> ChainCursor:
    cursor, _ = ChainCursor.objects.update_or_create(
        network=network, defaults={"next_block": next_block}
    )
    return cursor


# Scanning ----------------------------------------------------------------------------------


def _scan_chunk(
    *, network: Network, chain: Chain, head: int, first: bool, report: ScanReport, token: str
) -> bool:
    """Scan one chunk; True when the scan has reached the head."""
    lookback = max(network.effective_confirmations, RESCAN_BLOCKS)
    cursor = ChainCursor.objects.filter(network=network).first()
    if cursor is None:
        # A network seen for the first time starts near the head, not at genesis.
        cursor, _ = ChainCursor.objects.get_or_create(
            network=network, defaults={"next_block": max(0, head - lookback)}
        )
    # Blocks near the head can still be replaced by a reorg, or were missing from a lagging
    # answer: each round looks back over them once, so a transfer re-mined in another block
    # (or not listed last time) is found again.
    start = max(0, cursor.next_block - lookback) if first else cursor.next_block
    end = min(head, cursor.next_block + network.effective_max_block_range - 1)
    if start > end:
        return True
    tokens = {asset.contract_address: asset for asset in network.assets.filter(enabled=True)}
    seen = chain.token_transfers(start, end, [t for t in tokens if t])
    deposits: dict[str, DepositAddress] = {}
    if "" in tokens:
        native = chain.native_transfers(start, end)
        deposits = _deposits_for(seen + native)
        native = [n for n in native if n.recipient in deposits]
        if native:
            succeeded = chain.successful(n.tx_hash for n in native)
            if any(ok is None for ok in succeeded.values()):
                raise ChainError("the node has no receipt yet for a transaction it listed")
            # A reverted transaction moved no ETH, whatever its value says.
            native = [n for n in native if succeeded[n.tx_hash]]
        seen += native
    else:
        deposits = _deposits_for(seen)
    with transaction.atomic():
        _lease_renew(network, token)
        _store(network=network, seen=seen, deposits=deposits, assets=tokens, report=report)
        ChainCursor.objects.filter(pk=cursor.pk).update(
            next_block=Greatest(F("next_block"), end + 1), updated_at=timezone.now()
        )
    report.from_block = start if report.from_block is None else report.from_block
    report.to_block = end
    return end >= head


def _deposits_for(seen: list[SeenTransfer]) -> dict[str, DepositAddress]:
    recipients = {item.recipient for item in seen}
    if not recipients:
        return {}
    return {d.address: d for d in DepositAddress.objects.filter(address__in=recipients)}


def _store(
    *,
    network: Network,
    seen: list[SeenTransfer],
    deposits: dict[str, DepositAddress],
    assets: dict[str, Asset],
    report: ScanReport,
) -> None:
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
            continue
        if transfer.status == TransferStatus.CONFIRMED:
            continue  # final
        if transfer.status == TransferStatus.EXECUTED and transfer.block_hash == item.block_hash:
            continue
        # Seen again in a block the node calls canonical: it counts again, whatever happened
        # to it before (orphaned by a lagging answer, or re-mined in another block).
        moved = Transfer.objects.filter(pk=transfer.pk, status=transfer.status).update(
            status=TransferStatus.EXECUTED,
            block_number=item.block_number,
            block_hash=item.block_hash,
            confirmations=0,
            orphaned_at=None,
        )
        if moved and transfer.status == TransferStatus.ORPHANED:
            report.revived.append(transfer.pk)
            logger.info("Transfer %s seen again in block %s: revived", transfer, item.block_number)


# Confirmations -----------------------------------------------------------------------------


def _follow_confirmations(
    *, network: Network, chain: Chain, head: int, report: ScanReport, token: str
) -> None:
    """Count confirmations of unconfirmed transfers; re-check each block hash first.

    A block the node does not return (above its head, or null from a lagging backend) is
    "not seen yet" and changes nothing; only a different hash for that number orphans.
    Confirmed transfers are final and never looked at again.
    """
    needed = network.effective_confirmations
    pending = list(
        Transfer.objects.filter(network=network, status=TransferStatus.EXECUTED).values_list(
            "pk", "block_number", "block_hash", "confirmations"
        )
    )
    if not pending:
        return
    canonical = chain.block_hashes(number for _, number, _, _ in pending if number <= head)
    now = timezone.now()
    with transaction.atomic():
        _lease_renew(network, token)
        for pk, number, stored_hash, counted in pending:
            current = canonical.get(number)
            if current is None:
                continue
            still = Transfer.objects.filter(
                pk=pk, status=TransferStatus.EXECUTED, block_hash=stored_hash
            )
            if current != stored_hash:
                if still.update(status=TransferStatus.ORPHANED, orphaned_at=now, confirmations=0):
                    report.orphaned.append(pk)
                    logger.warning("Transfer %s orphaned by a reorg at block %s", pk, number)
                continue
            confirmations = head - number + 1
            if confirmations >= needed:
                if still.update(
                    status=TransferStatus.CONFIRMED, confirmations=confirmations, confirmed_at=now
                ):
                    report.confirmed.append(pk)
            elif confirmations != counted:
                still.update(confirmations=confirmations)


# Native balances ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Found:
    deposit: DepositAddress
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    sender: str
    amount: int


def _reconcile_native(
    *,
    network: Network,
    chain: Chain,
    head: int,
    watch: list[str],
    report: ScanReport,
    token: str,
) -> None:
    """Find ETH that reached watched deposit addresses without a top-level transaction.

    At a confirmed block, each address's balance rise since its last reconciled block, less
    the native transfers recorded in between, arrived by contract calls. Tracing names those
    transactions where the node can trace; what tracing does not explain is recorded at the
    block, without a transaction hash. Money only leaving (a sweep) records nothing.
    """
    asset = network.assets.filter(contract_address="", enabled=True).first()
    multicall = network.effective_multicall_address
    cursor = ChainCursor.objects.filter(network=network).first()
    if asset is None or not multicall or cursor is None:
        return
    target = min(head - network.effective_confirmations + 1, cursor.next_block - 1)
    if target < 0:
        return
    deposits = {d.address: d for d in DepositAddress.objects.filter(address__in=watch)}
    baselines = {
        b.deposit_address_id: b
        for b in NativeBalance.objects.filter(
            network=network, deposit_address__in=deposits.values()
        )
    }
    due = [
        d
        for d in deposits.values()
        if d.pk not in baselines or baselines[d.pk].block_number < target
    ]
    if not due:
        return
    balances = chain.native_balances(multicall, [d.address for d in due], block=target)
    recorded = _recorded_native(network, asset, due, baselines, target)
    unexplained: dict[int, int] = {}
    for deposit in due:
        base = baselines.get(deposit.pk)
        before = int(base.balance) if base else 0
        missing = balances[deposit.address] - before - recorded.get(deposit.pk, 0)
        if missing > 0:
            unexplained[deposit.pk] = missing
    found = (
        _explain(network, chain, target, deposits, baselines, unexplained) if unexplained else []
    )
    now = timezone.now()
    with transaction.atomic():
        _lease_renew(network, token)
        for item in found:
            transfer, created = Transfer.objects.get_or_create(
                network=network,
                tx_hash=item.tx_hash,
                log_index=item.log_index,
                defaults={
                    "asset": asset,
                    "deposit_address": item.deposit,
                    "block_number": item.block_number,
                    "block_hash": item.block_hash,
                    "from_address": item.sender,
                    "to_address": item.deposit.address,
                    "amount": item.amount,
                    # At a confirmed block already: it counts at once.
                    "status": TransferStatus.CONFIRMED,
                    "confirmations": head - item.block_number + 1,
                    "confirmed_at": now,
                },
            )
            if created:
                report.new.append(transfer.pk)
                report.confirmed.append(transfer.pk)
                logger.info(
                    "%s wei reached %s by a contract call (%s)",
                    item.amount,
                    item.deposit.address,
                    item.tx_hash,
                )
        NativeBalance.objects.bulk_create(
            [
                NativeBalance(
                    network=network,
                    deposit_address=d,
                    block_number=target,
                    balance=Decimal(balances[d.address]),
                )
                for d in due
            ],
            update_conflicts=True,
            unique_fields=["network", "deposit_address"],
            update_fields=["block_number", "balance", "updated_at"],
        )


def _recorded_native(
    network: Network,
    asset: Asset,
    due: list[DepositAddress],
    baselines: dict[int, NativeBalance],
    target: int,
) -> dict[int, int]:
    """Native amounts already recorded per address since its baseline, up to `target`."""
    live = Transfer.objects.filter(network=network, asset=asset, block_number__lte=target).exclude(
        status=TransferStatus.ORPHANED
    )
    since: dict[int, list[int]] = {}
    for deposit in due:
        base = baselines.get(deposit.pk)
        since.setdefault(base.block_number if base else -1, []).append(deposit.pk)
    recorded: dict[int, int] = {}
    for after, ids in since.items():
        # Exact on every database (merchants.fields): SQLite's SUM() adds in floats.
        rows = exact_totals(
            live.filter(deposit_address_id__in=ids, block_number__gt=after),
            ["deposit_address_id"],
            "amount",
        )
        for row in rows:
            recorded[row["deposit_address_id"]] = int(row["total"])
    return recorded


def _explain(
    network: Network,
    chain: Chain,
    target: int,
    deposits: dict[str, DepositAddress],
    baselines: dict[int, NativeBalance],
    unexplained: dict[int, int],
) -> list[_Found]:
    """Name the transactions behind unexplained balance rises by tracing; the rest is
    recorded at `target` under the synthetic hash "balance:<block>:<address>"."""
    by_id = {d.pk: d for d in deposits.values()}
    limit = settings.CHAIN_TRACE_MAX_BLOCKS
    starts = [
        baselines[pk].block_number + 1 if pk in baselines else target - limit + 1
        for pk in unexplained
    ]
    first = max(0, min(starts), target - limit + 1)
    traced: list[InternalTransfer] = []
    try:
        traced = chain.internal_transfers(first, target, {by_id[pk].address for pk in unexplained})
    except Unsupported:
        logger.info("%s: the node cannot trace; recording ETH without its transaction", network)
    found = []
    target_hash: str | None = None
    for pk, missing in unexplained.items():
        deposit = by_id[pk]
        after = baselines[pk].block_number if pk in baselines else -1
        for item in traced:
            if item.recipient != deposit.address or item.block_number <= after:
                continue
            # A traced call is real money, even where a sweep in the same window hides it
            # from the balance.
            found.append(
                _Found(
                    deposit,
                    item.tx_hash,
                    -2 - item.ordinal,
                    item.block_number,
                    item.block_hash,
                    item.sender,
                    item.amount,
                )
            )
            missing -= item.amount
        if missing > 0:
            if target_hash is None:
                target_hash = chain.block_hashes([target])[target] or ""
            found.append(
                _Found(
                    deposit,
                    f"{BALANCE_TX_PREFIX}{target}:{deposit.address}",
                    -2,
                    target,
                    target_hash,
                    "",
                    missing,
                )
            )
    return found
