"""Deposits into payment and invoice statuses, and into the ledger (eth-tester chain)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from checkout.models import Payment, PaymentStatus
from checkout.services import (
    CheckoutError,
    payment_start,
    payments_cancel_ended,
    payments_expire,
    payments_fail_stuck,
    quote,
)
from invoices.models import Invoice, InvoiceKind, InvoiceStatus, PricingMode
from invoices.services import invoice_accept_unresolved, invoice_cancel
from wallets.ledger import account_balance, merchant_account
from wallets.models import LedgerTransaction

pytestmark = pytest.mark.django_db
USDC = 10**6


def refreshed(*objects):
    for obj in objects:
        obj.refresh_from_db()


def credited(merchant, currency="USD") -> Decimal:
    return account_balance(merchant_account(merchant), currency)


def test_quote_rounds_the_payers_amount_up(shop, settings):
    settings.STATIC_RATES = {**settings.STATIC_RATES, ("USDC", "USD"): Decimal("0.999")}
    invoice = shop.invoice("100.00")
    q = quote(invoice=invoice, asset=shop.usdc)
    # 100 / 0.999 = 100.1001001… USDC: the last unit is rounded up, never down.
    assert q.amount_due == 100_100_101


def test_fee_paid_by_payer_is_added_and_by_merchant_is_deducted(shop, settings, acme):
    settings.FEE_PERCENT = Decimal("1")
    by_payer = shop.invoice("200.00", fee_payer="payer")
    q = quote(invoice=by_payer, asset=shop.usdc)
    assert (q.fee, q.payer_total, q.amount_due) == (Decimal("2.00"), Decimal("202.00"), 202 * USDC)
    payment = shop.start(by_payer)
    shop.send(payment, 202 * USDC)
    shop.watch(), shop.confirm()
    assert credited(acme) == Decimal("200.00")

    by_merchant = shop.invoice("100.00", fee_payer="merchant")
    payment = shop.start(by_merchant)
    shop.send(payment, 100 * USDC)
    shop.watch(), shop.confirm()
    assert credited(acme) == Decimal("299.00")


def test_exact_payment_goes_processing_then_paid_and_is_credited_once(shop, acme):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    assert payment.amount_due == 100 * USDC
    shop.send(payment, 100 * USDC)
    shop.watch()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (PaymentStatus.PROCESSING, InvoiceStatus.PROCESSING)
    assert payment.received == 100 * USDC and payment.confirmed == 0
    shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (PaymentStatus.PAID, InvoiceStatus.PAID)
    assert credited(acme) == Decimal("100.00")
    shop.watch()  # settling again changes nothing
    assert credited(acme) == Decimal("100.00")
    assert LedgerTransaction.objects.filter(kind="deposit").count() == 1
    types = list(invoice.events.values_list("type", flat=True))
    assert types.count("invoice.paid") == 1 and types.count("invoice.deposit_confirmed") == 1


def test_partial_deposits_add_up_until_paid(shop):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    shop.send(payment, 40 * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert payment.status == PaymentStatus.PROCESSING
    assert payment.outstanding == 60 * USDC
    shop.send(payment, 60 * USDC)
    shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (PaymentStatus.PAID, InvoiceStatus.PAID)


def test_overpayment_makes_the_invoice_unresolved_until_accepted(shop, alice, acme):
    invoice = shop.invoice("50.00")
    payment = shop.start(invoice)
    shop.send(payment, 80 * USDC)
    shop.watch(), shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (PaymentStatus.OVERPAID, InvoiceStatus.UNRESOLVED)
    assert credited(acme) == Decimal("80.00")  # every unit received is credited
    invoice = invoice_accept_unresolved(invoice=invoice, note="Keep it as a tip", by=alice)
    assert invoice.status == InvoiceStatus.PAID


def test_timer_ending_with_less_is_underpaid_and_credited(shop, acme):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    shop.send(payment, 30 * USDC)
    shop.watch()
    Payment.objects.filter(pk=payment.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status, invoice.failure_reason) == (
        PaymentStatus.UNDERPAID,
        InvoiceStatus.FAILED,
        "underpaid",
    )
    assert credited(acme) == Decimal("30.00")


def test_timer_ending_with_nothing_expires_payment_and_invoice(shop):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    later = timezone.now() + timedelta(minutes=16)
    assert payments_expire(now=later) == 2
    assert payments_expire(now=later) == 0  # idempotent
    refreshed(payment, invoice)
    assert (payment.status, invoice.status, invoice.failure_reason) == (
        PaymentStatus.EXPIRED,
        InvoiceStatus.FAILED,
        "expired",
    )


def test_late_deposit_after_expiry_is_credited_and_unresolved(shop, acme):
    invoice = shop.invoice("100.00", pricing_mode=PricingMode.TIMER)
    payment = shop.start(invoice)
    payments_expire(now=timezone.now() + timedelta(minutes=16))
    shop.send(payment, 100 * USDC)
    shop.watch(), shop.confirm()
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (PaymentStatus.PAID, InvoiceStatus.UNRESOLVED)
    assert credited(acme) == Decimal("100.00")


def test_processing_for_too_long_fails(shop):
    invoice = shop.invoice("100.00")
    payment = shop.start(invoice)
    shop.send(payment, 100 * USDC)
    shop.watch()
    assert payments_fail_stuck(now=timezone.now() + timedelta(hours=25)) == 1
    refreshed(payment, invoice)
    assert (payment.status, invoice.status, invoice.failure_reason) == (
        PaymentStatus.FAILED,
        InvoiceStatus.FAILED,
        "processing_timeout",
    )


def test_permanent_invoice_gets_a_new_order_per_payment_and_stays_open(shop, acme):
    invoice = shop.invoice(None, kind=InvoiceKind.PERMANENT)
    first = shop.start(invoice, amount=Decimal("25"))
    shop.send(first, 25 * USDC)
    shop.watch(), shop.confirm()
    second = shop.start(invoice, amount=Decimal("10"))
    assert (first.number, second.number) == (1, 2)
    assert second.order_number == f"{invoice.reference}-02"
    assert first.deposit_address_id != second.deposit_address_id
    shop.send(second, 10 * USDC)
    shop.watch(), shop.confirm()
    refreshed(first, second, invoice)
    assert (first.status, second.status, invoice.status) == (
        PaymentStatus.PAID,
        PaymentStatus.PAID,
        InvoiceStatus.OPEN,
    )
    assert credited(acme) == Decimal("35.00")


def test_switching_asset_keeps_the_address_and_requotes(shop, dev_network):
    from wallets.models import Asset

    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    usdt = Asset.objects.get(network=dev_network, symbol="USDT")
    usdt.contract_address = "0x" + "12" * 20
    usdt.save()
    switched = payment_start(invoice=invoice, asset=usdt)
    assert switched.pk == payment.pk
    assert switched.deposit_address_id == payment.deposit_address_id
    assert switched.asset == usdt
    assert Payment.objects.count() == 1


def test_no_new_payment_on_final_invoices_or_unaccepted_assets(shop, dev_network):
    invoice = shop.invoice("10.00", accepted_assets=["USDT"])
    with pytest.raises(CheckoutError, match="does not accept USDC"):
        shop.start(invoice)
    cancelled = invoice_cancel(invoice=shop.invoice("10.00"))
    with pytest.raises(CheckoutError, match="failed"):
        shop.start(cancelled)
    assert Payment.objects.count() == 0


def test_cancel_then_deposit_is_recorded_as_unresolved(shop, acme):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    invoice_cancel(invoice=invoice)
    assert payments_cancel_ended() == 1
    shop.send(payment, 10 * USDC)
    shop.watch(), shop.confirm()
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.UNRESOLVED
    assert credited(acme) == Decimal("10.00")
    assert Invoice.objects.get(pk=invoice.pk).events.filter(type="invoice.unresolved").exists()


def test_a_deposit_scanned_but_never_settled_is_settled_later(shop, acme):
    from checkout.settlement import settle_pending
    from wallets.scanner import scan_network

    invoice = shop.invoice("20.00")
    payment = shop.start(invoice)
    shop.send(payment, 20 * USDC)
    shop.tester.mine(shop.network.confirmations)
    # The worker scanned, then died before settling: the report is lost.
    scan_network(network=shop.network, chain=shop.tester.chain())
    refreshed(payment)
    assert payment.status == PaymentStatus.AWAITING
    assert settle_pending(network_id=shop.network.pk) == 1
    assert settle_pending(network_id=shop.network.pk) == 0
    refreshed(payment, invoice)
    assert (payment.status, invoice.status) == (PaymentStatus.PAID, InvoiceStatus.PAID)
    assert credited(acme) == Decimal("20.00")


def test_a_paid_payment_emails_the_payer_a_receipt_once(
    shop, acme, mailoutbox, django_capture_on_commit_callbacks
):
    from customers.models import Customer

    customer = Customer.objects.create(merchant=acme, name="Ada", email="ada@payer.example")
    invoice = shop.invoice("15.00", customer=customer)
    payment = shop.start(invoice)
    shop.send(payment, 15 * USDC)
    with django_capture_on_commit_callbacks(execute=True):
        shop.watch()
        shop.confirm()
    with django_capture_on_commit_callbacks(execute=True):
        shop.watch()
    receipts = [m for m in mailoutbox if "ada@payer.example" in m.to]
    assert len(receipts) == 1
    assert payment.order_number in receipts[0].body
