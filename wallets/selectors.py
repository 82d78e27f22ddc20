from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import QuerySet

from merchants.fields import exact_totals
from merchants.models import Merchant
from wallets.claims import uncollected
from wallets.models import (
    AccountKind,
    Asset,
    Balance,
    DepositAddress,
    LedgerEntry,
    Network,
    Transfer,
    TransferStatus,
    Wallet,
)


def merchant_balances(*, merchant: Merchant) -> list[Balance]:
    return list(
        Balance.objects.filter(account__merchant=merchant, account__kind="merchant")
        .select_related("account")
        .order_by("currency")
    )


@dataclass(frozen=True)
class Holding:
    network: str
    symbol: str
    decimals: int
    confirmed: Decimal
    confirming: Decimal
    transfers: int


def merchant_holdings(*, merchant: Merchant) -> list[Holding]:
    """What sits at the merchant's deposit addresses, per network and asset (not yet swept)."""
    rows = exact_totals(
        Transfer.objects.filter(deposit_address__merchant=merchant).exclude(
            status=TransferStatus.ORPHANED
        ),
        ["network__name", "asset__symbol", "asset__decimals", "status"],
        "amount",
    )
    grouped: dict[tuple[str, str, int], dict[str, Decimal | int]] = {}
    for row in rows:
        key = (row["network__name"], row["asset__symbol"], row["asset__decimals"])
        slot = grouped.setdefault(key, {"confirmed": Decimal(0), "confirming": Decimal(0), "n": 0})
        major = Decimal(int(row["total"])).scaleb(-row["asset__decimals"])
        slot["confirmed" if row["status"] == TransferStatus.CONFIRMED else "confirming"] += major
        slot["n"] += row["n"]
    return [
        Holding(
            network,
            symbol,
            decimals,
            Decimal(v["confirmed"]),
            Decimal(v["confirming"]),
            int(v["n"]),
        )
        for (network, symbol, decimals), v in grouped.items()
    ]


def ledger_entries(
    *,
    merchant: Merchant,
    currency: str = "",
    kind: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet[LedgerEntry]:
    entries = LedgerEntry.objects.filter(account__merchant=merchant).select_related("transaction")
    if currency:
        entries = entries.filter(currency=currency)
    if kind:
        entries = entries.filter(transaction__kind=kind)
    if date_from:
        entries = entries.filter(transaction__created_at__date__gte=date_from)
    if date_to:
        entries = entries.filter(transaction__created_at__date__lte=date_to)
    return entries.order_by("-transaction__created_at", "-pk")


def transfer_list(*, merchant: Merchant, status: str = "", network: str = "") -> QuerySet[Transfer]:
    transfers = Transfer.objects.filter(deposit_address__merchant=merchant).select_related(
        "network", "asset", "deposit_address"
    )
    if status:
        transfers = transfers.filter(status=status)
    if network:
        transfers = transfers.filter(network__slug=network)
    return transfers.order_by("-seen_at", "-pk")


@dataclass(frozen=True)
class FundedAddress:
    address: str
    key_fingerprint: str
    derivation_index: int
    network: str
    symbol: str
    confirmed: Decimal
    unconfirmed: Decimal
    transfers: int
    first_seen: datetime
    last_seen: datetime


def funded_addresses(*, merchant: Merchant) -> Iterator[FundedAddress]:
    """Every deposit address of the merchant that received money, per network and asset,
    in key and index order: what a wallet needs to find funds beyond its gap limit."""
    # Grouped here, streaming over rows in group order: an SQL SUM would be a float sum on
    # SQLite (merchants.fields), and the export stays flat in memory however long it is.
    keys = (
        "deposit_address__key_fingerprint",
        "deposit_address__derivation_index",
        "network__name",
        "asset__symbol",
    )
    rows = (
        Transfer.objects.filter(deposit_address__merchant=merchant)
        .exclude(status=TransferStatus.ORPHANED)
        .order_by(*keys, "pk")
        .values_list(
            *keys, "deposit_address__address", "asset__decimals", "status", "amount", "seen_at"
        )
    )
    group: dict | None = None
    for (
        fingerprint,
        index,
        network,
        symbol,
        address,
        decimals,
        status,
        amount,
        seen,
    ) in rows.iterator(chunk_size=1000):
        key = (fingerprint, index, network, symbol)
        if group is not None and group["key"] != key:
            yield _funded(group)
            group = None
        if group is None:
            group = {
                "key": key,
                "address": address,
                "decimals": decimals,
                "confirmed": Decimal(0),
                "unconfirmed": Decimal(0),
                "n": 0,
                "first": seen,
                "last": seen,
            }
        group["confirmed" if status == TransferStatus.CONFIRMED else "unconfirmed"] += amount
        group["n"] += 1
        group["first"], group["last"] = min(group["first"], seen), max(group["last"], seen)
    if group is not None:
        yield _funded(group)


def _funded(group: dict) -> FundedAddress:
    fingerprint, index, network, symbol = group["key"]
    decimals = group["decimals"]
    return FundedAddress(
        address=group["address"],
        key_fingerprint=fingerprint,
        derivation_index=index,
        network=network,
        symbol=symbol,
        confirmed=Decimal(int(group["confirmed"])).scaleb(-decimals),
        unconfirmed=Decimal(int(group["unconfirmed"])).scaleb(-decimals),
        transfers=group["n"],
        first_seen=group["first"],
        last_seen=group["last"],
    )


def wallet_addresses_handed_out(*, wallet: Wallet) -> int:
    """How many addresses the wallet's current key has given to payments."""
    return DepositAddress.objects.filter(
        wallet=wallet, key_fingerprint=wallet.key_fingerprint
    ).count()


@dataclass(frozen=True)
class HoldingSplit:
    """Forwarder holdings of one network and asset: still at deposit addresses, and claimed
    to the merchant's account (the ledger's "claimed:<network>:<merchant>")."""

    network: str
    symbol: str
    at_deposit_addresses: Decimal
    at_account: Decimal


def holdings_split(*, merchant: Merchant) -> list[HoldingSplit]:
    networks = dict(Network.objects.values_list("pk", "name"))
    slugs = dict(Network.objects.values_list("slug", "name"))
    assets = {a.pk: a for a in Asset.objects.all()}
    split: dict[tuple[str, str], list[Decimal]] = {}
    for held in uncollected(merchant=merchant):
        asset = assets[held.asset_id]
        key = (str(networks[held.network_id]), asset.symbol)
        split.setdefault(key, [Decimal(0), Decimal(0)])[0] += asset.to_major(held.amount)
    for row in exact_totals(
        LedgerEntry.objects.filter(account__merchant=merchant, account__kind=AccountKind.CLAIMED),
        ["account__code", "currency"],
        "amount",
    ):
        name = str(slugs.get(row["account__code"].split(":")[1], row["account__code"]))
        # Debit-normal: stored negative.
        split.setdefault((name, row["currency"]), [Decimal(0), Decimal(0)])[1] -= row["total"]
    return [
        HoldingSplit(network, symbol, values[0], values[1])
        for (network, symbol), values in sorted(split.items())
    ]
