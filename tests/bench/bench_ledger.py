"""Ledger postings per second on PostgreSQL, against a bare transaction writing the same rows.

A posting is a payment as settlement books it: five legs (holdings, fx twice, the merchant,
fees), one cached merchant balance moved. `ledger_post` does it with its checks (balanced legs,
the idempotency key, the balance floor); the baseline is a bare transaction of raw SQL on the
same connection type inserting the same rows: the transaction row, its five entries in one
INSERT, and an UPDATE of the balance, nothing read back. Both go through the same tables, so
both pay for the same indexes and the same append-only and balanced-sum triggers.

Writers are processes (so the figures measure the database, not the GIL), each with its own
connection and its own merchant, as concurrent payments of different shops are; 1 and 8 of
them, each posting POSTINGS / writers times. Rounds are interleaved so that load from
elsewhere hits both alike; the median is printed. Run with `make bench` and
DATABASE_URL=postgres://...; figures are printed, never asserted; the books balancing is.
"""

import multiprocessing
import statistics
import time
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from tests.factories import MerchantFactory
from wallets.ledger import (
    Leg,
    account_balance,
    balances_drift,
    fees_account,
    fx_account,
    holdings_account,
    ledger_post,
    merchant_account,
)
from wallets.models import Balance, LedgerEntry, LedgerTransaction

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = (1, 8)
POSTINGS = 400  # per round, shared among the writers
ROUNDS = 3
RECEIVED, FEE, CREDITED = Decimal("10"), Decimal("0.10"), Decimal("9.90")


def _legs(merchant_account_, shared) -> list[Leg]:
    holdings, fx, fees = shared
    return [
        Leg(holdings, "USDC", -RECEIVED),
        Leg(fx, "USDC", RECEIVED),
        Leg(fx, "USD", -(CREDITED + FEE)),
        Leg(merchant_account_, "USD", CREDITED),
        Leg(fees, "USD", FEE),
    ]


def _post_with_ledger(legs: list[Leg], key: str) -> None:
    ledger_post(kind="payment", idempotency_key=key, legs=legs, reference=key)


def _post_bare(legs: list[Leg], key: str) -> None:
    now = timezone.now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO wallets_ledgertransaction "
            "(kind, reference, idempotency_key, memo, reverses_id, created_at) "
            "VALUES (%s, %s, %s, '', NULL, %s) RETURNING id",
            ["payment", key, key, now],
        )
        (posting_id,) = cursor.fetchone()
        rows = [(posting_id, leg.account.pk, leg.currency, leg.amount) for leg in legs]
        cursor.execute(
            "INSERT INTO wallets_ledgerentry (transaction_id, account_id, currency, amount) "
            "VALUES " + ", ".join(["(%s, %s, %s, %s)"] * len(rows)),
            [value for row in rows for value in row],
        )
        cursor.execute(
            "UPDATE wallets_balance SET amount = amount + %s, updated_at = %s "
            "WHERE account_id = %s AND currency = %s",
            [CREDITED, now, legs[3].account.pk, "USD"],
        )


WAYS = {"ledger_post": _post_with_ledger, "bare transaction": _post_bare}


def _writer(way: str, legs: list[Leg], prefix: str, count: int, barrier, results) -> None:
    try:
        post = WAYS[way]
        barrier.wait()
        for n in range(count):
            post(legs, f"{prefix}:{n}")
        results.put(None)
    except BaseException as error:  # reported by the parent
        results.put(repr(error))
    finally:
        connections.close_all()


def _rate(way: str, legs_of: list[list[Leg]], writers: int, label: str) -> float:
    """POSTINGS postings by `writers` processes, per second of wall time."""
    per_writer = POSTINGS // writers
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(writers + 1)
    results = context.Queue()
    # Each child opens its own connection; none may inherit (and later close) the parent's.
    connections.close_all()
    processes = [
        context.Process(
            target=_writer,
            args=(way, legs_of[w], f"{label}:{w}", per_writer, barrier, results),
        )
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait(timeout=60)
    started = time.perf_counter()
    outcomes = [results.get(timeout=300) for _ in processes]
    elapsed = time.perf_counter() - started
    for process in processes:
        process.join(timeout=30)
    assert outcomes == [None] * writers, outcomes
    return per_writer * writers / elapsed


def test_ledger_postings_per_second(capsys):
    if connection.vendor != "postgresql":
        pytest.skip(
            "Ledger throughput is measured on PostgreSQL with concurrent writers: "
            "set DATABASE_URL=postgres://..."
        )
    shared = (holdings_account("base"), fx_account(), fees_account())
    shops = [MerchantFactory.create(name=f"Shop {w}") for w in range(max(WRITERS))]
    accounts = [merchant_account(shop) for shop in shops]
    legs_of = [_legs(account, shared) for account in accounts]
    for account in accounts:  # every merchant has had a first payment: its balance row exists
        Balance.objects.create(account=account, currency="USD", non_negative=True)

    rates: dict[tuple[str, int], list[float]] = {
        (way, writers): [] for way in WAYS for writers in WRITERS
    }
    for round_ in range(ROUNDS):
        for writers in WRITERS:
            for way in WAYS:
                label = f"{way}:{writers}:{round_}"
                rates[way, writers].append(_rate(way, legs_of, writers, label))

    # The books: every posting counted once, balanced, and the cached balances exact.
    per_way = sum(POSTINGS // writers * writers for writers in WRITERS) * ROUNDS
    assert LedgerTransaction.objects.count() == 2 * per_way
    assert LedgerEntry.objects.count() == 2 * per_way * 5
    credited = sum(account_balance(account, "USD") for account in accounts)
    assert credited == 2 * per_way * CREDITED
    assert balances_drift() == []

    median = {key: statistics.median(values) for key, values in rates.items()}
    with capsys.disabled():
        print(
            f"\nLedger postings on PostgreSQL (5 legs, 1 cached balance), median of {ROUNDS} "
            f"rounds of {POSTINGS}; writers are processes, one merchant each"
        )
        print(f"{'':<20}{'writers':>8}{'per s':>9}{'x bare':>9}")
        for writers in WRITERS:
            base = median["bare transaction", writers]
            rate = median["ledger_post", writers]
            print(f"{'bare transaction':<20}{writers:>8}{base:>9.0f}{1:>9.2f}")
            print(f"{'ledger_post':<20}{writers:>8}{rate:>9.0f}{rate / base:>9.2f}")
