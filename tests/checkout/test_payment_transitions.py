"""Every transition of PAYMENT_TRANSITIONS, made by the real services and settlement.

Deposits are real token transfers: on the in-process chain (eth-tester) for most tests, on a
real anvil where a chain reorganisation has to take a deposit away. Status changes are read
from database triggers (statuslog.py), so a test sees every move, including the ones a
single settlement makes in a row, and every logged move is checked against the tables.
"""

import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone
from web3 import Web3

from checkout.models import PAYMENT_TRANSITIONS, Payment, PaymentStatus
from checkout.services import (
    payment_start,
    payments_cancel_ended,
    payments_expire,
    payments_fail_stuck,
)
from checkout.settlement import settle_pending, settle_transfer
from checkout.tasks import watch_network
from invoices.models import TRANSITIONS, Invoice, InvoiceEvent, InvoiceStatus, PricingMode
from invoices.services import invoice_accept_unresolved, invoice_cancel, invoice_mark_paid
from merchants.fields import exact_totals
from tests.chain import running_anvil
from tests.checkout import statuslog
from tests.conftest import require_postgres
from tests.evm import ARTIFACT
from tests.factories import make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from tests.wallets.test_scanner_anvil import Anvil, _register
from wallets.addresses import wallet_set
from wallets.ledger import account_balance, fx_account, holdings_account, merchant_account
from wallets.models import Asset, LedgerEntry, LedgerTransaction, Transfer, TransferStatus
from wallets.scanner import scan_network

pytestmark = pytest.mark.django_db
USDC = 10**6
P = PaymentStatus
S = InvoiceStatus

# Which test makes which move of the payment table; the first test below checks the table
# and this list agree, so a new transition cannot go untested.
COVERED: dict[tuple[str, str], str] = {}


def covers(*edges: tuple[str, str]) -> Callable:
    def register(test: Callable) -> Callable:
        for edge in edges:
            COVERED[edge] = test.__name__
        return test

    return register


@pytest.fixture(autouse=True)
def _only_legal_moves(request):
    """After each test: every status change the database saw is allowed by its table."""
    log = request.getfixturevalue("status_log")
    yield
    tables = {"payment": PAYMENT_TRANSITIONS, "invoice": TRANSITIONS}
    illegal = [m for m in log.moves() if m.new not in tables[m.model][m.old]]
    assert illegal == []


def refreshed(*objects):
    for obj in objects:
        obj.refresh_from_db()
    return objects


def credited(merchant) -> Decimal:
    return account_balance(merchant_account(merchant), "USD")


def payment_path(payment) -> list[str]:
    return statuslog.path("payment", payment.pk)


def invoice_path(invoice) -> list[str]:
    """The invoice's statuses from its issue on (draft → open is the invoices app's business)."""
    statuses = statuslog.path("invoice", invoice.pk)
    return statuses[1:] if statuses[:1] == [S.DRAFT] else statuses


def event_types(invoice) -> list[str]:
    return list(InvoiceEvent.objects.filter(invoice=invoice).values_list("type", flat=True))


def test_every_transition_in_the_table_has_a_test():
    edges = {(old, new) for old, targets in PAYMENT_TRANSITIONS.items() for new in targets}
    assert set(COVERED) == edges


# From awaiting and processing: the ordinary life of a payment ------------------------------


@covers((P.AWAITING, P.PROCESSING), (P.PROCESSING, P.PAID))
def test_deposit_seen_makes_processing_and_its_confirmation_paid(shop, acme):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (P.PROCESSING, S.PROCESSING)
    assert (payment.received, payment.confirmed) == (100 * USDC, 0)
    assert payment.processing_since is not None
    assert credited(acme) == 0  # nothing counts before its confirmations

    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.PAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.PAID]
    assert (payment.received, payment.confirmed) == (100 * USDC, 100 * USDC)
    assert payment.finalized_at is not None
    assert credited(acme) == Decimal("100.00")
    posting = LedgerTransaction.objects.get(kind="deposit")
    assert posting.reference == payment.order_number
    assert sorted((e.account.code, e.currency, e.amount) for e in posting.entries.all()) == [
        ("fx", "USD", Decimal("-100.00")),
        ("fx", "USDC", Decimal("100")),
        ("holdings:anvil", "USDC", Decimal("-100")),
        (f"merchant:{acme.pk}", "USD", Decimal("100.00")),
    ]


def test_top_ups_add_up_while_the_timer_runs(shop, acme):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    for part in (30, 30):
        shop.send(payment, part * USDC)
        shop.confirm()
        refreshed(payment)
        assert payment.status == P.PROCESSING
    assert (payment.confirmed, payment.outstanding) == (60 * USDC, 40 * USDC)
    shop.send(payment, 40 * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.PAID]
    assert invoice.status == S.PAID
    assert credited(acme) == Decimal("100.00")
    assert LedgerTransaction.objects.filter(kind="deposit").count() == 3


def test_a_shortfall_within_the_tolerance_counts_as_paid(shop, settings):
    settings.PAYMENT_TOLERANCE_BPS = 10  # 0.1 %: 0.1 USDC of 100
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC - 100_000)
    shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (P.PAID, S.PAID)


@covers((P.PROCESSING, P.OVERPAID))
def test_more_than_due_is_overpaid_and_the_invoice_unresolved(shop, acme):
    invoice = shop.invoice("50.00")
    payment = shop.start(invoice)
    shop.send(payment, 50 * USDC + 100_000)  # 0.1 over 50: beyond the 0.05 tolerance
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.OVERPAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.UNRESOLVED]
    assert credited(acme) == Decimal("50.10")


@covers((P.PROCESSING, P.UNDERPAID))
def test_less_than_due_when_the_timer_ends_is_underpaid_and_credited(shop, acme):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    shop.send(payment, 40 * USDC)
    shop.watch()
    # The timer ran out while the deposit was confirming: it was sent in time, so it counts.
    assert payments_expire(now=timezone.now() + timedelta(minutes=16)) == 0
    Payment.objects.filter(pk=payment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.UNDERPAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.FAILED]
    assert invoice.failure_reason == "underpaid"
    assert credited(acme) == Decimal("40.00")


@covers((P.AWAITING, P.EXPIRED))
def test_the_timer_ending_with_nothing_sent_expires_payment_and_invoice(shop):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    later = timezone.now() + timedelta(minutes=16)
    assert payments_expire(now=timezone.now()) == 0  # not yet
    assert payments_expire(now=later) == 2
    assert payments_expire(now=later) == 0
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.EXPIRED]
    assert invoice_path(invoice) == [S.OPEN, S.FAILED]
    assert invoice.failure_reason == "expired"
    assert event_types(invoice).count("invoice.failed") == 1


@covers((P.PROCESSING, P.FAILED))
def test_deposits_unconfirmed_past_the_timeout_fail_payment_and_invoice(shop, settings):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    limit = timedelta(hours=settings.PROCESSING_TIMEOUT_HOURS)
    assert payments_fail_stuck(now=timezone.now() + limit - timedelta(minutes=1)) == 0
    assert payments_fail_stuck(now=timezone.now() + limit + timedelta(minutes=1)) == 1
    assert payments_fail_stuck(now=timezone.now() + limit + timedelta(minutes=1)) == 0
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.FAILED]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.FAILED]
    assert invoice.failure_reason == "processing_timeout"


@covers((P.AWAITING, P.CANCELLED))
def test_cancelling_the_invoice_cancels_its_waiting_payment(shop):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    invoice_cancel(invoice=invoice)
    assert payments_cancel_ended() == 1
    assert payments_cancel_ended() == 0
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.CANCELLED]
    assert (invoice.status, invoice.failure_reason) == (S.FAILED, "cancelled")


def test_marking_the_invoice_paid_cancels_its_waiting_payment(shop):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    invoice_mark_paid(invoice=invoice, reference="WIRE-7")
    assert payments_cancel_ended() == 1
    refreshed(payment)
    assert payment.status == P.CANCELLED


# Reorgs: a real anvil takes the deposit's block away -----------------------------------------


class AnvilShop:
    """A merchant with a wallet on a real anvil network, watched by the real task."""

    def __init__(self, anvil: Anvil, merchant) -> None:
        self.anvil, self.merchant = anvil, merchant
        wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
        self.network = _register(anvil, confirmations=3)
        self.usdc = Asset.objects.get(network=self.network, symbol="USDC")

    def start(self, invoice) -> Payment:
        return payment_start(invoice=invoice, asset=self.usdc)

    def watch(self) -> None:
        watch_network(self.network.pk)


@pytest.fixture
def on_anvil(acme):
    with running_anvil() as rpc_url:
        yield AnvilShop(Anvil(rpc_url), acme)


@covers((P.PROCESSING, P.AWAITING))
def test_a_reorg_that_removes_the_only_deposit_returns_the_payment_to_awaiting(on_anvil, acme):
    invoice = make_invoice(acme, items=[("Service", "1", "100.00")], issue=True)
    payment = on_anvil.start(invoice)
    lost = on_anvil.anvil.pay(payment.deposit_address.address, 100 * USDC)
    on_anvil.watch()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (P.PROCESSING, S.PROCESSING)

    on_anvil.anvil.reorg(1)  # the new chain has no trace of the transfer
    on_anvil.watch()
    refreshed(payment, invoice)
    assert Transfer.objects.get(tx_hash=lost).status == TransferStatus.ORPHANED
    assert (payment.status, payment.received, payment.processing_since) == (P.AWAITING, 0, None)
    assert invoice.status == S.OPEN
    assert "deposit.reverted" in event_types(invoice)
    assert LedgerTransaction.objects.count() == 0

    # The payer sends again; this one sticks.
    on_anvil.anvil.pay(payment.deposit_address.address, 100 * USDC)
    on_anvil.anvil.mine(3)
    on_anvil.watch()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.AWAITING, P.PROCESSING, P.PAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.OPEN, S.PROCESSING, S.PAID]
    assert credited(acme) == Decimal("100.00")


def test_a_reorg_of_one_of_two_deposits_leaves_the_payment_processing(on_anvil, acme):
    invoice = make_invoice(acme, items=[("Service", "1", "100.00")], issue=True)
    payment = on_anvil.start(invoice)
    on_anvil.anvil.pay(payment.deposit_address.address, 60 * USDC)
    on_anvil.anvil.mine(1)
    on_anvil.anvil.pay(payment.deposit_address.address, 40 * USDC)
    on_anvil.watch()
    refreshed(payment)
    assert (payment.status, payment.received) == (P.PROCESSING, 100 * USDC)
    on_anvil.anvil.reorg(1)  # only the 40 goes
    on_anvil.watch()
    refreshed(payment, invoice)
    assert (payment.status, payment.received, payment.outstanding) == (
        P.PROCESSING,
        60 * USDC,
        40 * USDC,
    )
    on_anvil.anvil.mine(3)
    on_anvil.watch()
    refreshed(payment, invoice)
    assert payment.status == P.PROCESSING  # 60 of 100 confirmed; no timer, so it waits
    assert credited(acme) == Decimal("60.00")


@covers((P.PROCESSING, P.CANCELLED))
def test_a_reorg_after_the_invoice_was_cancelled_cancels_the_payment(on_anvil, acme):
    invoice = make_invoice(acme, items=[("Service", "1", "100.00")], issue=True)
    payment = on_anvil.start(invoice)
    on_anvil.anvil.pay(payment.deposit_address.address, 100 * USDC)
    on_anvil.watch()
    invoice_cancel(invoice=invoice)
    on_anvil.anvil.reorg(1)
    on_anvil.watch()
    refreshed(payment, invoice)
    # The money is gone and the invoice has ended: nothing is left to wait for.
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.CANCELLED]
    assert (invoice.status, invoice.failure_reason) == (S.FAILED, "cancelled")
    assert payments_cancel_ended() == 0


# After the end: money is never ignored ---------------------------------------------------------


@covers((P.PAID, P.OVERPAID))
def test_a_top_up_on_a_paid_payment_makes_it_overpaid_and_the_invoice_unresolved(shop, acme):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.confirm()
    shop.send(payment, 5 * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.PAID, P.OVERPAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.PAID, S.UNRESOLVED]
    assert credited(acme) == Decimal("105.00")


def _expired(shop):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    payments_expire(now=timezone.now() + timedelta(minutes=16))
    return invoice, payment


def _cancelled(shop):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    invoice_cancel(invoice=invoice)
    payments_cancel_ended()
    return invoice, payment


@covers(
    (P.EXPIRED, P.PAID),
    (P.EXPIRED, P.UNDERPAID),
    (P.EXPIRED, P.OVERPAID),
    (P.CANCELLED, P.PAID),
    (P.CANCELLED, P.UNDERPAID),
    (P.CANCELLED, P.OVERPAID),
)
@pytest.mark.parametrize("ended", [P.EXPIRED, P.CANCELLED])
@pytest.mark.parametrize(
    "sent, verdict",
    [(100, P.PAID), (40, P.UNDERPAID), (150, P.OVERPAID)],
    ids=["exact", "less", "more"],
)
def test_a_deposit_after_the_end_is_credited_and_the_invoice_unresolved(
    shop, acme, ended, sent, verdict
):
    invoice, payment = (_expired if ended == P.EXPIRED else _cancelled)(shop)
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (ended, S.FAILED)
    shop.send(payment, sent * USDC)
    shop.watch()
    refreshed(payment, invoice)
    assert payment.status == ended  # seen but not yet confirmed: nothing decided
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, ended, verdict]
    assert invoice_path(invoice) == [S.OPEN, S.FAILED, S.UNRESOLVED]
    assert credited(acme) == Decimal(sent)
    assert event_types(invoice).count("invoice.unresolved") == 1


@covers((P.UNDERPAID, P.PAID), (P.UNDERPAID, P.OVERPAID))
@pytest.mark.parametrize("top_up, verdict", [(60, P.PAID), (90, P.OVERPAID)])
def test_a_top_up_after_underpaid_is_credited_and_the_invoice_unresolved(
    shop, acme, top_up, verdict
):
    invoice, payment = _expired(shop)
    shop.send(payment, 40 * USDC)
    shop.confirm()
    refreshed(payment)
    assert payment.status == P.UNDERPAID
    shop.send(payment, top_up * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.EXPIRED, P.UNDERPAID, verdict]
    assert invoice.status == S.UNRESOLVED
    assert credited(acme) == Decimal(40 + top_up)


def test_more_money_on_an_underpaid_payment_still_short_makes_the_invoice_unresolved(shop, acme):
    invoice, payment = _expired(shop)
    shop.send(payment, 40 * USDC)
    shop.confirm()
    refreshed(invoice)
    assert invoice.status == S.UNRESOLVED
    invoice_accept_unresolved(invoice=invoice, note="Keep what came")
    shop.send(payment, 10 * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment.status == P.UNDERPAID  # 50 of 100: still short
    assert invoice_path(invoice) == [S.OPEN, S.FAILED, S.UNRESOLVED, S.PAID, S.UNRESOLVED]
    assert credited(acme) == Decimal("50.00")


def test_a_top_up_within_the_tolerance_on_a_paid_payment_needs_no_decision(shop, settings):
    settings.PAYMENT_TOLERANCE_BPS = 10  # 0.1 USDC of 100
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC - 50_000)
    shop.confirm()
    shop.send(payment, 50_000)  # the payer sends the missing 0.05
    shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (P.PAID, S.PAID)
    assert payment.confirmed == 100 * USDC


def test_part_of_the_money_confirming_after_a_cancel_is_underpaid_and_unresolved(shop, acme):
    invoice = shop.invoice("100.00")  # no timer: before the cancel the payer could top up
    payment = shop.start(invoice)
    shop.send(payment, 30 * USDC)
    shop.watch()
    invoice_cancel(invoice=invoice)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.UNDERPAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.FAILED, S.UNRESOLVED]
    assert credited(acme) == Decimal("30.00")


def test_a_deposit_confirming_after_the_payment_failed_makes_the_invoice_unresolved(shop, acme):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    payments_fail_stuck(now=timezone.now() + timedelta(hours=25))
    shop.confirm()
    refreshed(payment, invoice)
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.FAILED]  # failed is final
    assert credited(acme) == Decimal("100.00")
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.FAILED, S.UNRESOLVED]


def test_a_deposit_on_an_accepted_overpayment_makes_the_invoice_unresolved_again(shop, acme, alice):
    from invoices.services import invoice_accept_unresolved

    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    shop.send(payment, 20 * USDC)
    shop.confirm()
    invoice_accept_unresolved(invoice=invoice, note="Tip", by=alice)
    shop.send(payment, 1 * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment.status == P.OVERPAID  # overpaid is final
    assert credited(acme) == Decimal("21.00")
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.UNRESOLVED, S.PAID, S.UNRESOLVED]


@pytest.mark.parametrize("end", ["cancel", "mark_paid"])
def test_a_deposit_confirming_after_the_invoice_ended_another_way_is_unresolved(shop, acme, end):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    if end == "cancel":
        invoice_cancel(invoice=invoice)
    else:
        invoice_mark_paid(invoice=invoice, reference="Cash at the counter")
    assert payments_cancel_ended() == 0  # money is on its way: the payment stays to settle
    shop.confirm()
    refreshed(payment, invoice)
    assert payment.status == P.PAID
    assert credited(acme) == Decimal("100.00")
    assert invoice.status == S.UNRESOLVED
    assert "invoice.paid" not in event_types(invoice)  # no callback may claim it was paid here


def _second_token(shop, symbol: str = "USDT") -> Asset:
    w3 = shop.tester.w3
    factory = w3.eth.contract(abi=ARTIFACT["abi"], bytecode=ARTIFACT["bytecode"])
    tx = factory.constructor(f"Demo {symbol}", symbol, 6).transact({"from": shop.tester.owner})
    address = w3.eth.get_transaction_receipt(tx)["contractAddress"]
    token = w3.eth.contract(address=address, abi=ARTIFACT["abi"])
    token.functions.mint(shop.tester.payer, 10**12).transact({"from": shop.tester.owner})
    asset = Asset.objects.get(network=shop.network, symbol=symbol)
    asset.contract_address = address.lower()
    asset.save()
    shop.other_token = token
    return asset


def test_a_deposit_in_another_asset_is_credited_at_its_rate_and_the_invoice_unresolved(
    shop, acme, settings
):
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("USDT", "USD"): Decimal("0.998")}
    _second_token(shop)
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    to = Web3.to_checksum_address(payment.deposit_address.address)
    shop.other_token.functions.transfer(to, 100 * USDC).transact({"from": shop.tester.payer})
    shop.confirm()
    refreshed(payment, invoice)
    assert credited(acme) == Decimal("99.80")
    assert payment.received == 0  # the USDC payment got no USDC
    assert invoice.status == S.UNRESOLVED


# Concurrency (PostgreSQL) ----------------------------------------------------------------------


def _in_threads(target: Callable[[], object], count: int = 8) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as error:  # collected and asserted by the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_workers_settling_the_same_transfer_credit_it_once(shop, acme):
    require_postgres()
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.tester.mine(shop.network.confirmations)
    # Scanned and confirmed, but not settled yet: now eight workers settle it at once.
    report = scan_network(network=shop.network, chain=shop.tester.chain())
    transfer = Transfer.objects.get()
    assert report.new == [transfer.pk] and report.confirmed == [transfer.pk]

    assert _in_threads(lambda: settle_transfer(transfer.pk)) == []

    refreshed(payment, invoice, transfer)
    assert LedgerTransaction.objects.count() == 1
    assert LedgerEntry.objects.count() == 4  # no fee leg at 0 %
    assert credited(acme) == Decimal("100.00")
    assert account_balance(holdings_account("anvil"), "USDC") == Decimal("-100")
    assert account_balance(fx_account(), "USDC") == Decimal("100")
    assert account_balance(fx_account(), "USD") == Decimal("-100.00")
    assert (payment.status, payment.received, payment.confirmed) == (
        P.PAID,
        100 * USDC,
        100 * USDC,
    )
    assert payment_path(payment) == [P.AWAITING, P.PROCESSING, P.PAID]
    assert invoice_path(invoice) == [S.OPEN, S.PROCESSING, S.PAID]
    types = event_types(invoice)
    for once in ("invoice.deposit_confirmed", "invoice.paid"):
        assert types.count(once) == 1, types
    assert transfer.handled_status == TransferStatus.CONFIRMED
    assert settle_pending() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_workers_settling_everything_pending_credit_each_deposit_once(shop, acme):
    require_postgres()
    invoices = [shop.invoice(f"{10 * (i + 1)}.00") for i in range(4)]
    payments = [shop.start(invoice) for invoice in invoices]
    for i, payment in enumerate(payments):
        shop.send(payment, 10 * (i + 1) * USDC)
    shop.tester.mine(shop.network.confirmations)
    scan_network(network=shop.network, chain=shop.tester.chain())

    assert _in_threads(lambda: settle_pending(network_id=shop.network.pk)) == []

    assert LedgerTransaction.objects.count() == 4
    assert credited(acme) == Decimal("100.00")  # 10 + 20 + 30 + 40
    per_key = exact_totals(LedgerEntry.objects.all(), ["transaction__idempotency_key"], "amount")
    assert len(per_key) == 4
    for invoice, payment in zip(invoices, payments, strict=True):
        refreshed(invoice, payment)
        assert (payment.status, invoice.status) == (P.PAID, S.PAID)
        assert event_types(invoice).count("invoice.paid") == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_housekeepers_at_once_end_each_payment_once(shop):
    require_postgres()
    timed = [shop.invoice("10.00", pricing_mode=PricingMode.TIMER) for _ in range(3)]
    for invoice in timed:
        shop.start(invoice)
    stuck_invoice = shop.invoice("20.00")
    stuck = shop.start(stuck_invoice)
    shop.send(stuck, 20 * USDC)
    shop.watch()
    later = timezone.now() + timedelta(hours=25)

    def housekeeping() -> None:
        payments_expire(now=later)
        payments_fail_stuck(now=later)
        payments_cancel_ended()

    assert _in_threads(housekeeping) == []

    for invoice in timed:
        invoice.refresh_from_db()
        assert (invoice.status, invoice.failure_reason) == (S.FAILED, "expired")
        assert event_types(invoice).count("invoice.failed") == 1
        assert payment_path(invoice.payments.get()) == [P.AWAITING, P.EXPIRED]
    refreshed(stuck, stuck_invoice)
    assert payment_path(stuck) == [P.AWAITING, P.PROCESSING, P.FAILED]
    assert event_types(stuck_invoice).count("invoice.failed") == 1
    assert Invoice.objects.filter(status=S.FAILED).count() == 4
