"""Amounts are exact on SQLite and PostgreSQL alike: stored, read back, summed, compared."""

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from merchants.fields import AmountField, InexactAmount, exact_sum, exact_totals
from tests.evm import seed_networks
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import deposit_address_allocate, wallet_set
from wallets.ledger import Leg, account_balance, fx_account, holdings_account, ledger_post
from wallets.models import Asset, LedgerEntry, Network, Transfer

D = Decimal
pytestmark = pytest.mark.django_db
MAX_UNITS = 2**256 - 1
LEDGER_AMOUNT = D("123456789012345678.123456789012345678")


@pytest.fixture
def address(acme):
    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_XPUB)
    return deposit_address_allocate(merchant=acme)


def transfer(address, units: int, n: int = 0) -> Transfer:
    network = Network.objects.get(slug="anvil")
    return Transfer.objects.create(
        network=network,
        asset=Asset.objects.get(network=network, symbol="ETH"),
        deposit_address=address,
        tx_hash=f"0x{n:064x}",
        log_index=-1,
        block_number=n,
        block_hash=f"0x{n:064x}",
        from_address="0x" + "1" * 40,
        to_address=address.address,
        amount=D(units),
    )


def test_base_units_round_trip_exactly_up_to_two_to_the_256(address):
    for n, units in enumerate([12345678901234567891, 2**63 + 1, MAX_UNITS]):
        stored = transfer(address, units, n)
        assert Transfer.objects.get(pk=stored.pk).amount == D(units)
        assert Transfer.objects.filter(amount=units).get().pk == stored.pk


def test_ledger_amounts_keep_eighteen_decimals(db):
    ledger_post(
        kind="test",
        idempotency_key="big",
        legs=[
            Leg(holdings_account("anvil"), "ETH", -LEDGER_AMOUNT),
            Leg(fx_account(), "ETH", LEDGER_AMOUNT),
        ],
    )
    amounts = sorted(LedgerEntry.objects.values_list("amount", flat=True))
    assert amounts == [-LEDGER_AMOUNT, LEDGER_AMOUNT]
    assert account_balance(fx_account(), "ETH") == LEDGER_AMOUNT
    assert account_balance(holdings_account("anvil"), "ETH") == -LEDGER_AMOUNT


def test_totals_of_many_large_amounts_are_exact(address):
    units = [10**30 + n for n in range(40)] + [MAX_UNITS // 100]
    for n, value in enumerate(units):
        transfer(address, value, n)
    everything = Transfer.objects.all()
    assert exact_sum(everything, "amount") == D(sum(units))
    [row] = exact_totals(everything, ["asset__symbol"], "amount")
    assert row == {"asset__symbol": "ETH", "total": D(sum(units)), "n": len(units)}


def test_ledger_sums_of_many_fractional_amounts_are_exact(db):
    step = D("0.000000000000000001")
    for n in range(1, 31):
        amount = LEDGER_AMOUNT + n * step
        ledger_post(
            kind="test",
            idempotency_key=f"many:{n}",
            legs=[
                Leg(holdings_account("anvil"), "ETH", -amount),
                Leg(fx_account(), "ETH", amount),
            ],
        )
    assert account_balance(fx_account(), "ETH") == 30 * LEDGER_AMOUNT + 465 * step


def test_ordering_and_comparisons_follow_the_numbers(address):
    values = [9, 10, 2**70, 5, 0, 123456789012345678901234567890]
    for n, value in enumerate(values):
        transfer(address, value, n)
    ordered = list(Transfer.objects.order_by("amount").values_list("amount", flat=True))
    assert ordered == sorted(D(v) for v in values)
    assert set(Transfer.objects.filter(amount__gt=9).values_list("amount", flat=True)) == {
        D(10),
        D(2**70),
        D(123456789012345678901234567890),
    }


def test_signed_ledger_amounts_order_by_value():
    field = AmountField(max_digits=78, decimal_places=18)
    values = [D("-5.25"), D("-10"), D("0"), D("3.5"), D("-0.000000000000000001"), LEDGER_AMOUNT]
    encoded = sorted(values, key=field.encode)
    assert encoded == sorted(values)
    assert all(field.decode(field.encode(v)) == v for v in values)


def test_an_sql_sum_is_exact_on_postgres_and_refused_on_sqlite(address):
    transfer(address, 12345678901234567891)
    if connection.vendor == "postgresql":
        assert Transfer.objects.aggregate(t=Sum("amount"))["t"] == D(12345678901234567891)
    else:
        # SQLite's SUM() over text is a float sum: it must never reach the books quietly.
        with pytest.raises(InexactAmount):
            Transfer.objects.aggregate(t=Sum("amount"))


def test_ledger_check_reports_a_rounded_amount(address):
    stored = transfer(address, 12345678901234567891)
    call_command("ledger_check")  # exact: passes
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # numeric(78, 0) cannot hold a rounded float: the column type is the guarantee.
            cursor.execute(
                "SELECT data_type, numeric_precision, numeric_scale FROM "
                "information_schema.columns WHERE table_name = 'wallets_transfer' "
                "AND column_name = 'amount'"
            )
            assert cursor.fetchone() == ("numeric", 78, 0)
            return
        # What the old NUMERIC column held: the float nearest the value.
        cursor.execute(
            "UPDATE wallets_transfer SET amount = 12345678901234567891.0 WHERE id = %s",
            [stored.pk],
        )
    with pytest.raises(CommandError, match="not stored exactly"):
        call_command("ledger_check")


def test_the_database_still_refuses_a_negative_amount(address):
    # The CHECK constraints compare in the stored form on SQLite, numerically on PostgreSQL.
    with pytest.raises(IntegrityError), transaction.atomic():
        transfer(address, -1)
    with pytest.raises(IntegrityError), transaction.atomic():
        transfer(address, -(2**255), n=1)
    assert transfer(address, 0, n=2).amount == 0
