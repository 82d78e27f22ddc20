"""The ledger told as accounting stories, then its guards."""

import threading
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, InternalError, connection, transaction

from tests.conftest import on_postgres, require_postgres
from tests.factories import MerchantFactory
from wallets.ledger import (
    IdempotencyConflict,
    InsufficientBalance,
    Leg,
    Unbalanced,
    account_balance,
    balances_drift,
    balances_rebuild,
    fees_account,
    fx_account,
    holdings_account,
    ledger_post,
    ledger_reverse,
    merchant_account,
)
from wallets.models import Balance, LedgerEntry, LedgerTransaction

D = Decimal
pytestmark = pytest.mark.django_db


def balance(account, currency) -> Decimal:
    return account.natural(account_balance(account, currency))


def payment_legs(merchant, *, received="100", fee="1.00", credited="99.00", network="base"):
    """A payer settles an invoice in USD with USDC; the merchant pays the fee."""
    return [
        Leg(holdings_account(network), "USDC", -D(received)),
        Leg(fx_account(), "USDC", D(received)),
        Leg(fx_account(), "USD", -(D(credited) + D(fee))),
        Leg(merchant_account(merchant), "USD", D(credited)),
        Leg(fees_account(), "USD", D(fee)),
    ]


def pay(merchant, key, **amounts):
    return ledger_post(kind="payment", idempotency_key=key, legs=payment_legs(merchant, **amounts))


def test_story_a_usdc_payment_of_a_usd_invoice_credits_the_merchant_in_usd(acme):
    pay(acme, "payment:1")
    assert balance(holdings_account("base"), "USDC") == D("100")
    assert balance(merchant_account(acme), "USD") == D("99.00")
    assert balance(fees_account(), "USD") == D("1.00")
    # fx took USDC in and gave USD out: it is square in value, not in units.
    assert balance(fx_account(), "USDC") == D("100")
    assert balance(fx_account(), "USD") == D("-100.00")


def test_story_two_payments_then_a_refund_by_reversal(acme):
    first = pay(acme, "payment:1")
    pay(acme, "payment:2", received="50", fee="0.50", credited="49.50")
    ledger_reverse(posting=first, reason="Refunded to the payer")
    assert balance(merchant_account(acme), "USD") == D("49.50")
    assert balance(holdings_account("base"), "USDC") == D("50")
    assert LedgerEntry.objects.count() == 15  # nothing deleted: the refund is five more legs
    assert first.reversed_by.memo == "Refunded to the payer"


def test_every_posting_sums_to_zero_in_each_currency(acme, globex):
    pay(acme, "p1")
    pay(globex, "p2", received="12.5", fee="0", credited="12.50")  # no fee: its leg is left out
    for posting in LedgerTransaction.objects.prefetch_related("entries"):
        sums: dict[str, Decimal] = {}
        for entry in posting.entries.all():
            sums[entry.currency] = sums.get(entry.currency, D(0)) + entry.amount
        assert set(sums.values()) == {D(0)}


def test_unbalanced_postings_are_refused_and_write_nothing(acme):
    legs = payment_legs(acme)[:-1]  # forget the fee leg
    with pytest.raises(Unbalanced):
        ledger_post(kind="payment", idempotency_key="bad", legs=legs)
    assert LedgerTransaction.objects.count() == 0
    assert Balance.objects.count() == 0


def test_zero_legs_are_left_out_and_a_posting_of_nothing_is_refused(acme):
    posting = pay(acme, "no-fee", received="10", fee="0", credited="10")
    assert posting.entries.count() == 4
    with pytest.raises(Unbalanced):
        ledger_post(
            kind="x",
            idempotency_key="zero",
            legs=[Leg(fx_account(), "USD", D(0)), Leg(fees_account(), "USD", D(0))],
        )


def test_replaying_a_posting_is_a_no_op(acme):
    first = pay(acme, "payment:1")
    again = pay(acme, "payment:1")
    assert again.pk == first.pk
    assert LedgerTransaction.objects.count() == 1
    assert balance(merchant_account(acme), "USD") == D("99.00")


def test_same_key_with_other_legs_is_a_conflict(acme):
    pay(acme, "payment:1")
    with pytest.raises(IdempotencyConflict):
        pay(acme, "payment:1", received="101", fee="1.00", credited="100.00")
    assert balance(merchant_account(acme), "USD") == D("99.00")


def test_merchant_balance_never_goes_negative(acme):
    pay(acme, "payment:1")
    payout = [
        Leg(merchant_account(acme), "USD", -D("100.00")),
        Leg(fx_account(), "USD", D("100.00")),
    ]
    with pytest.raises(InsufficientBalance):
        ledger_post(kind="payout", idempotency_key="payout:1", legs=payout)
    assert balance(merchant_account(acme), "USD") == D("99.00")
    assert not LedgerTransaction.objects.filter(kind="payout").exists()


def test_a_posting_is_a_fixed_few_statements(acme, django_assert_num_queries):
    pay(acme, "payment:1")  # the accounts and the merchant's balance row exist
    legs = payment_legs(acme)
    # PostgreSQL: savepoint, the transaction (ON CONFLICT DO NOTHING), the entries in one
    # INSERT, one UPDATE of the balance that checks its floor, release. SQLite reads the
    # balance and computes it in Python (it has no exact arithmetic on its TEXT amounts).
    with django_assert_num_queries(5 if on_postgres() else 7):
        ledger_post(kind="payment", idempotency_key="payment:2", legs=legs)
    # A replay: the refused insert, then the first posting and its entries to compare.
    with django_assert_num_queries(5):
        ledger_post(kind="payment", idempotency_key="payment:2", legs=legs)
    assert balance(merchant_account(acme), "USD") == D("198.00")


def test_entries_refuse_change_through_the_orm(acme):
    posting = pay(acme, "payment:1")
    entry = posting.entries.first()
    entry.amount = D(5)
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=D(1))
    with pytest.raises(PermissionError):
        LedgerTransaction.objects.all().delete()


def test_database_refuses_update_and_delete_of_entries(acme):
    require_postgres()
    posting = pay(acme, "payment:1")
    table = LedgerEntry._meta.db_table
    for sql in (
        f"UPDATE {table} SET amount = 0 WHERE transaction_id = %s",
        f"DELETE FROM {table} WHERE transaction_id = %s",
    ):
        with (
            pytest.raises((IntegrityError, InternalError)),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [posting.pk])
    assert posting.entries.count() == 5


def test_database_refuses_an_unbalanced_transaction_at_commit(acme):
    require_postgres()
    posting = pay(acme, "payment:1")
    with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
        LedgerEntry.objects.create(
            transaction=posting, account=fees_account(), currency="USD", amount=D("5")
        )
        # Deferred: checked when the constraint fires, forced here instead of at commit.
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert posting.entries.count() == 5


def test_check_command_reports_and_repairs_drift(acme, capsys):
    pay(acme, "payment:1")
    call_command("ledger_check", "--balances-only")
    assert "match" in capsys.readouterr().out
    Balance.objects.filter(account=merchant_account(acme)).update(amount=D("1000"))
    with pytest.raises(CommandError, match="1 balance"):
        call_command("ledger_check", "--balances-only")
    assert "entries say 99" in capsys.readouterr().out
    call_command("ledger_check", "--fix", "--balances-only")
    assert balances_drift() == []
    assert balance(merchant_account(acme), "USD") == D("99.00")
    assert balances_rebuild() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_replays_post_once_and_concurrent_postings_all_count():
    require_postgres()
    merchant = MerchantFactory()
    # Create shared accounts up front, as the first real payment would.
    merchant_account(merchant), holdings_account("base"), fx_account(), fees_account()
    threads = 8
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            for round_ in range(5):
                pay(merchant, f"same:{round_}")  # every thread replays the same five postings
                pay(merchant, f"own:{index}:{round_}", received="10", fee="0.10", credited="9.90")
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    assert LedgerTransaction.objects.count() == 5 + threads * 5
    expected = 5 * D("99.00") + threads * 5 * D("9.90")
    assert balance(merchant_account(merchant), "USD") == expected
    assert balance(holdings_account("base"), "USDC") == 5 * D(100) + threads * 5 * D(10)
    assert balances_drift() == []
    assert on_postgres()


@pytest.mark.django_db(transaction=True)
def test_concurrent_payouts_never_take_a_balance_below_zero():
    require_postgres()
    merchant = MerchantFactory()
    pay(merchant, "payment:1")  # 99.00 USD to pay out
    threads = 8
    barrier = threading.Barrier(threads)
    refused: list[int] = []
    errors: list[BaseException] = []

    def payout(index: int) -> None:
        legs = [
            Leg(merchant_account(merchant), "USD", -D("20.00")),
            Leg(fx_account(), "USD", D("20.00")),
        ]
        try:
            barrier.wait()
            ledger_post(kind="payout", idempotency_key=f"payout:{index}", legs=legs)
        except InsufficientBalance:
            refused.append(index)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=payout, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert errors == []
    # Four payouts of 20.00 fit in 99.00; the other four are refused and leave nothing behind.
    assert len(refused) == 4
    assert LedgerTransaction.objects.filter(kind="payout").count() == 4
    assert balance(merchant_account(merchant), "USD") == D("19.00")
    assert balances_drift() == []
