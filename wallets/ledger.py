"""Double-entry ledger: `ledger_post` is the only way money moves in the books.

Every posting is one LedgerTransaction whose legs sum to zero in each currency (checked here,
and on PostgreSQL again by a deferred constraint trigger). Entries are never changed or
deleted; corrections are reversals. Cached balances move in the same database transaction.

Signs: positive is credit, negative is debit. A confirmed payment of a $100 invoice with
100 USDC on Base, the merchant paying a 1% fee, is:

    holdings:base  USDC  -100     (debit: we hold 100 USDC more)
    fx             USDC  +100
    fx             USD   -100
    merchant:7     USD    +99     (credit: we owe the merchant $99)
    fees           USD     +1
"""

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q

from merchants.fields import exact_sum, exact_totals
from merchants.models import Merchant
from wallets.models import (
    CACHED_KINDS,
    NON_NEGATIVE_KINDS,
    AccountKind,
    Balance,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
)

# Postings that pay money out of holdings to an outside address (a refund to a payer). The
# transfer that carried it is verified by the poster, not recorded as a deposit here.
OUTGOING_KINDS = frozenset({"refund"})


class LedgerError(Exception):
    pass


class Unbalanced(LedgerError):
    pass


class InsufficientBalance(LedgerError):
    pass


class IdempotencyConflict(LedgerError):
    """The key was used before for a posting with other legs."""


@dataclass(frozen=True)
class Leg:
    account: LedgerAccount
    currency: str
    amount: Decimal


def account_for(
    *, kind: str, code: str, name: str, merchant: Merchant | None = None
) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=code, defaults={"kind": kind, "name": name, "merchant": merchant}
    )
    return account


def merchant_account(merchant: Merchant) -> LedgerAccount:
    return account_for(
        kind=AccountKind.MERCHANT,
        code=f"merchant:{merchant.pk}",
        name=f"{merchant.name} balance",
        merchant=merchant,
    )


def holdings_account(network_slug: str) -> LedgerAccount:
    return account_for(
        kind=AccountKind.HOLDINGS,
        code=f"holdings:{network_slug}",
        name=f"Holdings on {network_slug}",
    )


def fx_account() -> LedgerAccount:
    return account_for(kind=AccountKind.FX, code="fx", name="Currency exchange")


def held_account(merchant: Merchant) -> LedgerAccount:
    """Money received for a merchant that a compliance hold keeps out of their balance."""
    return account_for(
        kind=AccountKind.HELD,
        code=f"held:{merchant.pk}",
        name=f"{merchant.name} held by compliance",
        merchant=merchant,
    )


def fees_account() -> LedgerAccount:
    return account_for(kind=AccountKind.FEES, code="fees", name="Platform fees")


def _check_balanced(legs: list[Leg]) -> None:
    if not legs:
        raise Unbalanced("A posting needs legs that move something.")
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for leg in legs:
        totals[leg.currency] += leg.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise Unbalanced(f"Legs do not sum to zero: {unbalanced}")


def _same_legs(existing: LedgerTransaction, legs: list[Leg]) -> bool:
    stored = sorted(
        (e.account_id, e.currency, e.amount.normalize()) for e in existing.entries.all()
    )
    wanted = sorted((leg.account.pk, leg.currency, leg.amount.normalize()) for leg in legs)
    return stored == wanted


def ledger_post(
    *,
    kind: str,
    idempotency_key: str,
    legs: list[Leg],
    reference: str = "",
    memo: str = "",
    reverses: LedgerTransaction | None = None,
) -> LedgerTransaction:
    """Post once. The same key again returns the first posting and changes nothing.

    Legs of zero (a fee of 0 on a self-hosted install) are left out rather than stored.
    """
    legs = [leg for leg in legs if leg.amount != 0]
    _check_balanced(legs)
    with transaction.atomic():
        try:
            with transaction.atomic():
                posted = LedgerTransaction.objects.create(
                    kind=kind,
                    idempotency_key=idempotency_key,
                    reference=reference,
                    memo=memo,
                    reverses=reverses,
                )
        except IntegrityError:
            # Retried (or raced by a twin): the first posting stands.
            existing = LedgerTransaction.objects.get(idempotency_key=idempotency_key)
            if not _same_legs(existing, legs):
                raise IdempotencyConflict(
                    f"Key {idempotency_key!r} was already posted with other legs."
                ) from None
            return existing
        LedgerEntry.objects.bulk_create(
            LedgerEntry(
                transaction=posted, account=leg.account, currency=leg.currency, amount=leg.amount
            )
            for leg in legs
        )
        _move_balances(legs)
    return posted


def _move_balances(legs: list[Leg]) -> None:
    """Move the cached balances of merchant accounts, refusing to take one below zero.

    Only merchant balances are cached: they are read on every page and must be checked before
    money leaves. Internal accounts (holdings, fx, fees) are summed from their entries when
    asked; caching them would make every posting queue on the same few hot rows.
    """
    moves: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    accounts = {}
    for leg in legs:
        if leg.account.kind in CACHED_KINDS:
            moves[(leg.account.pk, leg.currency)] += leg.amount
            accounts[leg.account.pk] = leg.account
    if not moves:
        return
    Balance.objects.bulk_create(
        [
            Balance(account_id=account_id, currency=currency, non_negative=True)
            for account_id, currency in moves
        ],
        ignore_conflicts=True,
    )
    # Lock the rows in one fixed order, so two postings touching the same balances can never
    # wait on each other in a cycle.
    keys = Q()
    for account_id, currency in moves:
        keys |= Q(account_id=account_id, currency=currency)
    locked = Balance.objects.select_for_update().filter(keys).order_by("account_id", "currency")
    for balance in locked:
        delta = moves[(balance.account_id, balance.currency)]
        if balance.amount + delta < 0:
            account = accounts[balance.account_id]
            raise InsufficientBalance(
                f"{account.code} has {balance.amount} {balance.currency}; cannot take {-delta}."
            )
        # The row is locked (and SQLite writes one at a time), so the new value is computed
        # here: arithmetic in SQL would be float arithmetic on SQLite.
        Balance.objects.filter(pk=balance.pk).update(amount=balance.amount + delta)


def account_balance(account: LedgerAccount, currency: str) -> Decimal:
    """An account's balance as stored (credit positive): cached or summed from entries."""
    if account.kind in CACHED_KINDS:
        row = Balance.objects.filter(account=account, currency=currency).first()
        return row.amount if row else Decimal(0)
    return exact_sum(LedgerEntry.objects.filter(account=account, currency=currency), "amount")


def ledger_reverse(*, posting: LedgerTransaction, reason: str) -> LedgerTransaction:
    """Undo a posting with its mirror image; the original stays in the books."""
    legs = [
        Leg(e.account, e.currency, -e.amount) for e in posting.entries.select_related("account")
    ]
    return ledger_post(
        kind=f"reversal:{posting.kind}",
        idempotency_key=f"reversal:{posting.idempotency_key}",
        legs=legs,
        reference=posting.reference,
        memo=reason,
        reverses=posting,
    )


@dataclass(frozen=True)
class Drift:
    account: str
    currency: str
    cached: Decimal
    from_entries: Decimal


def balances_drift() -> list[Drift]:
    """Cached balances that disagree with the sum of their entries."""
    sums = {
        (row["account_id"], row["currency"]): row["total"]
        for row in exact_totals(
            LedgerEntry.objects.filter(account__kind__in=CACHED_KINDS),
            ["account_id", "currency"],
            "amount",
        )
    }
    cached = {(b.account_id, b.currency): b for b in Balance.objects.select_related("account")}
    codes = dict(LedgerAccount.objects.values_list("pk", "code"))
    drift = []
    for key in sorted(set(sums) | set(cached)):
        want = sums.get(key, Decimal(0))
        have = cached[key].amount if key in cached else Decimal(0)
        if want != have:
            drift.append(Drift(codes[key[0]], key[1], have, want))
    return drift


def balances_rebuild() -> int:
    """Set every cached balance to the sum of its entries; returns how many changed."""
    changed = 0
    with transaction.atomic():
        for item in balances_drift():
            account = LedgerAccount.objects.get(code=item.account)
            Balance.objects.update_or_create(
                account=account,
                currency=item.currency,
                defaults={
                    "amount": item.from_entries,
                    "non_negative": account.kind in NON_NEGATIVE_KINDS,
                },
            )
            changed += 1
    return changed
