"""No silent zero: a deposit that cannot be valued is held visibly and credited once a rate
exists; the ledger never books real money at 0. And the verdict as a pure function."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from checkout.models import PaymentStatus
from checkout.services import payment_start, payments_requote
from checkout.settlement import (
    AskMerchant,
    Facts,
    FlagUnresolved,
    MoveInvoice,
    MovePayment,
    SendReceipt,
    Valuation,
    ZeroCredit,
    _post_to_ledger,
    settle_awaiting_valuation,
    settle_transfer,
    settlement_verdict,
)
from checkout.tasks import value_held_deposits
from invoices.models import InvoiceEvent, InvoiceStatus
from tests.checkout.test_payment_transitions import _in_threads
from tests.checkout.test_settlement import credited, refreshed
from tests.conftest import require_postgres
from wallets.models import Asset, LedgerEntry, LedgerTransaction, Transfer
from wallets.scanner import scan_network

pytestmark = pytest.mark.django_db
P, S = PaymentStatus, InvoiceStatus
USDC, ETH = 10**6, 10**18


@pytest.fixture
def no_eth_rate(settings):
    settings.RATE_PROVIDER = "static"
    settings.STATIC_RATES = {
        pair: rate for pair, rate in settings.STATIC_RATES.items() if pair[0] != "ETH"
    }
    return settings


def _eth_deposit(shop, wei: int):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.tester.send_eth(payment.deposit_address.address, wei)
    shop.watch()
    shop.confirm()
    return invoice, payment, Transfer.objects.get(deposit_address=payment.deposit_address)


def test_another_asset_without_a_rate_is_held_then_credited_once_a_rate_exists(
    shop, acme, no_eth_rate, client_for, alice
):
    invoice, _, transfer = _eth_deposit(shop, ETH // 2)

    assert transfer.status == "confirmed" and transfer.awaiting_valuation
    assert not LedgerTransaction.objects.exists()  # nothing booked, least of all a 0
    assert credited(acme) == 0
    refreshed(invoice)
    assert invoice.status == S.UNRESOLVED  # foreign money: the merchant decides
    types = list(InvoiceEvent.objects.filter(invoice=invoice).values_list("type", flat=True))
    assert types.count("deposit.awaiting_valuation") == 1
    # Visible where the merchant looks: the invoice's payments tab and the transfers page.
    tab = client_for(alice).get(reverse("invoice_payments", args=[invoice.pk]))
    assert "Awaiting valuation" in tab.content.decode()
    page = client_for(alice).get(reverse("transfer_list"))
    assert "Awaiting valuation" in page.content.decode()
    detail = client_for(alice).get(reverse("invoice_detail", args=[invoice.pk])).content.decode()
    assert "Awaiting valuation:</strong> 0.5 ETH arrived" in detail

    value_held_deposits.delay()  # still no rate: nothing changes
    assert not LedgerTransaction.objects.exists()

    no_eth_rate.STATIC_RATES = {**no_eth_rate.STATIC_RATES, ("ETH", "USD"): Decimal("2500")}
    value_held_deposits.delay()
    assert settle_awaiting_valuation() == 0  # a second retry finds nothing left
    transfer.refresh_from_db()
    assert not transfer.awaiting_valuation
    assert LedgerTransaction.objects.filter(idempotency_key=f"deposit:{transfer.pk}").count() == 1
    assert credited(acme) == Decimal("1250.00")
    assert InvoiceEvent.objects.filter(invoice=invoice, type="deposit.valued").count() == 1
    page = client_for(alice).get(reverse("transfer_list"))
    assert "Awaiting valuation" not in page.content.decode()
    detail = client_for(alice).get(reverse("invoice_detail", args=[invoice.pk])).content.decode()
    assert "Awaiting valuation:" not in detail
    assert "Held deposit valued and credited" in detail  # the timeline tells the story


def test_dust_worth_less_than_a_cent_is_held_not_booked_at_zero(shop, acme):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 1)  # one base unit: $0.000001
    shop.watch()
    shop.confirm()
    transfer = Transfer.objects.get(deposit_address=payment.deposit_address)
    assert transfer.awaiting_valuation
    assert not LedgerEntry.objects.filter(amount=0).exists()
    assert not LedgerTransaction.objects.exists()


def test_the_posting_path_refuses_a_zero_credit_for_real_money(shop):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    transfer = Transfer.objects.get(deposit_address=payment.deposit_address)
    with pytest.raises(ZeroCredit):
        _post_to_ledger(payment, transfer, Valuation(Decimal(0), Decimal(0), Decimal(0)))
    assert not LedgerTransaction.objects.exists()


# The verdict, pure --------------------------------------------------------------------------

BASE = Facts(
    payment_status=P.AWAITING,
    invoice_status=S.OPEN,
    one_time=True,
    received=Decimal(0),
    confirmed=Decimal(0),
    due=Decimal(100),
    tolerance=Decimal(0),
    expired=False,
    other_asset_confirmed=False,
    others_processing=False,
    transfer_confirmed=False,
    transfer_other_asset=False,
    order_number="INV-1-01",
    transfer_label="100 USDC",
)


def facts(**changes) -> Facts:
    return Facts(**{**BASE.__dict__, **changes})


def test_verdict_a_first_deposit_starts_processing():
    assert settlement_verdict(facts(received=Decimal(40))) == (
        MovePayment(P.PROCESSING, "start"),
        MoveInvoice(S.PROCESSING, "invoice.processing"),
    )


def test_verdict_the_full_amount_confirmed_at_once_goes_straight_to_paid():
    steps = settlement_verdict(
        facts(received=Decimal(100), confirmed=Decimal(100), transfer_confirmed=True)
    )
    assert steps == (
        MovePayment(P.PROCESSING, "start"),
        MoveInvoice(S.PROCESSING, "invoice.processing"),
        MovePayment(P.PAID),
        SendReceipt(),
        MoveInvoice(S.PAID, "invoice.paid", note="Order INV-1-01"),
    )


def test_verdict_partly_paid_while_the_timer_runs_waits_and_underpays_when_it_ends():
    running = facts(payment_status=P.PROCESSING, received=Decimal(40), confirmed=Decimal(40))
    assert settlement_verdict(running) == ()
    ended = settlement_verdict(facts(**{**running.__dict__, "expired": True}))
    assert ended[0] == MovePayment(P.UNDERPAID)
    assert isinstance(ended[1], MoveInvoice) and ended[1].failure_reason == "underpaid"


def test_verdict_within_tolerance_is_paid_and_above_it_asks_the_merchant():
    near = facts(
        payment_status=P.PROCESSING, received=Decimal(99), confirmed=Decimal(99), tolerance=1
    )
    assert settlement_verdict(near)[0] == MovePayment(P.PAID)
    over = facts(payment_status=P.PROCESSING, received=Decimal(150), confirmed=Decimal(150))
    steps = settlement_verdict(over)
    assert steps[0] == MovePayment(P.OVERPAID) and isinstance(steps[1], AskMerchant)


def test_verdict_a_reorg_that_takes_the_only_deposit_reopens():
    assert settlement_verdict(facts(payment_status=P.PROCESSING)) == (
        MovePayment(P.AWAITING, "clear"),
        MoveInvoice(S.OPEN, "invoice.reopened"),
    )
    cancelled = settlement_verdict(facts(payment_status=P.PROCESSING, invoice_status=S.FAILED))
    assert cancelled == (MovePayment(P.CANCELLED, "clear"),)


def test_verdict_foreign_money_is_flagged_once_confirmed():
    steps = settlement_verdict(
        facts(
            payment_status=P.PROCESSING,
            received=Decimal(40),
            confirmed=Decimal(40),
            transfer_confirmed=True,
            transfer_other_asset=True,
        )
    )
    assert len(steps) == 1 and isinstance(steps[0], FlagUnresolved)
    # Already unresolved: nothing to ask again.
    assert (
        settlement_verdict(
            facts(
                invoice_status=S.UNRESOLVED,
                payment_status=P.PAID,
                received=Decimal(100),
                confirmed=Decimal(100),
                transfer_confirmed=True,
                transfer_other_asset=True,
            )
        )
        == ()
    )


def test_verdict_money_after_the_end_asks_the_merchant():
    steps = settlement_verdict(
        facts(
            payment_status=P.EXPIRED,
            received=Decimal(100),
            confirmed=Decimal(100),
            transfer_confirmed=True,
        )
    )
    assert steps[0] == MovePayment(P.PAID) and isinstance(steps[1], AskMerchant)
    assert len(steps) == 2


# Concurrency (PostgreSQL) ----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_workers_retrying_a_held_deposit_post_it_once(shop, acme, no_eth_rate):
    require_postgres()
    invoice, _, transfer = _eth_deposit(shop, ETH // 4)
    assert transfer.awaiting_valuation
    no_eth_rate.STATIC_RATES = {**no_eth_rate.STATIC_RATES, ("ETH", "USD"): Decimal("2000")}

    assert _in_threads(settle_awaiting_valuation) == []

    transfer.refresh_from_db()
    assert not transfer.awaiting_valuation
    assert LedgerTransaction.objects.filter(kind="deposit").count() == 1
    assert credited(acme) == Decimal("500.00")
    assert InvoiceEvent.objects.filter(invoice=invoice, type="deposit.valued").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_workers_settling_a_held_deposit_and_its_retry_at_once_post_it_once(
    shop, acme, no_eth_rate
):
    require_postgres()
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.tester.send_eth(payment.deposit_address.address, ETH // 4)
    shop.tester.mine(shop.network.confirmations)
    no_eth_rate.STATIC_RATES = {**no_eth_rate.STATIC_RATES, ("ETH", "USD"): Decimal("2000")}
    scan_network(network=shop.network, chain=shop.tester.chain())
    transfer = Transfer.objects.get()
    # Half the workers settle the freshly confirmed deposit, half run the valuation retry.
    calls = iter([lambda: settle_transfer(transfer.pk), settle_awaiting_valuation] * 4)
    lock = threading.Lock()

    def one() -> None:
        with lock:
            call = next(calls)
        call()

    assert _in_threads(one) == []
    assert LedgerTransaction.objects.filter(kind="deposit").count() == 1
    assert credited(acme) == Decimal("500.00")
    refreshed(invoice)
    assert invoice.status == S.UNRESOLVED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_workers_renewing_the_same_quote_renew_it_once(shop, settings):
    require_postgres()
    eth = Asset.objects.get(network=shop.network, symbol="ETH")
    invoice = shop.invoice("30.00")
    payment = payment_start(invoice=invoice, asset=eth)
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("ETH", "USD"): Decimal("2000")}
    later = timezone.now() + timedelta(minutes=16)

    assert _in_threads(lambda: payments_requote(now=later)) == []

    payment.refresh_from_db()
    assert payment.amount_due == 15 * 10**15
    assert InvoiceEvent.objects.filter(invoice=invoice, type="payment.requoted").count() == 1
