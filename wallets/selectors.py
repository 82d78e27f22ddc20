from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db.models import Count, Max, Min, Q, QuerySet, Sum

from merchants.models import Merchant
from wallets.models import Balance, DepositAddress, LedgerEntry, Transfer, TransferStatus, Wallet


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
    rows = (
        Transfer.objects.filter(deposit_address__merchant=merchant)
        .exclude(status=TransferStatus.ORPHANED)
        .values("network__name", "asset__symbol", "asset__decimals", "status")
        .annotate(total=Sum("amount"), n=Count("pk"))
        .order_by("network__name", "asset__symbol")
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
    rows = (
        Transfer.objects.filter(deposit_address__merchant=merchant)
        .exclude(status=TransferStatus.ORPHANED)
        .values(
            "deposit_address__address",
            "deposit_address__key_fingerprint",
            "deposit_address__derivation_index",
            "network__name",
            "asset__symbol",
            "asset__decimals",
        )
        .annotate(
            confirmed=Sum("amount", filter=Q(status=TransferStatus.CONFIRMED)),
            unconfirmed=Sum("amount", filter=~Q(status=TransferStatus.CONFIRMED)),
            n=Count("pk"),
            first_seen=Min("seen_at"),
            last_seen=Max("seen_at"),
        )
        .order_by(
            "deposit_address__key_fingerprint",
            "deposit_address__derivation_index",
            "network__name",
            "asset__symbol",
        )
    )
    for row in rows.iterator(chunk_size=1000):
        decimals = row["asset__decimals"]
        yield FundedAddress(
            address=row["deposit_address__address"],
            key_fingerprint=row["deposit_address__key_fingerprint"],
            derivation_index=row["deposit_address__derivation_index"],
            network=row["network__name"],
            symbol=row["asset__symbol"],
            confirmed=Decimal(int(row["confirmed"] or 0)).scaleb(-decimals),
            unconfirmed=Decimal(int(row["unconfirmed"] or 0)).scaleb(-decimals),
            transfers=row["n"],
            first_seen=row["first_seen"],
            last_seen=row["last_seen"],
        )


def wallet_addresses_handed_out(*, wallet: Wallet) -> int:
    """How many addresses the wallet's current key has given to payments."""
    return DepositAddress.objects.filter(
        wallet=wallet, key_fingerprint=wallet.key_fingerprint
    ).count()
