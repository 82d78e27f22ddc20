"""Random sequences of what can happen to payments, against the books' invariants.

Hypothesis drives deposits, confirmations, reorgs, timers running out, cancels, off-platform
"mark paid", acceptance of unresolved invoices and new payment attempts, in any order, on an
in-process chain. After every step:

- every ledger transaction sums to zero in each currency, and cached balances match entries;
- no merchant balance is negative;
- the merchant's credited total equals the confirmed deposits valued at their payments' locked
  rates (fee 0), each deposit posted exactly once;
- money confirmed after its payment or invoice had ended makes the invoice Unresolved (checked
  after each scan), unless a paid payment stays paid within the tolerance;
- a one-time invoice holding confirmed money is never plain Open, and no "invoice.paid" event
  is written for an invoice that did not become paid;
- payment and invoice statuses only ever moved along PAYMENT_TRANSITIONS / TRANSITIONS (read
  from database triggers, not from the code under test);
- a payment whose transfers are all settled shows exactly their received and confirmed sums;
- every confirmed deposit is either posted once or held as awaiting valuation (ETH sent while
  no ETH rate exists, or dust worth less than a cent), never credited at zero; held deposits
  are posted once a rate exists and the retry runs.

Each example runs in a savepoint that is rolled back afterwards, with a fresh chain.
"""

import contextlib
import decimal
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from checkout.models import OPEN_PAYMENT, PAYMENT_TRANSITIONS, Payment, PaymentStatus
from checkout.services import (
    PAYABLE,
    CheckoutError,
    payment_start,
    payments_cancel_ended,
    payments_expire,
    payments_fail_stuck,
)
from checkout.settlement import settle_awaiting_valuation, settle_report
from invoices.models import (
    TRANSITIONS,
    Invoice,
    InvoiceEvent,
    InvoiceKind,
    InvoiceStatus,
    PricingMode,
)
from invoices.services import (
    InvoiceStateError,
    invoice_accept_unresolved,
    invoice_cancel,
    invoice_mark_paid,
)
from merchants.fields import PRECISION, exact_totals
from tests import evm
from tests.checkout import statuslog
from tests.factories import MerchantFactory, make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import wallet_set
from wallets.ledger import account_balance, balances_drift, merchant_account
from wallets.models import (
    Asset,
    Balance,
    LedgerEntry,
    LedgerTransaction,
    Network,
    Transfer,
    TransferStatus,
)
from wallets.scanner import cursor_reset, scan_network

CENT = Decimal("0.01")
TABLES = {"payment": PAYMENT_TRANSITIONS, "invoice": TRANSITIONS}
LIVE_OR_PAID = (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.PAID)


_chain: tuple[evm.TesterChain, object] | None = None


def fresh_chain() -> evm.TesterChain:
    """The in-process chain as it was right after the token deploy: built once, then rewound
    to a snapshot for each example (building one costs far more than a whole example)."""
    global _chain
    if _chain is None:
        tester = evm.TesterChain()
        _chain = (tester, _backend(tester).take_snapshot())
    else:
        tester, snapshot = _chain
        _backend(tester).revert_to_snapshot(snapshot)
    return _chain[0]


def _backend(tester: evm.TesterChain):
    backend = tester.provider.ethereum_tester
    assert backend is not None
    return backend


class CheckoutMachine(RuleBasedStateMachine):
    invoices = Bundle("invoices")

    def __init__(self) -> None:
        super().__init__()
        # One savepoint per example, rolled back in teardown: examples never see each other.
        self.savepoint = transaction.atomic()
        self.savepoint.__enter__()
        # The rate limit counts attempts per invoice id in the cache, which no rollback resets.
        cache.clear()
        statuslog.install()
        self.seen_moves = 0
        self.tester = fresh_chain()
        self.network = Network.objects.get(slug="anvil")
        self.network.assets.filter(symbol="USDC").update(contract_address=self.tester.token_address)
        cursor_reset(network=self.network, next_block=0)
        self.usdc = Asset.objects.get(network=self.network, symbol="USDC")
        self.merchant = MerchantFactory(name="Acme Tools")
        wallet_set(merchant=self.merchant, xpub=ABANDON_XPUB)
        # ETH's price comes and goes (rule `eth_rate`); it is ETH_USD whenever it is there.
        self.rates = override_settings(STATIC_RATES=_rates(eth=False))
        self.rates.enable()

    def teardown(self) -> None:
        self.rates.disable()
        transaction.set_rollback(True)
        self.savepoint.__exit__(None, None, None)

    # Helpers ----------------------------------------------------------------------------------

    def watch(self) -> None:
        invoices_before = dict(Invoice.objects.values_list("pk", "status"))
        payments_before = dict(Payment.objects.values_list("pk", "status"))
        confirmed_before = list(
            Transfer.objects.filter(status=TransferStatus.CONFIRMED).values_list("pk", flat=True)
        )
        settle_report(scan_network(network=self.network, chain=self.tester.chain()))
        # Money confirmed after its payment or invoice had ended is never ignored: the invoice
        # is Unresolved, unless a paid payment stayed paid (a top-up within the tolerance).
        newly_confirmed = (
            Transfer.objects.filter(status=TransferStatus.CONFIRMED)
            .exclude(pk__in=confirmed_before)
            .select_related("deposit_address__payment__invoice")
        )
        for transfer in newly_confirmed:
            payment = transfer.deposit_address.payment
            invoice_was, was = invoices_before[payment.invoice_id], payments_before[payment.pk]
            after_the_end = was not in OPEN_PAYMENT or invoice_was not in PAYABLE
            tolerated = was == payment.status == PaymentStatus.PAID and invoice_was in LIVE_OR_PAID
            if after_the_end and not tolerated:
                assert payment.invoice.status == InvoiceStatus.UNRESOLVED, (
                    f"{transfer.amount} confirmed on a {was} payment of a {invoice_was} invoice "
                    f"left it {payment.invoice.status}"
                )

    def start(self, invoice: Invoice) -> None:
        # The invoice may take no payment now: that is an answer too.
        with contextlib.suppress(CheckoutError):
            payment_start(invoice=invoice, asset=self.usdc)

    # Rules ------------------------------------------------------------------------------------

    @initialize(target=invoices, timed=st.booleans(), total=st.sampled_from(["10.00", "25.55"]))
    def first_invoice(self, timed: bool, total: str) -> Invoice:
        return self.new_invoice(timed, False, total)

    @precondition(lambda self: Invoice.objects.count() < 3)
    @rule(
        target=invoices,
        timed=st.booleans(),
        permanent=st.booleans(),
        total=st.sampled_from(["10.00", "25.55", "1999.99"]),
    )
    def another_invoice(self, timed: bool, permanent: bool, total: str) -> Invoice:
        return self.new_invoice(timed, permanent, total)

    def new_invoice(self, timed: bool, permanent: bool, total: str) -> Invoice:
        invoice = make_invoice(
            self.merchant,
            items=[("Service", "1", total)],
            issue=True,
            pricing_mode=PricingMode.TIMER if timed else PricingMode.NO_TIMER,
            kind=InvoiceKind.PERMANENT if permanent else InvoiceKind.ONE_TIME,
        )
        self.start(invoice)
        return invoice

    @rule(invoice=invoices)
    def start_again(self, invoice: Invoice) -> None:
        # A permanent invoice opens a new order; a one-time one keeps its open attempt.
        self.start(Invoice.objects.get(pk=invoice.pk))

    @rule(
        invoice=invoices,
        how=st.sampled_from(["rest", "half", "more", "tiny"]),
        then=st.sampled_from(["wait", "scan", "confirm"]),
        data=st.data(),
    )
    def deposit(self, invoice: Invoice, how: str, then: str, data) -> None:
        payments = list(Payment.objects.filter(invoice=invoice).order_by("pk"))
        if not payments:
            return
        payment = data.draw(st.sampled_from(payments), label="payment")
        due = int(payment.amount_due or 10**6)
        units = {
            "rest": int(payment.outstanding or 0) or due,
            "half": due // 2,
            "more": due + due // 10,
            "tiny": 1,
        }[how]
        self.tester.pay(payment.deposit_address.address, units)
        if then == "confirm":
            self.tester.mine(self.network.confirmations)
        if then != "wait":
            self.watch()

    @rule(invoice=invoices, then=st.sampled_from(["wait", "scan", "confirm"]), data=st.data())
    def eth_deposit(self, invoice: Invoice, then: str, data) -> None:
        # Another asset than quoted: valued at the ETH rate when posted, or held without one.
        payments = list(Payment.objects.filter(invoice=invoice).order_by("pk"))
        if not payments:
            return
        payment = data.draw(st.sampled_from(payments), label="payment")
        self.tester.send_eth(payment.deposit_address.address, 10**15)
        if then == "confirm":
            self.tester.mine(self.network.confirmations)
        if then != "wait":
            self.watch()

    @rule(available=st.booleans())
    def eth_rate(self, available: bool) -> None:
        self.rates.disable()
        self.rates = override_settings(STATIC_RATES=_rates(eth=available))
        self.rates.enable()

    @rule()
    def value_held(self) -> None:
        settle_awaiting_valuation()
        if ("ETH", "USD") in django_settings.STATIC_RATES:
            # With a rate, no ETH deposit stays held after the retry.
            held = Transfer.objects.exclude(awaiting_valuation_since=None)
            assert not held.filter(asset__symbol="ETH").exists()

    @rule(blocks=st.integers(min_value=1, max_value=3))
    def confirm(self, blocks: int) -> None:
        self.tester.mine(blocks)
        self.watch()

    @precondition(lambda self: Transfer.objects.filter(status=TransferStatus.EXECUTED).exists())
    @rule(data=st.data())
    def reorg(self, data) -> None:
        # A reorg as the scanner meets it: the block it stored is no longer canonical. The
        # transaction is still on our chain, so a later scan may find it again (revived).
        unconfirmed = list(
            Transfer.objects.filter(status=TransferStatus.EXECUTED).values_list("pk", flat=True)
        )
        pk = data.draw(st.sampled_from(unconfirmed), label="orphaned transfer")
        Transfer.objects.filter(pk=pk).update(block_hash="0x" + "de" * 32)
        self.watch()

    # The ways a payment can end without the payer, as one rule: separate rules would end
    # most examples before any deposit had a chance to confirm.
    @rule(invoice=invoices, how=st.sampled_from(["timer", "day", "cancel", "mark_paid"]))
    def an_end(self, invoice: Invoice, how: str) -> None:
        current = Invoice.objects.get(pk=invoice.pk)
        if how == "timer":
            # Time moves on rather than `now` being faked: settlement reads the clock too.
            past = timezone.now() - timedelta(seconds=1)
            Invoice.objects.filter(expires_at__isnull=False).update(expires_at=past)
            Payment.objects.filter(expires_at__isnull=False).update(expires_at=past)
            payments_expire()
        elif how == "day":
            Payment.objects.filter(processing_since__isnull=False).update(
                processing_since=F("processing_since") - timedelta(hours=25)
            )
            payments_fail_stuck()
        elif how == "cancel":
            with contextlib.suppress(InvoiceStateError):
                invoice_cancel(invoice=current)
        else:
            with contextlib.suppress(InvoiceStateError, ValidationError):
                invoice_mark_paid(invoice=current, reference="WIRE-1")
        payments_cancel_ended()

    @rule(invoice=invoices)
    def accept(self, invoice: Invoice) -> None:
        current = Invoice.objects.get(pk=invoice.pk)
        if current.status == InvoiceStatus.UNRESOLVED:
            invoice_accept_unresolved(invoice=current, note="Keep it")

    # Invariants -------------------------------------------------------------------------------

    @invariant()
    def every_posting_sums_to_zero_per_currency(self) -> None:
        sums = exact_totals(LedgerEntry.objects.all(), ["transaction_id", "currency"], "amount")
        assert [row for row in sums if row["total"] != 0] == []
        assert balances_drift() == []

    @invariant()
    def no_balance_is_negative(self) -> None:
        assert not Balance.objects.filter(amount__lt=0).exists()

    @invariant()
    def credited_equals_confirmed_deposits_at_the_locked_rate(self) -> None:
        confirmed = Transfer.objects.filter(status=TransferStatus.CONFIRMED).select_related(
            "asset", "deposit_address__payment"
        )
        posted = [t for t in confirmed if not t.awaiting_valuation]
        expected = sum(
            ((t.amount_major * _rate_of(t)).quantize(CENT, ROUND_DOWN) for t in posted),
            Decimal(0),
        )
        assert account_balance(merchant_account(self.merchant), "USD") == expected
        keys = set(LedgerTransaction.objects.values_list("idempotency_key", flat=True))
        assert keys == {f"deposit:{t.pk}" for t in posted}

    @invariant()
    def held_deposits_are_the_ones_that_could_not_be_valued(self) -> None:
        for t in Transfer.objects.exclude(awaiting_valuation_since=None).select_related(
            "asset", "deposit_address__payment"
        ):
            assert t.status == TransferStatus.CONFIRMED
            if t.asset.symbol == "ETH":
                # Held for want of a rate; the retry (rule value_held) has not run since.
                continue
            # Dust: worth less than a cent at the payment's rate.
            assert (t.amount_major * t.deposit_address.payment.rate).quantize(CENT, ROUND_DOWN) == 0
        # No credit of zero or less was ever booked for a deposit.
        assert not LedgerEntry.objects.filter(
            transaction__kind="deposit", account__kind="merchant", amount__lte=0
        ).exists()

    @invariant()
    def statuses_only_move_along_the_tables(self) -> None:
        moves = statuslog.moves(after=self.seen_moves)
        for move in moves:
            event(f"{move.model} {move.old} -> {move.new}")  # see --hypothesis-show-statistics
        illegal = [m for m in moves if m.new not in TABLES[m.model][m.old]]
        assert illegal == []
        self.seen_moves = statuslog.last_seq()

    @invariant()
    def money_is_never_ignored(self) -> None:
        # A one-time invoice that holds confirmed money is never back to plain Open, and no
        # "paid" callback event is ever written for an invoice that did not become paid.
        with_money = Transfer.objects.filter(status=TransferStatus.CONFIRMED).values(
            "deposit_address__payment__invoice"
        )
        assert not Invoice.objects.filter(
            pk__in=with_money, kind=InvoiceKind.ONE_TIME, status=InvoiceStatus.OPEN
        ).exists()
        wrong = InvoiceEvent.objects.filter(type="invoice.paid").exclude(
            to_status__in=[InvoiceStatus.PAID, InvoiceStatus.OPEN]
        )
        assert list(wrong.values_list("invoice__reference", "to_status")) == []

    @invariant()
    def settled_payments_show_their_transfers(self) -> None:
        if Transfer.objects.exclude(handled_status=F("status")).exists():
            return  # a deposit sent but not scanned yet
        # Every payment's sums from one grouped query (this runs after each of some 375 steps;
        # two sums per payment was one of the run's largest costs).
        sums: dict[tuple, tuple[Decimal, Decimal]] = {}
        live = Transfer.objects.exclude(status=TransferStatus.ORPHANED)
        by = ["deposit_address_id", "asset_id", "network_id", "status"]
        with decimal.localcontext(prec=PRECISION):
            for row in exact_totals(live, by, "amount"):
                key = (row["deposit_address_id"], row["asset_id"], row["network_id"])
                received, confirmed = sums.get(key, (Decimal(0), Decimal(0)))
                if row["status"] == TransferStatus.CONFIRMED:
                    confirmed += row["total"]
                sums[key] = (received + row["total"], confirmed)
        for payment in Payment.objects.all():
            # The payment counts its own asset; other money is the merchant's question.
            key = (payment.deposit_address_id, payment.asset_id, payment.network_id)
            received, confirmed = sums.get(key, (Decimal(0), Decimal(0)))
            assert (payment.received, payment.confirmed) == (received, confirmed)


ETH_USD = Decimal("3000")


def _rates(*, eth: bool) -> dict:
    table = {pair: rate for pair, rate in django_settings.STATIC_RATES.items() if pair[0] != "ETH"}
    return {**table, ("ETH", "USD"): ETH_USD} if eth else table


def _rate_of(transfer: Transfer) -> Decimal:
    payment = transfer.deposit_address.payment
    return ETH_USD if transfer.asset_id != payment.asset_id else payment.rate


@pytest.mark.django_db
def test_random_payment_histories_keep_the_books_and_the_tables(dev_network):
    run_state_machine_as_test(
        CheckoutMachine,
        # 15 histories of 25 steps, the invariants checked after each of the 375. Fewer, not
        # shorter, histories than before (30): a reorg or a late confirmation needs the
        # deposit, scan and timer steps before it, so the length is what reaches them.
        settings=settings(
            max_examples=15,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
