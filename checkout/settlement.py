"""From transfers seen on chain to payment and invoice statuses, and into the ledger.

`checkout.tasks.watch_network` hands every scan report here. One settlement round handles one
transfer whose status changed:

1. lock the invoice, then the payment (that order everywhere, so two rounds never wait on
   each other in a cycle), and re-read the transfer under the locks;
2. compute the payment's totals once from its transfers, and write them;
3. post a confirmed transfer to the ledger under the key "deposit:<transfer id>", or hold it
   as "awaiting valuation" when it cannot be valued (another asset than quoted and no rate):
   it is never credited at zero, and `settle_awaiting_valuation` retries it;
4. announce the deposit (events, hence callbacks, carrying the transfer's snapshot);
5. `settlement_verdict`, a pure function of the facts, says what follows (status moves,
   receipt, questions to the merchant); `_apply` carries it out.

Totals are recomputed from the transfers, never incremented, so a round run twice (a retried
task, two workers) changes nothing the second time.

Valuation: money in the quoted asset is credited at the payment's quote. A quote is only
renewed while nothing has arrived (services.payment_requote), so every unit received is
valued at the quote that was in force when it arrived. Another asset than quoted has no quote:
it is valued at the rate available when it is posted (its confirmation, or the first retry
after one) and the invoice goes to Unresolved for the merchant to accept or refund it.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from checkout.models import (
    OPEN_PAYMENT,
    PAYMENT_TRANSITIONS,
    Payment,
    PaymentHold,
    PaymentStatus,
    Screening,
    payment_snapshot,
    transfer_snapshot,
)
from checkout.rates import RateUnavailable, provider
from checkout.screening import deposit_hit, screen_deposit
from checkout.services import PAYABLE, payment_move, tolerance
from invoices.delivery import (
    ReceiptInput,
    TransferRef,
    invoice_compliance_hold_deliver,
    invoice_paid_deliver,
    invoice_unresolved_deliver,
)
from invoices.models import Actor, FailureReason, Invoice, InvoiceEvent, InvoiceKind, InvoiceStatus
from invoices.services import InvoiceStateError, invoice_payment_status, invoice_record_event
from merchants.fields import exact_sum
from merchants.models import FeePayer, User
from merchants.money import get_currency, quantize
from wallets.chain import ChainError
from wallets.ledger import (
    Leg,
    fees_account,
    fx_account,
    held_account,
    holdings_account,
    ledger_post,
    merchant_account,
)
from wallets.models import LedgerEntry, Transfer, TransferStatus
from wallets.scanner import ScanReport

logger = logging.getLogger(__name__)
P = PaymentStatus
S = InvoiceStatus
ENDED_BEFORE_MONEY = frozenset({P.EXPIRED, P.UNDERPAID, P.PAID, P.CANCELLED})


class ZeroCredit(Exception):
    """A posting would credit the merchant nothing (or less) for money that arrived."""


def settle_report(report: ScanReport) -> None:
    for transfer_id in [*report.new, *report.revived, *report.orphaned, *report.confirmed]:
        settle_transfer(transfer_id)


def settle_pending(*, network_id: int | None = None) -> int:
    """Settle every transfer whose current status was not handled yet, whatever the scan
    reports said: the safety net for a worker that died between scanning and settling."""
    pending = Transfer.objects.exclude(handled_status=F("status"))
    if network_id is not None:
        pending = pending.filter(network_id=network_id)
    ids = list(pending.order_by("block_number", "log_index").values_list("pk", flat=True)[:1000])
    for transfer_id in ids:
        settle_transfer(transfer_id)
    return len(ids)


# The verdict: pure ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """Everything the verdict depends on, read under the locks. Amounts in base units."""

    payment_status: str
    invoice_status: str
    one_time: bool
    received: Decimal  # live transfers in the quoted asset, confirming or confirmed
    confirmed: Decimal
    due: Decimal | None  # None: an open amount
    tolerance: Decimal
    expired: bool
    other_asset_confirmed: bool  # confirmed money in another asset or network
    others_processing: bool  # another payment of the same invoice is processing
    transfer_confirmed: bool  # the transfer this round is about
    transfer_other_asset: bool
    order_number: str
    transfer_label: str  # "12.5 ETH", for notes


@dataclass(frozen=True)
class MovePayment:
    to: str
    processing: str = "keep"  # "start": processing_since = now; "clear": None


@dataclass(frozen=True)
class MoveInvoice:
    to: str
    type: str
    note: str = ""
    failure_reason: str = ""


@dataclass(frozen=True)
class AskMerchant:
    """Unresolved: the merchant accepts the money or refunds it, and is told so once."""

    reason: str


@dataclass(frozen=True)
class SendReceipt:
    pass


@dataclass(frozen=True)
class FlagUnresolved:
    """Late or foreign money the payment's own move left unexplained."""

    note: str


Step = MovePayment | MoveInvoice | AskMerchant | SendReceipt | FlagUnresolved


def _final_status(f: Facts, status: str) -> str | None:
    """Where the payment ends once every deposit is confirmed; None while that is open."""
    if f.received == 0 or f.received != f.confirmed:
        return None  # nothing yet, or deposits still confirming
    if f.due is None or f.due - f.tolerance <= f.confirmed <= f.due + f.tolerance:
        return P.PAID
    if f.confirmed > f.due + f.tolerance:
        return P.OVERPAID
    if (
        f.expired
        or status in (P.EXPIRED, P.UNDERPAID, P.CANCELLED)
        # The invoice ended another way (cancelled, marked paid): no top-up is coming.
        or f.invoice_status not in PAYABLE
    ):
        return P.UNDERPAID
    return None  # partly paid, the timer still runs: the payer may top up


def settlement_verdict(f: Facts) -> tuple[Step, ...]:
    """What a payment's transfers mean for it and its invoice, in the order to apply."""
    steps: list[Step] = []
    status = f.payment_status
    if status == P.AWAITING and f.received > 0:
        steps += [
            MovePayment(P.PROCESSING, "start"),
            MoveInvoice(S.PROCESSING, "invoice.processing"),
        ]
        status = P.PROCESSING
    elif status == P.PROCESSING and f.received == 0:
        if f.invoice_status not in PAYABLE:
            # The invoice ended (cancelled, marked paid) while the deposit was confirming; with
            # the deposit gone there is nothing left to wait for, and no address to show.
            return (MovePayment(P.CANCELLED, "clear"),)
        steps.append(MovePayment(P.AWAITING, "clear"))
        if not f.others_processing:
            steps.append(MoveInvoice(S.OPEN, "invoice.reopened"))
        return tuple(steps)

    asked = False
    final = _final_status(f, status)
    if final is not None and final != status and final in PAYMENT_TRANSITIONS[status]:
        # Late: the payment had ended, or the invoice ended another way (cancelled, marked
        # paid, closed) while the deposit was confirming. Either way the merchant decides.
        late = status in ENDED_BEFORE_MONEY or f.invoice_status not in PAYABLE
        steps.append(MovePayment(final))
        if late or f.other_asset_confirmed:
            steps.append(
                AskMerchant("Money arrived after the payment ended; accept it or refund it.")
            )
            asked = True
        elif final == P.PAID:
            # A permanent invoice stays open for the next payer; the order is what got paid.
            paid = S.PAID if f.one_time else S.OPEN
            steps += [
                SendReceipt(),
                MoveInvoice(paid, "invoice.paid", note=f"Order {f.order_number}"),
            ]
        elif final == P.OVERPAID:
            steps.append(
                AskMerchant(
                    f"Order {f.order_number} received more than due; "
                    "accept it or refund the difference."
                )
            )
            asked = True
        else:
            steps.append(
                MoveInvoice(
                    S.FAILED,
                    "invoice.failed",
                    failure_reason="underpaid",
                    note=f"Order {f.order_number} received less than due before the timer "
                    "ended; the money is credited and refundable.",
                )
            )
        status = final

    # Money is never ignored: a confirmed deposit after its payment or invoice had ended, or in
    # another asset than quoted, makes the invoice Unresolved. A paid payment that stays paid
    # on a live or paid invoice is a top-up within the tolerance and needs no decision.
    after_the_end = f.payment_status not in OPEN_PAYMENT or f.invoice_status not in PAYABLE
    within_tolerance = f.payment_status == status == P.PAID and f.invoice_status in (
        *PAYABLE,
        S.PAID,
    )
    if (
        f.transfer_confirmed
        and not asked
        and f.invoice_status != S.UNRESOLVED
        and (f.transfer_other_asset or (after_the_end and not within_tolerance))
    ):
        steps.append(
            FlagUnresolved(
                f"{f.transfer_label} arrived for order {f.order_number} after it ended or in "
                "another asset; accept it or refund it."
            )
        )
    return tuple(steps)


# One round: lock, total, announce, post, decide, apply -----------------------------------


@dataclass(frozen=True)
class Totals:
    received: Decimal
    confirmed: Decimal
    other_asset_confirmed: bool


def _totals(payment: Payment) -> Totals:
    """The payment's totals from its address's live transfers, in one read (the few rows of
    one address, summed exactly in Python whatever the database)."""
    received = confirmed = Decimal(0)
    other = False
    rows = (
        Transfer.objects.filter(deposit_address_id=payment.deposit_address_id)
        .exclude(status=TransferStatus.ORPHANED)
        .values_list("asset_id", "network_id", "status", "amount")
    )
    for asset_id, network_id, status, amount in rows:
        same = asset_id == payment.asset_id and network_id == payment.network_id
        if same:
            received += amount
            if status == TransferStatus.CONFIRMED:
                confirmed += amount
        elif status == TransferStatus.CONFIRMED:
            other = True
    return Totals(received, confirmed, other)


def lock_invoice_then_payment(payment_id: int) -> tuple[Invoice, Payment]:
    """Lock the invoice, then the payment: the one lock order of every settlement write
    (refunds take the same, so the two never deadlock on one order)."""
    invoice_id = Payment.objects.values_list("invoice_id", flat=True).get(pk=payment_id)
    invoice = Invoice.objects.select_for_update().get(pk=invoice_id)
    payment = (
        Payment.objects.select_for_update()
        .select_related("asset", "network", "deposit_address")
        .get(pk=payment_id)
    )
    payment.invoice = invoice
    return invoice, payment


def settle_transfer(transfer_id: int) -> None:
    transfer = Transfer.objects.select_related("asset", "network").get(pk=transfer_id)
    payment_id = (
        Payment.objects.filter(deposit_address_id=transfer.deposit_address_id)
        .values_list("pk", flat=True)
        .first()
    )
    if payment_id is None:
        logger.warning("Transfer %s reached an address no payment uses", transfer)
        _mark_handled(transfer)
        return
    if transfer.status == TransferStatus.CONFIRMED and transfer.handled_status != transfer.status:
        # Before any lock: the freeze lists are asked of the node. A node that cannot answer
        # leaves the transfer unhandled, and the next round (settle_pending) asks again.
        try:
            screen_deposit(transfer)
        except ChainError as error:
            logger.warning("Transfer %s not screened yet: %s", transfer, error)
            return
    with transaction.atomic():
        invoice, payment = lock_invoice_then_payment(payment_id)
        # Re-read under the locks: a twin worker (or the same transfer listed twice in one
        # report, new and confirmed) may have settled this very status already.
        transfer = Transfer.objects.select_related("asset", "network").get(pk=transfer_id)
        if transfer.handled_status == transfer.status:
            return
        totals = _totals(payment)
        Payment.objects.filter(pk=payment.pk).update(
            received=totals.received, confirmed=totals.confirmed
        )
        payment.received, payment.confirmed = totals.received, totals.confirmed
        if transfer.status == TransferStatus.CONFIRMED:
            hit = deposit_hit(transfer)
            # Held again after a release when a later deposit is screened out.
            if hit is not None and not payment.is_held:
                _hold(invoice, payment, transfer, hit)
            # Before the announcement, so "deposit_confirmed" says whether it was credited.
            _post_or_hold(invoice, payment, transfer)
        _announce(invoice, payment, transfer)
        if not payment.is_held:
            # A held payment moves no further until an admin releases it or its time ends.
            _apply(settlement_verdict(_facts(invoice, payment, transfer, totals)), invoice, payment)
        _mark_handled(transfer)


# Compliance holds ------------------------------------------------------------------------------


def _hold_key(kind: str, payment: Payment, number: int) -> str:
    # The first hold keeps the keys it always had; later ones are numbered.
    return f"{kind}:{payment.pk}" if number == 1 else f"{kind}:{payment.pk}:{number}"


def _hold(invoice: Invoice, payment: Payment, transfer: Transfer, hit: Screening) -> None:
    """Hold the payment: what this order has credited (a released earlier hold's money too)
    moves to the held account, and its later deposits are booked there, until an admin
    releases it or its time ends. Each hold is its own row, naming the hit's source."""
    now = timezone.now()
    reason = f"{hit.source}: {hit.detail}"[:300]
    number = PaymentHold.objects.filter(payment=payment).count() + 1
    Payment.objects.filter(pk=payment.pk).update(
        held_since=now, hold_reason=reason, released_at=None, released_by=None
    )
    payment.held_since, payment.hold_reason = now, reason
    payment.released_at, payment.released_by = None, None
    currency = invoice.currency
    credited = exact_sum(
        LedgerEntry.objects.filter(
            transaction__reference=payment.order_number,
            account=merchant_account(invoice.merchant),
            currency=currency,
        ),
        "amount",
    )
    PaymentHold.objects.create(
        payment=payment,
        number=number,
        transfer=transfer,
        source=hit.source,
        detail=hit.detail,
        moved=max(credited, Decimal(0)),
        held_at=now,
    )
    if credited > 0:
        ledger_post(
            kind="compliance_hold",
            idempotency_key=_hold_key("hold", payment, number),
            reference=payment.order_number,
            memo=f"Compliance hold {number}: {reason}",
            legs=[
                Leg(merchant_account(invoice.merchant), currency, -credited),
                Leg(held_account(invoice.merchant), currency, credited),
            ],
        )
    again = " again" if number > 1 else ""
    note = (
        f"Order {payment.order_number} is held{again}: the sender {transfer.from_address} was "
        f"screened out ({reason}). The money is not credited; an admin may release it, "
        "otherwise it is refunded when the payment time ends."
    )
    _event_once(invoice, "payment.compliance_hold", transfer, payment, note)
    key = payment.order_number if number == 1 else f"{payment.order_number}:{number}"
    invoice_compliance_hold_deliver(invoice=invoice, key=key, reason=note)


def payment_release(*, payment: Payment, by: User | None = None) -> Payment:
    """An admin lets a held payment through: its money is credited, and settlement carries on
    where the hold stopped it. A later screened-out deposit may hold it again."""
    with transaction.atomic():
        invoice, payment = lock_invoice_then_payment(payment.pk)
        if not payment.is_held:
            raise InvoiceStateError(f"Order {payment.order_number} is not held.")
        hold = PaymentHold.objects.filter(payment=payment, released_at__isnull=True).first()
        number = hold.number if hold is not None else 1
        now = timezone.now()
        Payment.objects.filter(pk=payment.pk).update(released_at=now, released_by=by)
        payment.released_at, payment.released_by = now, by
        held = exact_sum(
            LedgerEntry.objects.filter(
                transaction__reference=payment.order_number,
                account=held_account(invoice.merchant),
                currency=invoice.currency,
            ),
            "amount",
        )
        if held > 0:
            ledger_post(
                kind="compliance_release",
                idempotency_key=_hold_key("release", payment, number),
                reference=payment.order_number,
                memo=f"Compliance hold {number} released by {by or 'an admin'}",
                legs=[
                    Leg(held_account(invoice.merchant), invoice.currency, -held),
                    Leg(merchant_account(invoice.merchant), invoice.currency, held),
                ],
            )
        if hold is not None:
            PaymentHold.objects.filter(pk=hold.pk).update(
                released_at=now, released_by=by, released_amount=max(held, Decimal(0))
            )
        invoice_record_event(
            invoice=invoice,
            type="payment.compliance_released",
            note=f"Order {payment.order_number} released from its compliance hold"
            f"{f' ({number})' if number > 1 else ''}.",
            data={"payment": payment_snapshot(payment)},
            actor=Actor.ADMIN,
            by=by,
        )
        last = (
            Transfer.objects.filter(
                deposit_address_id=payment.deposit_address_id, status=TransferStatus.CONFIRMED
            )
            .select_related("asset", "network")
            .order_by("-block_number", "-log_index")
            .first()
        )
        if last is not None:
            totals = _totals(payment)
            _apply(settlement_verdict(_facts(invoice, payment, last, totals)), invoice, payment)
    return payment


def payments_fail_held(*, now=None) -> int:
    """Held payments whose time ended fail, and their invoice fails "compliance" (the refund
    sweep then asks the payer for an address). Without a timer, the processing timeout."""
    now = now or timezone.now()
    limit = now - timedelta(hours=settings.PROCESSING_TIMEOUT_HOURS)
    ended = Payment.objects.filter(
        held_since__isnull=False, released_at__isnull=True, status__in=OPEN_PAYMENT
    ).filter(Q(expires_at__lte=now) | Q(expires_at__isnull=True, held_since__lte=limit))
    failed = 0
    for payment_id in ended.values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            invoice, payment = lock_invoice_then_payment(payment_id)
            if not payment.is_held or not payment_move(payment=payment, to=P.FAILED):
                continue
            failed += 1
            if invoice.status in PAYABLE:
                _invoice_to(
                    invoice,
                    S.FAILED,
                    "invoice.failed",
                    payment=payment,
                    failure_reason=FailureReason.COMPLIANCE_HOLD,
                    note=f"Order {payment.order_number} stayed on compliance hold until its "
                    "time ended; the money goes back to the payer.",
                )
    return failed


def _facts(invoice: Invoice, payment: Payment, transfer: Transfer, totals: Totals) -> Facts:
    others_processing = (
        payment.status == P.PROCESSING
        and totals.received == 0
        and invoice.payments.filter(status=P.PROCESSING).exclude(pk=payment.pk).exists()
    )
    due = payment.amount_due
    return Facts(
        payment_status=payment.status,
        invoice_status=invoice.status,
        one_time=invoice.kind == InvoiceKind.ONE_TIME,
        received=totals.received,
        confirmed=totals.confirmed,
        due=due,
        tolerance=Decimal(0) if due is None else tolerance(due),
        expired=payment.expires_at is not None and timezone.now() >= payment.expires_at,
        other_asset_confirmed=totals.other_asset_confirmed,
        others_processing=others_processing,
        transfer_confirmed=transfer.status == TransferStatus.CONFIRMED,
        transfer_other_asset=_other_asset(payment, transfer),
        order_number=payment.order_number,
        transfer_label=f"{transfer.amount_major} {transfer.asset.symbol}",
    )


def _other_asset(payment: Payment, transfer: Transfer) -> bool:
    return transfer.asset_id != payment.asset_id or transfer.network_id != payment.network_id


def _apply(steps: tuple[Step, ...], invoice: Invoice, payment: Payment) -> None:
    now = timezone.now()
    moved = True
    for step in steps:
        if isinstance(step, FlagUnresolved):
            invoice.refresh_from_db(fields=["status"])
            if invoice.status != S.UNRESOLVED:
                _invoice_to(
                    invoice, S.UNRESOLVED, "invoice.unresolved", payment=payment, note=step.note
                )
        elif not moved:
            continue  # the payment did not move: what follows from the move does not happen
        elif isinstance(step, MovePayment):
            fields = {}
            if step.processing != "keep":
                fields["processing_since"] = now if step.processing == "start" else None
            moved = payment_move(payment=payment, to=step.to, **fields)
        elif isinstance(step, MoveInvoice):
            _invoice_to(
                invoice,
                step.to,
                step.type,
                payment=payment,
                note=step.note,
                failure_reason=step.failure_reason,
            )
        elif isinstance(step, AskMerchant):
            _invoice_to(
                invoice, S.UNRESOLVED, "invoice.unresolved", payment=payment, note=step.reason
            )
            invoice_unresolved_deliver(
                invoice=invoice, key=payment.order_number, reason=step.reason
            )
        elif isinstance(step, SendReceipt):
            # The receipt to the payer and the notice to the merchant leave on commit, once.
            invoice_paid_deliver(invoice=invoice, receipt=_receipt(payment))


def _mark_handled(transfer: Transfer) -> None:
    # Conditional: if the scanner moved the transfer meanwhile, it stays pending for next time.
    Transfer.objects.filter(pk=transfer.pk, status=transfer.status).update(
        handled_status=transfer.status
    )


def _event_once(
    invoice: Invoice, type: str, transfer: Transfer, payment: Payment, note: str = ""
) -> None:
    # Events written before the shared snapshot name the transfer by its bare id.
    same = Q(data__transfer__id=transfer.pk) | Q(data__transfer=transfer.pk)
    if InvoiceEvent.objects.filter(same, invoice=invoice, type=type).exists():
        return
    data = {
        "transfer": transfer_snapshot(transfer, order_number=payment.order_number),
        "payment": payment_snapshot(payment),
    }
    invoice_record_event(invoice=invoice, type=type, note=note, data=data)


def _announce(invoice: Invoice, payment: Payment, transfer: Transfer) -> None:
    if transfer.status == TransferStatus.ORPHANED:
        _event_once(
            invoice,
            "deposit.reverted",
            transfer,
            payment,
            "A chain reorganisation removed this deposit.",
        )
    else:
        _event_once(invoice, "invoice.deposit_received", transfer, payment)
    if transfer.status == TransferStatus.CONFIRMED:
        _event_once(invoice, "invoice.deposit_confirmed", transfer, payment)


# Valuation and the ledger ---------------------------------------------------------------------


@dataclass(frozen=True)
class Valuation:
    value: Decimal  # in the invoice's currency
    fee: Decimal
    credit: Decimal  # to the merchant: value - fee


def _valuation(payment: Payment, transfer: Transfer) -> Valuation | None:
    """What the transfer is worth in the invoice's currency, rounded down (never over-credit):
    at the payment's quote for the quoted asset, at the current rate for another one. None when
    no rate is available or the amount is worth less than the currency's smallest unit."""
    currency = payment.invoice.currency
    rate = payment.rate
    if _other_asset(payment, transfer):
        try:
            rate = provider().rate(transfer.asset.symbol, currency).value
        except RateUnavailable as error:
            logger.info("No rate to value %s: %s", transfer, error)
            return None
    value = (transfer.amount_major * rate).quantize(
        get_currency(currency).quantum, rounding=ROUND_DOWN
    )
    percent = settings.FEE_PERCENT
    if payment.fee_payer == FeePayer.PAYER:
        fee = quantize(value * percent / (Decimal(100) + percent), currency)
    else:
        fee = quantize(value * percent / Decimal(100), currency)
    if value - fee <= 0:
        return None
    return Valuation(value, fee, value - fee)


def _post_or_hold(invoice: Invoice, payment: Payment, transfer: Transfer) -> bool:
    """Post a confirmed transfer, or hold it visibly as awaiting valuation. True if posted."""
    valuation = _valuation(payment, transfer)
    if valuation is None:
        held = Transfer.objects.filter(
            pk=transfer.pk, awaiting_valuation_since__isnull=True
        ).update(awaiting_valuation_since=timezone.now())
        if held:
            transfer.refresh_from_db(fields=["awaiting_valuation_since"])
            _event_once(
                invoice,
                "deposit.awaiting_valuation",
                transfer,
                payment,
                f"No {transfer.asset.symbol} to {invoice.currency} rate yet: the deposit is held "
                "and credited as soon as a rate is available.",
            )
        return False
    _post_to_ledger(payment, transfer, valuation)
    if transfer.awaiting_valuation_since is not None:
        Transfer.objects.filter(pk=transfer.pk).update(awaiting_valuation_since=None)
        transfer.awaiting_valuation_since = None
        _event_once(
            invoice,
            "deposit.valued",
            transfer,
            payment,
            f"Credited {valuation.credit} {invoice.currency} for {transfer.amount_major} "
            f"{transfer.asset.symbol}.",
        )
    return True


def _post_to_ledger(payment: Payment, transfer: Transfer, valuation: Valuation) -> None:
    received = transfer.amount_major
    if received > 0 and valuation.credit <= 0:
        # The guard of the one posting path for deposits: real money is never booked as 0.
        raise ZeroCredit(f"Transfer {transfer.pk} would credit {valuation.credit}.")
    invoice = payment.invoice
    symbol = transfer.asset.symbol
    # A held payment's money is the merchant's, but not available to them yet.
    owner = (
        held_account(invoice.merchant) if payment.is_held else merchant_account(invoice.merchant)
    )
    legs = [
        Leg(holdings_account(transfer.network.slug), symbol, -received),
        Leg(fx_account(), symbol, received),
        Leg(fx_account(), invoice.currency, -valuation.value),
        Leg(owner, invoice.currency, valuation.credit),
        Leg(fees_account(), invoice.currency, valuation.fee),
    ]
    tx = transfer.tx_hash if transfer.has_tx_hash else "none (found by balance)"
    ledger_post(
        kind="deposit",
        idempotency_key=f"deposit:{transfer.pk}",
        reference=payment.order_number,
        memo=f"{received} {symbol} on {transfer.network.name}, tx {tx}",
        legs=legs,
    )


def settle_awaiting_valuation(*, limit: int = 500) -> int:
    """Retry the deposits held for want of a rate; returns how many got posted."""
    ids = list(
        Transfer.objects.filter(
            awaiting_valuation_since__isnull=False, status=TransferStatus.CONFIRMED
        )
        .order_by("awaiting_valuation_since", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    posted = 0
    for transfer_id in ids:
        posted += _value_held(transfer_id)
    return posted


def _value_held(transfer_id: int) -> bool:
    transfer = Transfer.objects.get(pk=transfer_id)
    payment_id = (
        Payment.objects.filter(deposit_address_id=transfer.deposit_address_id)
        .values_list("pk", flat=True)
        .first()
    )
    if payment_id is None:
        return False
    with transaction.atomic():
        invoice, payment = lock_invoice_then_payment(payment_id)
        transfer = Transfer.objects.select_related("asset", "network").get(pk=transfer_id)
        if transfer.awaiting_valuation_since is None or transfer.status != TransferStatus.CONFIRMED:
            return False  # a twin retry posted it meanwhile
        return _post_or_hold(invoice, payment, transfer)


# Telling people --------------------------------------------------------------------------------


def _receipt(payment: Payment) -> ReceiptInput:
    transfers = Transfer.objects.filter(
        deposit_address_id=payment.deposit_address_id, status=TransferStatus.CONFIRMED
    ).select_related("network", "asset")
    return ReceiptInput(
        key=payment.order_number,
        paid_at=timezone.now(),
        amount=payment.invoice_amount,
        method=f"{payment.asset.symbol} on {payment.network.name}",
        order_number=payment.order_number,
        transfers=[
            TransferRef.from_snapshot(
                transfer_snapshot(t, order_number=payment.order_number), network_name=t.network.name
            )
            for t in transfers
        ],
    )


def _invoice_to(
    invoice: Invoice,
    to: str,
    type: str,
    *,
    payment: Payment,
    note: str = "",
    failure_reason: str = "",
) -> None:
    # The payment as it stands now goes into the event, so its callback can say what was paid.
    payment.refresh_from_db()
    data = {"payment": payment_snapshot(payment)}
    try:
        invoice_payment_status(
            invoice=invoice, to=to, type=type, note=note, data=data, failure_reason=failure_reason
        )
    except InvoiceStateError as error:
        # E.g. a permanent invoice the merchant closed: record what happened, change nothing.
        logger.info("Invoice %s stays %s: %s", invoice, invoice.status, error)
        invoice_record_event(invoice=invoice, type=type, note=note, data=data)
    invoice.refresh_from_db()


__all__ = [
    "OPEN_PAYMENT",
    "settle_awaiting_valuation",
    "settle_report",
    "settle_transfer",
    "settlement_verdict",
]
