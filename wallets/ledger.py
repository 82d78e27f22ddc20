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
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import connections, router, transaction
from django.db.models import Q
from django.utils import timezone

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


def claimed_account(network_slug: str, merchant: Merchant) -> LedgerAccount:
    """Holdings claimed from deposit addresses to the merchant's account address: the other
    half of a network's holdings ("at the account" beside "at deposit addresses")."""
    return account_for(
        kind=AccountKind.CLAIMED,
        code=f"claimed:{network_slug}:{merchant.pk}",
        name=f"{merchant.name}: claimed to the account on {network_slug}",
        merchant=merchant,
    )


def network_fees_account(network_slug: str) -> LedgerAccount:
    """Gas paid to the network (claims): money that left for the outside world."""
    return account_for(
        kind=AccountKind.OFF_LEDGER,
        code=f"network-fees:{network_slug}",
        name=f"Blockchain fees paid on {network_slug}",
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
        posted = LedgerTransaction(
            kind=kind,
            idempotency_key=idempotency_key,
            reference=reference,
            memo=memo,
            reverses=reverses,
        )
        if not _insert([posted], once=True):
            # Retried (or raced by a twin, whose commit the insert waited for): the first
            # posting stands.
            existing = LedgerTransaction.objects.prefetch_related("entries").get(
                idempotency_key=idempotency_key
            )
            if not _same_legs(existing, legs):
                raise IdempotencyConflict(
                    f"Key {idempotency_key!r} was already posted with other legs."
                )
            return existing
        _insert(
            [
                LedgerEntry(
                    transaction=posted,
                    account=leg.account,
                    currency=leg.currency,
                    amount=leg.amount,
                )
                for leg in legs
            ]
        )
        _move_balances(legs)
    return posted


# The write path is a few plain statements built from the models' own fields (their columns
# and database conversions): a posting is the books' hottest write, and the ORM's compiling
# of each statement, model bookkeeping and RETURNING of ids nobody reads cost more here than
# the statements themselves.


def _insert(rows: Sequence[LedgerTransaction | LedgerEntry], *, once: bool = False) -> bool:
    """INSERT the rows (of one model) in one statement. With `once` (one LedgerTransaction):
    only if its idempotency key is free, setting its pk; returns whether it was inserted.

    `ON CONFLICT DO NOTHING` (PostgreSQL and SQLite alike) instead of an insert in a savepoint
    that catches the unique violation: a savepoint is two more round trips on every posting,
    for the rare retry. A concurrent twin's insert waits on the unique index until the first
    commits, then finds the key taken (or inserts, if the first rolled back).
    """
    model = type(rows[0])
    connection = connections[router.db_for_write(model)]
    meta = model._meta
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    quote = connection.ops.quote_name
    params = [
        field.get_db_prep_save(field.pre_save(row, True), connection)
        for row in rows
        for field in fields
    ]
    # Only the models' own quoted names go into the text; every value is a parameter.
    columns = ", ".join(quote(str(field.column)) for field in fields)
    one = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES {', '.join([one] * len(rows))}"  # noqa: S608
    if once:
        key = quote(str(LedgerTransaction._meta.get_field("idempotency_key").column))
        sql += f" ON CONFLICT ({key}) DO NOTHING RETURNING {quote(str(meta.pk.column))}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchone() if once else None
    if not once:
        return True
    if inserted is None:
        return False
    (posted,) = rows
    posted.pk = inserted[0]
    posted._state.adding = False
    posted._state.db = connection.alias
    return True


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
    # One fixed order (the rows are locked as they are updated), so two postings touching the
    # same balances can never wait on each other in a cycle.
    keys = sorted(key for key, delta in moves.items() if delta != 0)
    if not keys:
        return
    connection = connections[router.db_for_write(Balance)]
    if connection.vendor == "sqlite":
        _move_balances_in_python(keys, moves, accounts)
        return
    quote = connection.ops.quote_name
    table = quote(Balance._meta.db_table)
    # One statement per row: it locks the row, checks the floor and moves the amount, in
    # PostgreSQL's exact numeric arithmetic. A row it leaves alone is missing or would go
    # below zero.
    move = (
        f"UPDATE {table} SET amount = amount + %s, updated_at = %s "  # noqa: S608
        "WHERE account_id = %s AND currency = %s AND (amount + %s >= 0 OR NOT non_negative)"
    )
    with connection.cursor() as cursor:
        for account_id, currency in keys:
            delta = moves[(account_id, currency)]
            cursor.execute(move, [delta, timezone.now(), account_id, currency, delta])
            if cursor.rowcount:
                continue
            if delta < 0:
                raise _insufficient(accounts[account_id], currency, delta)
            # The account's first money in this currency: make the row (or find that a twin
            # just made it), then move it.
            Balance.objects.bulk_create(
                [Balance(account_id=account_id, currency=currency, non_negative=True)],
                ignore_conflicts=True,
            )
            cursor.execute(move, [delta, timezone.now(), account_id, currency, delta])


def _move_balances_in_python(
    keys: list[tuple[int, str]],
    moves: dict[tuple[int, str], Decimal],
    accounts: dict[int, LedgerAccount],
) -> None:
    # SQLite stores amounts as exact TEXT, where arithmetic in SQL would be float arithmetic;
    # the new value is computed here instead (SQLite writes one at a time, so nothing moves
    # the row between the read and the write).
    Balance.objects.bulk_create(
        [
            Balance(account_id=account_id, currency=currency, non_negative=True)
            for account_id, currency in keys
        ],
        ignore_conflicts=True,
    )
    keys_q = Q()
    for account_id, currency in keys:
        keys_q |= Q(account_id=account_id, currency=currency)
    for balance in Balance.objects.filter(keys_q).order_by("account_id", "currency"):
        delta = moves[(balance.account_id, balance.currency)]
        if balance.amount + delta < 0:
            raise _insufficient(accounts[balance.account_id], balance.currency, delta)
        Balance.objects.filter(pk=balance.pk).update(
            amount=balance.amount + delta, updated_at=timezone.now()
        )


def _insufficient(account: LedgerAccount, currency: str, delta: Decimal) -> InsufficientBalance:
    # Only on the refusal path: the successful one never reads the balance.
    row = Balance.objects.filter(account=account, currency=currency).first()
    have = row.amount if row else Decimal(0)
    return InsufficientBalance(f"{account.code} has {have} {currency}; cannot take {-delta}.")


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
