"""Refunds: money of one payment going back to its payer, in the asset and network it came in.

A request is opened by the sweep for invoices that failed or were cancelled after money had
arrived (`refunds_open_automatic`), or by the merchant (a full or partial amount with a
reason, the overpaid difference, a late payment). The payer gives an address on the refund
page (`/refund/<token>/`); the merchant's browser wallet sends the transfer (the server only
prepares the call, it never signs), or the merchant pastes a transaction hash, or marks the
refund as paid outside. `refunds_watch` then confirms it on chain: the reported transaction,
or any transfer to the refund address in that asset and amount. A confirmed refund is posted
to the ledger as its own transaction: the merchant's balance and the holdings go down by it.

Statuses move by `REFUND_TRANSITIONS` only, under the lock order of every settlement write
(invoice, then payment, then the refund), so two refunds racing for the same money are
serialised: the first takes it, the second is told how much is left.
"""

import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from checkout.models import (
    ACTIVE_REFUND,
    AUTOMATIC_KINDS,
    REFUND_TRANSITIONS,
    Payment,
    RefundKind,
    RefundRequest,
    RefundStatus,
    payment_snapshot,
    refund_snapshot,
)
from checkout.screening import screen_refund_address
from checkout.settlement import lock_invoice_then_payment
from invoices.delivery import invoice_refund_claim_email
from invoices.models import Actor, CreditNote, FailureReason, Invoice, InvoiceStatus
from invoices.services import (
    invoice_accept_unresolved,
    invoice_payment_status,
    invoice_record_event,
    invoice_set_refund_state,
)
from merchants.fields import exact_sum, exact_totals
from merchants.models import User
from merchants.money import get_currency, parse_typed_amount
from merchants.validators import one_line
from wallets.chain import (
    ZERO_ADDRESS,
    Chain,
    ChainError,
    MinedTransaction,
    SeenTransfer,
    Unsupported,
    checksum_ok,
    erc20_transfer_data,
)
from wallets.ledger import (
    InsufficientBalance,
    Leg,
    fees_account,
    fx_account,
    held_account,
    holdings_account,
    ledger_post,
    merchant_account,
)
from wallets.models import (
    Asset,
    DepositAddress,
    LedgerEntry,
    Network,
    Transfer,
    TransferStatus,
)

logger = logging.getLogger(__name__)
R = RefundStatus
TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
# A typed refund amount has at most this many digits before the point (10^30 tokens).
MAX_REFUND_DIGITS = 30
# How far back the watcher looks for an unreported refund transfer the first time it asks.
FIRST_LOOKBACK_BLOCKS = 5000
# The same for ETH, read from full blocks and traces rather than logs: a refund is sent after
# its address was given, and the watcher's first round follows within a beat of that.
NATIVE_FIRST_LOOKBACK_BLOCKS = 64
# Invoices that failed this long ago get no automatic refund request any more (the sweep's
# cost follows recent failures, never the history).
AUTOMATIC_WINDOW_DAYS = 7
AUTOMATIC_REASONS = {
    FailureReason.CANCELLED: (RefundKind.CANCELLED, "The invoice was cancelled."),
    FailureReason.UNDERPAID: (
        RefundKind.UNDERPAID,
        "Less than the amount due arrived before the payment time ended.",
    ),
    FailureReason.COMPLIANCE_HOLD: (
        RefundKind.COMPLIANCE,
        "The payment could not be accepted after a compliance check.",
    ),
    FailureReason.EXPIRED: (RefundKind.FAILED, "The payment time ended."),
    FailureReason.PROCESSING_TIMEOUT: (RefundKind.FAILED, "The payment could not be completed."),
}


class RefundError(Exception):
    """A refund change that is not possible; the message says why, `field` where.

    `conflict`: the input is well formed but what is stored refuses it (more than is left,
    money another refund took first, a transaction that pays another refund); like every
    error without a field (a refund in the wrong state), the API answers it 409, not 422."""

    def __init__(self, message: str, field: str = "", *, conflict: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.conflict = conflict or not field


# Amounts ----------------------------------------------------------------------------------------


def _confirmed_received(payment: Payment, asset_id: int) -> Decimal:
    """Base units of one asset confirmed at the payment's deposit address."""
    return exact_sum(
        Transfer.objects.filter(
            deposit_address_id=payment.deposit_address_id,
            asset_id=asset_id,
            status=TransferStatus.CONFIRMED,
        ),
        "amount",
    )


def refundable(payment: Payment, asset: Asset | None = None) -> Decimal:
    """Base units of `asset` (default: the quoted one) the payment received, confirmed, that
    no active refund holds yet."""
    asset = asset or payment.asset
    received = _confirmed_received(payment, asset.pk)
    held = exact_sum(
        RefundRequest.objects.filter(payment=payment, asset=asset, status__in=ACTIVE_REFUND),
        "amount",
    )
    return max(Decimal(0), received - held)


@dataclass(frozen=True)
class Refundable:
    """Money of one order in one asset that a new refund may still take: what arrived in it,
    confirmed, less what active refunds hold. The asset is the one received, which need not be
    the one quoted (the payer sent USDT to a USDC order)."""

    payment: Payment
    asset: Asset
    received: Decimal
    left: Decimal

    @property
    def left_major(self) -> Decimal:
        return self.asset.to_major(self.left)

    @property
    def received_major(self) -> Decimal:
        return self.asset.to_major(self.received)

    @property
    def key(self) -> str:
        return f"{self.payment.pk}:{self.asset.pk}"


def refundable_money(invoice: Invoice) -> list[Refundable]:
    """Every (order, asset received) of the invoice with confirmed money, newest order first,
    the quoted asset before others: three queries, whatever the number of transfers."""
    payments = {
        p.deposit_address_id: p
        for p in Payment.objects.filter(invoice=invoice).select_related("asset", "network")
    }
    if not payments:
        return []
    received = exact_totals(
        Transfer.objects.filter(
            deposit_address_id__in=list(payments), status=TransferStatus.CONFIRMED
        ),
        ["deposit_address_id", "asset_id"],
        "amount",
    )
    held = {
        (row["payment_id"], row["asset_id"]): row["total"]
        for row in exact_totals(
            RefundRequest.objects.filter(invoice=invoice, status__in=ACTIVE_REFUND),
            ["payment_id", "asset_id"],
            "amount",
        )
    }
    assets = Asset.objects.select_related("network").in_bulk({r["asset_id"] for r in received})
    found = []
    for row in received:
        payment = payments[row["deposit_address_id"]]
        total = row["total"]
        left = max(Decimal(0), total - held.get((payment.pk, row["asset_id"]), Decimal(0)))
        found.append(Refundable(payment, assets[row["asset_id"]], total, left))
    found.sort(key=lambda r: (-r.payment.number, r.asset.pk != r.payment.asset_id, r.asset.pk))
    return found


def _received_any(payment: Payment, asset: Asset) -> bool:
    return Transfer.objects.filter(
        deposit_address_id=payment.deposit_address_id,
        asset=asset,
        status=TransferStatus.CONFIRMED,
    ).exists()


def _awaiting_valuation(payment: Payment, asset: Asset) -> bool:
    return Transfer.objects.filter(
        deposit_address_id=payment.deposit_address_id,
        asset=asset,
        status=TransferStatus.CONFIRMED,
        awaiting_valuation_since__isnull=False,
    ).exists()


def whole(asset: Asset, units: Decimal | int) -> str:
    """Base units as whole tokens for people: "40", "12.5"."""
    return format(asset.to_major(units).normalize(), "f")


def parse_amount(text: str, asset: Asset) -> Decimal:
    """Whole tokens as typed ("12.5") to base units; refuses more decimals than the asset has."""
    value = parse_typed_amount(text)
    if value is None:
        raise RefundError(
            "Enter an amount like 12.50 (a point for decimals; commas only between thousands).",
            "amount",
        )
    if value <= 0:
        raise RefundError("Enter an amount above zero.", "amount")
    if value.adjusted() > MAX_REFUND_DIGITS:
        # Beyond any order's money, and past what the decimal context can scale (1e999999999
        # raised Overflow in scaleb).
        raise RefundError("That is more than any order received.", "amount")
    units = value.scaleb(asset.decimals)
    if units != units.to_integral_value():
        raise RefundError(f"{asset.symbol} has {asset.decimals} decimals at most.", "amount")
    return units.to_integral_value()


def _lock(refund_or_payment: RefundRequest | Payment) -> tuple[Invoice, Payment]:
    return lock_invoice_then_payment(
        refund_or_payment.payment_id
        if isinstance(refund_or_payment, RefundRequest)
        else refund_or_payment.pk
    )


def _locked_refund(pk: int) -> RefundRequest:
    return (
        RefundRequest.objects.select_for_update(of=("self",))
        .select_related("asset", "network", "payment", "invoice")
        .get(pk=pk)
    )


def _event(
    refund: RefundRequest,
    type: str,
    note: str,
    *,
    by: User | None = None,
    actor: str = Actor.SYSTEM,
) -> None:
    invoice_record_event(
        invoice=refund.invoice,
        type=type,
        note=note,
        data={"refund": refund_snapshot(refund), "payment": payment_snapshot(refund.payment)},
        actor=actor if by is None else Actor.USER,
        by=by,
    )


def _move(refund: RefundRequest, to: str, **fields: Any) -> None:
    """Conditional status change by the transition table (the row is locked already)."""
    if to != refund.status and to not in REFUND_TRANSITIONS[refund.status]:
        raise RefundError(_state_message(refund))
    now = timezone.now()
    updates: dict[str, Any] = {"status": to, "updated_at": now, **fields}
    if to in (R.CONFIRMED, R.DECLINED):
        updates["finalized_at"] = now
    changed = RefundRequest.objects.filter(pk=refund.pk, status=refund.status).update(**updates)
    if changed != 1:
        raise RefundError("The refund changed meanwhile; reload and try again.")
    for key, value in updates.items():
        setattr(refund, key, value)


def _state_message(refund: RefundRequest) -> str:
    if refund.status == R.CONFIRMED:
        when = refund.finalized_at.strftime("%b %-d, %Y") if refund.finalized_at else ""
        return f"This refund was paid{' on ' + when if when else ''}; nothing was changed."
    if refund.status == R.DECLINED:
        return "This refund was declined; nothing was changed."
    if refund.status == R.SENT:
        return "This refund was sent; it is waiting for confirmations."
    if refund.status == R.ADDRESS_GIVEN:
        return "A refund address was given already; it cannot change."
    return "The refund is waiting for the payer's address."


# Opening requests -------------------------------------------------------------------------------


def refund_request(
    *,
    payment: Payment,
    kind: str,
    reason: str,
    amount: Decimal | None = None,
    asset: Asset | None = None,
    credit_note: CreditNote | None = None,
    by: User | None = None,
    actor: str = Actor.USER,
) -> RefundRequest:
    """Open a refund of `amount` base units (None: everything still refundable)."""
    reason = one_line(reason)[:500]
    if not reason:
        raise RefundError("Say why the money goes back (the payer sees it).", "reason")
    with transaction.atomic():
        invoice, payment = _lock(payment)
        asset = asset or payment.asset
        left = refundable(payment, asset)
        if left <= 0 and asset != payment.asset and not _received_any(payment, asset):
            raise RefundError(
                f"Order {payment.order_number} received no confirmed {asset.symbol} on "
                f"{asset.network.name}.",
                "asset",
                conflict=True,
            )
        if left <= 0:
            raise RefundError(
                f"Nothing is left to refund on order {payment.order_number}: every confirmed "
                f"{asset.symbol} is refunded or in a refund already.",
                "amount",
                conflict=True,
            )
        amount = left if amount is None else amount
        if amount <= 0:
            raise RefundError("Enter an amount above zero.", "amount")
        if amount > left:
            raise RefundError(
                f"Only {whole(asset, left)} {asset.symbol} is left to refund on order "
                f"{payment.order_number}.",
                "amount",
                conflict=True,
            )
        if amount < left and _awaiting_valuation(payment, asset):
            raise RefundError(
                f"{asset.symbol} of order {payment.order_number} is still waiting for a rate, "
                "so it is not booked yet: refund all of it, or wait until it is valued.",
                "amount",
                conflict=True,
            )
        if credit_note is not None and credit_note.invoice_id != invoice.pk:
            raise RefundError("That credit note belongs to another invoice.", "credit_note")
        try:
            with transaction.atomic():
                refund = RefundRequest.objects.create(
                    invoice=invoice,
                    payment=payment,
                    asset=asset,
                    network=asset.network,
                    kind=kind,
                    reason=reason,
                    amount=amount,
                    credit_note=credit_note,
                    created_by=by,
                )
        except IntegrityError:
            raise RefundError(
                f"A refund of this kind exists already for order {payment.order_number}."
            ) from None
        refund.invoice, refund.payment = invoice, payment
        label = f"{whole(asset, amount)} {asset.symbol} on {asset.network.name}"
        _event(
            refund,
            "refund.requested",
            f"Refund of {label} for order {payment.order_number}: {reason}",
            by=by,
            actor=actor,
        )
        invoice_refund_claim_email(
            invoice=invoice, key=f"refund:{refund.pk}", claim_url=refund.claim_url, received=label
        )
    return refund


def refunds_open_automatic(*, now=None) -> int:
    """Open the refund of every recently failed or cancelled invoice that had received money
    (once per payment and kind; the unique constraint makes a twin sweep harmless)."""
    now = now or timezone.now()
    since = now - timedelta(days=AUTOMATIC_WINDOW_DAYS)
    candidates = (
        Payment.objects.filter(
            invoice__status=InvoiceStatus.FAILED,
            invoice__finalized_at__gte=since,
            confirmed__gt=0,
        )
        .exclude(refunds__kind__in=AUTOMATIC_KINDS)
        .select_related("invoice")
    )
    opened = 0
    for payment in candidates[:200]:
        kind, reason = AUTOMATIC_REASONS.get(
            FailureReason(payment.invoice.failure_reason or FailureReason.EXPIRED),
            (RefundKind.FAILED, "The payment could not be completed."),
        )
        try:
            refund_request(payment=payment, kind=kind, reason=reason, actor=Actor.SYSTEM)
        except RefundError:
            continue  # refunded by hand already, or a twin sweep was first
        opened += 1
    return opened


def refund_resolve_unresolved(*, payment: Payment, by: User | None = None) -> RefundRequest:
    """An Unresolved invoice's money goes back: the overpaid difference (the invoice is then
    paid), or a late payment in full (the invoice fails as expired)."""
    with transaction.atomic():
        invoice, payment = _lock(payment)
        if invoice.status != InvoiceStatus.UNRESOLVED:
            raise RefundError("Only an invoice that needs your decision is resolved by a refund.")
        due = payment.amount_due
        overpaid = payment.status == "overpaid" and due is not None and payment.confirmed > due
        if overpaid:
            assert due is not None
            refund = refund_request(
                payment=payment,
                kind=RefundKind.OVERPAYMENT,
                reason="More than the amount due arrived; the difference goes back.",
                amount=payment.confirmed - due,
                by=by,
            )
            invoice_accept_unresolved(
                invoice=invoice,
                note=f"The overpaid difference is refunded (refund {refund.pk}).",
                by=by,
            )
        else:
            refund = refund_request(
                payment=payment,
                kind=RefundKind.LATE,
                reason="The payment arrived after its time had ended; it goes back in full.",
                by=by,
            )
            invoice_payment_status(
                invoice=invoice,
                to=InvoiceStatus.FAILED,
                type="invoice.failed",
                failure_reason=FailureReason.EXPIRED,
                note=f"The late payment is refunded (refund {refund.pk}).",
            )
    return refund


# The payer's address ----------------------------------------------------------------------------


def check_refund_address(*, network: Network, address: str, again: str) -> str:
    """The payer's refund address, lower-case, or RefundError naming what is wrong."""
    address, again = address.strip(), again.strip()
    if not ADDRESS.fullmatch(address):
        raise RefundError(
            "Enter an address of 0x and 40 hexadecimal characters (0-9, a-f).", "address"
        )
    if not checksum_ok(address):
        raise RefundError(
            "This address's capital letters do not match its checksum: a character is wrong. "
            "Copy it again from your wallet.",
            "address",
        )
    if again.lower() != address.lower():
        raise RefundError("The two addresses differ. Enter the same address twice.", "again")
    lower = address.lower()
    if lower == ZERO_ADDRESS:
        raise RefundError("The zero address burns whatever is sent to it.", "address")
    if DepositAddress.objects.filter(address=lower).exists():
        raise RefundError(
            "This is one of our payment addresses, not yours. Enter your own wallet's address.",
            "address",
        )
    if Asset.objects.filter(contract_address=lower).exists():
        raise RefundError(
            "This is a token contract, not a wallet: tokens sent to it are lost.", "address"
        )
    return lower


def refund_give_address(
    *, refund: RefundRequest, address: str, again: str, no_memo_needed: bool
) -> RefundRequest:
    lower = check_refund_address(network=refund.network, address=address, again=again)
    if not no_memo_needed:
        raise RefundError(
            "Confirm that this address needs no memo or tag. Exchange deposit addresses that "
            "need one lose refunds sent without it.",
            "no_memo_needed",
        )
    if refund.status != R.REQUESTED:
        raise RefundError(_state_message(refund))
    answer = screen_refund_address(network=refund.network, address=lower)
    # Recorded whatever follows: a refused address is a decision too.
    refund.screenings.create(
        address=lower,
        source=answer.source,
        result=answer.result,
        detail=answer.detail,
        network=refund.network,
    )
    if answer.hit:
        raise RefundError("This address cannot receive this refund. Enter another.", "address")
    with transaction.atomic():
        _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status != R.REQUESTED:
            raise RefundError(_state_message(locked))
        _move(locked, R.ADDRESS_GIVEN, address=lower, address_given_at=timezone.now())
        _event(locked, "refund.address_given", f"The payer gave {lower}.", actor=Actor.PAYER)
    return locked


# Paying it --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalletCall:
    """What the merchant's browser wallet sends (EIP-1193 eth_sendTransaction): the server
    prepares it, the wallet signs it."""

    chain_id: int
    to: str
    value: int
    data: str


def wallet_call(refund: RefundRequest) -> WalletCall | None:
    if refund.status != R.ADDRESS_GIVEN or not refund.address:
        return None
    chain_id = refund.network.chain_id
    if refund.asset.is_native:
        return WalletCall(chain_id, refund.address, int(refund.amount), "0x")
    data = erc20_transfer_data(refund.address, int(refund.amount))
    return WalletCall(chain_id, refund.asset.contract_address, 0, data)


def refund_report_sent(
    *, refund: RefundRequest, tx_hash: str, by: User | None = None, actor: str = Actor.USER
) -> RefundRequest:
    """The merchant's wallet sent it (the page reports the hash), or the merchant pasted one.
    The watcher confirms it, or sends the refund back to "address given" if it does not pay it."""
    tx_hash = tx_hash.strip().lower()
    if not TX_HASH.fullmatch(tx_hash):
        raise RefundError("Enter a transaction hash: 0x and 64 hexadecimal characters.", "tx_hash")
    with transaction.atomic():
        _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status == R.SENT and locked.tx_hash == tx_hash:
            return locked  # the page reported it twice
        if locked.status not in (R.ADDRESS_GIVEN, R.SENT):
            raise RefundError(_state_message(locked))
        if (
            RefundRequest.objects.filter(network=locked.network, tx_hash=tx_hash)
            .exclude(pk=locked.pk)
            .exists()
        ):
            raise RefundError(
                "That transaction pays another refund already.", "tx_hash", conflict=True
            )
        fields = {
            "tx_hash": tx_hash,
            "log_index": None,
            "block_number": None,
            "block_hash": "",
            "sent_at": timezone.now(),
        }
        if locked.status == R.SENT:
            RefundRequest.objects.filter(pk=locked.pk).update(**fields)
            for key, value in fields.items():
                setattr(locked, key, value)
        else:
            _move(locked, R.SENT, **fields)
        _event(locked, "refund.sent", f"Sent in transaction {tx_hash}.", by=by, actor=actor)
    return locked


def refund_mark_outside(
    *, refund: RefundRequest, reference: str, by: User | None = None, actor: str = Actor.USER
) -> RefundRequest:
    """Paid some other way (another wallet, a bank transfer): the refund is done; the books
    are not touched, as for an invoice marked paid off-platform."""
    reference = one_line(reference)[:200]
    if not reference:
        raise RefundError("Say how it was paid (a transaction, a bank reference).", "reference")
    with transaction.atomic():
        _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status not in (R.REQUESTED, R.ADDRESS_GIVEN):
            raise RefundError(_state_message(locked))
        _move(locked, R.CONFIRMED, outside_reference=reference)
        invoice_set_refund_state(invoice=locked.invoice, state=refund_state(locked.invoice))
        _event(
            locked, "refund.confirmed", f"Paid outside Stablebill: {reference}", by=by, actor=actor
        )
    return locked


def refund_decline(
    *, refund: RefundRequest, reason: str, by: User | None = None, actor: str = Actor.USER
) -> RefundRequest:
    reason = one_line(reason)[:500]
    if not reason:
        raise RefundError("Say why the refund is declined.", "decline_reason")
    with transaction.atomic():
        _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status not in (R.REQUESTED, R.ADDRESS_GIVEN):
            raise RefundError(_state_message(locked))
        _move(locked, R.DECLINED, decline_reason=reason)
        _event(locked, "refund.declined", reason, by=by, actor=actor)
    return locked


# Watching the chain -----------------------------------------------------------------------------


def refunds_watch(*, network: Network, chain: Chain | None = None) -> int:
    """Follow the network's refunds that are sent or awaited: find the transfer, count its
    confirmations, confirm and post it. Node calls happen outside any transaction; each
    change is a short locked write. Returns how many were confirmed."""
    pending = list(
        RefundRequest.objects.filter(
            network=network, status__in=(R.ADDRESS_GIVEN, R.SENT)
        ).select_related("asset", "network")
    )
    if not pending:
        return 0
    chain = chain or Chain(network.effective_rpc_url)
    head = chain.head()
    needed = network.effective_confirmations
    confirmed = 0
    native = []
    for refund in pending:
        try:
            if refund.tx_hash:
                confirmed += _follow(refund, chain, head, needed)
            elif refund.asset.is_native:
                native.append(refund)
            else:
                _search(refund, chain, head)
        except ChainError as error:
            logger.warning("Refund %s not checked: %s", refund.pk, error)
    if native:
        try:
            _search_native(native, chain, head)
        except ChainError as error:
            logger.warning("Native refunds of %s not searched: %s", network.slug, error)
    return confirmed


def _matches(refund: RefundRequest, seen: SeenTransfer) -> bool:
    return (
        seen.token == refund.asset.contract_address
        and seen.recipient == refund.address
        and seen.amount == int(refund.amount)
    )


def _search(refund: RefundRequest, chain: Chain, head: int) -> None:
    """An unreported transfer from any address to the refund address, same asset and amount."""
    start = refund.watch_from_block
    if start is None:
        start = max(0, head - FIRST_LOOKBACK_BLOCKS)
    end = min(head, start + refund.network.effective_max_block_range - 1)
    seen = chain.token_transfers_to(start, end, [refund.asset.contract_address], refund.address)
    used = set(
        RefundRequest.objects.filter(network=refund.network)
        .exclude(tx_hash="")
        .filter(tx_hash__in=[s.tx_hash for s in seen])
        .values_list("tx_hash", "log_index")
    )
    match = next(
        (s for s in seen if _matches(refund, s) and (s.tx_hash, s.log_index) not in used), None
    )
    _record_search(refund, match, end)


def _record_search(refund: RefundRequest, match: SeenTransfer | None, end: int) -> None:
    """A searched range's outcome: the transfer found (the refund is sent; confirmations are
    counted, and its block hash re-checked, as for a reported one), or the next block to ask."""
    with transaction.atomic():
        _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status != R.ADDRESS_GIVEN or locked.tx_hash:
            return  # reported meanwhile
        if match is None:
            RefundRequest.objects.filter(pk=locked.pk).update(
                watch_from_block=max(end + 1, locked.watch_from_block or 0)
            )
            return
        try:
            with transaction.atomic():
                _move(
                    locked,
                    R.SENT,
                    tx_hash=match.tx_hash,
                    log_index=match.log_index,
                    block_number=match.block_number,
                    block_hash=match.block_hash,
                    from_address=match.sender,
                    sent_at=timezone.now(),
                    watch_from_block=match.block_number,
                )
        except IntegrityError:
            return  # a twin round gave this transfer to another refund; search on next round
        _event(locked, "refund.sent", f"Transfer seen on chain in transaction {match.tx_hash}.")


def _traced_match(
    refund: RefundRequest, chain: Chain, mined: MinedTransaction
) -> SeenTransfer | None:
    try:
        traced = chain.internal_transfers(mined.block_number, mined.block_number, {refund.address})
    except Unsupported:
        return None
    for t in traced:
        if t.tx_hash == mined.tx_hash and t.amount == int(refund.amount):
            return SeenTransfer(
                t.tx_hash,
                -2 - t.ordinal,
                t.block_number,
                t.block_hash,
                "",
                t.sender,
                t.recipient,
                t.amount,
            )
    return None


def _gone(refund: RefundRequest, chain: Chain) -> int:
    """No receipt for the refund's transaction: not mined yet (or a lagging node), unless the
    block it was seen in has been replaced. Then a reorg dropped it: the refund waits for a
    transfer again, searched from that block on."""
    if refund.block_number is None or not refund.block_hash:
        return 0
    canonical = chain.block_hashes([refund.block_number])[refund.block_number]
    if canonical is None or canonical == refund.block_hash:
        return 0  # "not seen yet", never "gone"
    with transaction.atomic():
        _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status != R.SENT or locked.tx_hash != refund.tx_hash:
            return 0
        _move(
            locked,
            R.ADDRESS_GIVEN,
            tx_hash="",
            log_index=None,
            block_number=None,
            block_hash="",
            watch_from_block=refund.block_number,
        )
        _event(
            locked,
            "refund.not_paid",
            f"A chain reorganisation removed transaction {refund.tx_hash} from block "
            f"{refund.block_number}; the refund waits for its transfer again.",
        )
    return 0


def _first_block(refund: RefundRequest, head: int, lookback: int) -> int:
    start = refund.watch_from_block
    return max(0, head - lookback) if start is None else start


def _native_seen(
    chain: Chain, start: int, end: int, recipients: set[str], amounts: set[int]
) -> list[SeenTransfer]:
    """ETH that reached `recipients` in the range, by the scanner's own means: top-level
    transactions of the full blocks (kept only when their receipt says status 1), then the
    calls of contracts (smart-contract wallets, exchange hot wallets) by tracing, where the
    node can trace. Traced calls carry the scanner's log index, -2 - their ordinal."""
    seen = [
        t
        for t in chain.native_transfers(start, end)
        if t.recipient in recipients and t.amount in amounts
    ]
    if seen:
        succeeded = chain.successful(t.tx_hash for t in seen)
        if any(ok is None for ok in succeeded.values()):
            raise ChainError("the node has no receipt yet for a transaction it listed")
        seen = [t for t in seen if succeeded[t.tx_hash]]
    try:
        traced = chain.internal_transfers(start, end, recipients)
    except Unsupported:
        traced = []  # such a refund is confirmed by the hash the merchant reports
    seen += [
        SeenTransfer(
            tx_hash=t.tx_hash,
            log_index=-2 - t.ordinal,
            block_number=t.block_number,
            block_hash=t.block_hash,
            token="",
            sender=t.sender,
            recipient=t.recipient,
            amount=t.amount,
        )
        for t in traced
        if t.amount in amounts
    ]
    return sorted(seen, key=lambda t: (t.block_number, t.tx_hash, t.log_index))


def _search_native(refunds: list[RefundRequest], chain: Chain, head: int) -> None:
    """Unreported ETH refunds: one pass over the blocks for all of the network's awaited
    ones (a range fetched once, not once per refund), each matched by address and amount."""
    network = refunds[0].network
    start = min(_first_block(r, head, NATIVE_FIRST_LOOKBACK_BLOCKS) for r in refunds)
    # Full blocks and their traces cost far more than logs: a round reads at most as many
    # blocks as the scanner traces at once.
    span = min(network.effective_max_block_range, settings.CHAIN_TRACE_MAX_BLOCKS)
    end = min(head, start + span - 1)
    if start > end:
        return
    seen = _native_seen(
        chain, start, end, {r.address for r in refunds}, {int(r.amount) for r in refunds}
    )
    used = set(
        RefundRequest.objects.filter(network=network)
        .exclude(tx_hash="")
        .filter(tx_hash__in=[s.tx_hash for s in seen])
        .values_list("tx_hash", "log_index")
    )
    for refund in sorted(refunds, key=lambda r: r.pk):  # the oldest request takes a transfer first
        after = _first_block(refund, head, NATIVE_FIRST_LOOKBACK_BLOCKS)
        match = next(
            (
                s
                for s in seen
                if s.block_number >= after
                and _matches(refund, s)
                and (s.tx_hash, s.log_index) not in used
            ),
            None,
        )
        if match is not None:
            used.add((match.tx_hash, match.log_index))
        _record_search(refund, match, end)


def _follow(refund: RefundRequest, chain: Chain, head: int, needed: int) -> int:
    mined = chain.mined_transaction(refund.tx_hash)
    if mined is None:
        return _gone(refund, chain)
    match = next((s for s in mined.transfers if _matches(refund, s)), None)
    if match is None and mined.succeeded and refund.asset.is_native:
        # ETH sent by a contract (a smart-contract wallet): in the transaction's calls.
        match = _traced_match(refund, chain, mined)
    problem = ""
    if not mined.succeeded:
        problem = "The transaction failed on chain; nothing was sent. Send the refund again."
    elif match is None:
        problem = (
            f"Transaction {refund.tx_hash} does not send {whole(refund.asset, refund.amount)} "
            f"{refund.asset.symbol} to {refund.address}. Send the refund again, or paste the "
            "right transaction."
        )
    deep = head - mined.block_number + 1 >= needed
    canonical = chain.block_hashes([mined.block_number])[mined.block_number] if deep else None
    with transaction.atomic():
        invoice, payment = _lock(refund)
        locked = _locked_refund(refund.pk)
        if locked.status not in (R.ADDRESS_GIVEN, R.SENT) or locked.tx_hash != refund.tx_hash:
            return 0
        if problem:
            _move(locked, R.ADDRESS_GIVEN, tx_hash="", log_index=None, block_number=None)
            _event(locked, "refund.not_paid", problem)
            return 0
        assert match is not None
        if not deep or canonical != mined.block_hash:
            RefundRequest.objects.filter(pk=locked.pk).update(
                block_number=mined.block_number, block_hash=mined.block_hash
            )
            return 0
        try:
            with transaction.atomic():
                _move(
                    locked,
                    R.CONFIRMED,
                    log_index=match.log_index,
                    block_number=mined.block_number,
                    block_hash=mined.block_hash,
                    from_address=match.sender,
                )
        except IntegrityError:
            _move(locked, R.ADDRESS_GIVEN, tx_hash="", log_index=None, block_number=None)
            _event(locked, "refund.not_paid", "That transfer pays another refund already.")
            return 0
        locked.payment = payment
        posted = _post(locked, invoice, payment, mined)
        invoice_set_refund_state(invoice=invoice, state=refund_state(invoice))
        locked.invoice = invoice
        note = f"Confirmed in block {mined.block_number}."
        if not posted:
            note += " It could not be booked: the merchant balance is too low (see the log)."
        _event(locked, "refund.confirmed", note)
    return 1


# The ledger -------------------------------------------------------------------------------------


def _legs_sum(account_ids: list[int], currency: str, tx_ids: list[int]) -> Decimal:
    return exact_sum(
        LedgerEntry.objects.filter(
            transaction_id__in=tx_ids, account_id__in=account_ids, currency=currency
        ),
        "amount",
    )


def refund_legs(refund: RefundRequest, invoice: Invoice, payment: Payment) -> list[Leg]:
    """The refund's posting: the asset leaves holdings; the merchant (or the held account, for
    a payment a compliance hold keeps) gives back its share of what this order's deposits in
    that asset credited, fees alike: pro rata, and to the cent what is left when the refund
    takes everything that is left."""
    symbol, currency = refund.asset.symbol, invoice.currency
    holdings = holdings_account(refund.network.slug)
    owner = (
        held_account(invoice.merchant) if payment.is_held else merchant_account(invoice.merchant)
    )
    merchant, held, fees = (
        merchant_account(invoice.merchant),
        held_account(invoice.merchant),
        fees_account(),
    )
    # The order's postings that moved this asset through holdings: its deposits and refunds.
    tx_ids = list(
        LedgerEntry.objects.filter(
            transaction__reference=payment.order_number,
            transaction__kind__in=("deposit", "refund"),
            account=holdings,
            currency=symbol,
        ).values_list("transaction_id", flat=True)
    )
    left_units = -_legs_sum([holdings.pk], symbol, tx_ids)
    left_credit = _legs_sum([merchant.pk, held.pk], currency, tx_ids)
    left_fee = _legs_sum([fees.pk], currency, tx_ids)
    amount = refund.amount_major
    # Money still awaiting valuation was never booked (neither holdings nor a credit): only
    # the booked part of a refund leaves the books; the rest leaves the chain only.
    booked = min(amount, max(left_units, Decimal(0)))
    if booked <= 0:
        return []
    if amount >= left_units:
        credit, fee = left_credit, left_fee
    else:
        quantum = get_currency(currency).quantum
        share = amount / left_units
        credit = min(left_credit, (left_credit * share).quantize(quantum, ROUND_HALF_UP))
        fee = min(left_fee, (left_fee * share).quantize(quantum, ROUND_HALF_UP))
    return [
        Leg(holdings, symbol, booked),
        Leg(fx_account(), symbol, -booked),
        Leg(fx_account(), currency, credit + fee),
        Leg(owner, currency, -credit),
        Leg(fees, currency, -fee),
    ]


def _post(
    refund: RefundRequest, invoice: Invoice, payment: Payment, mined: MinedTransaction
) -> bool:
    legs = refund_legs(refund, invoice, payment)
    # What awaited a rate went back unbooked: it must never be credited later.
    Transfer.objects.filter(
        deposit_address_id=payment.deposit_address_id,
        asset=refund.asset,
        status=TransferStatus.CONFIRMED,
        awaiting_valuation_since__isnull=False,
    ).update(awaiting_valuation_since=None)
    if not legs:
        return True
    try:
        with transaction.atomic():
            ledger_post(
                kind="refund",
                idempotency_key=f"refund:{refund.pk}",
                reference=payment.order_number,
                memo=f"Refund {refund.pk}: {whole(refund.asset, refund.amount)} "
                f"{refund.asset.symbol} to {refund.address}, tx {mined.tx_hash}",
                legs=legs,
            )
    except InsufficientBalance as error:
        logger.error("Refund %s confirmed on chain but not booked: %s", refund.pk, error)
        return False
    return True


# Reading ------------------------------------------------------------------------------------------


def refund_state(invoice: Invoice) -> str:
    """ "refunded", "partially_refunded" or "": what the confirmed refunds of the invoice's
    money came to, against the confirmed money in the assets they returned."""
    refunds = list(invoice.refunds.filter(status=R.CONFIRMED).select_related("payment"))
    if not refunds:
        return ""
    left = Decimal(0)
    for payment_id, asset_id in {(r.payment_id, r.asset_id) for r in refunds}:
        payment = next(r.payment for r in refunds if r.payment_id == payment_id)
        received = _confirmed_received(payment, asset_id)
        paid_back = sum(
            (r.amount for r in refunds if (r.payment_id, r.asset_id) == (payment_id, asset_id)),
            Decimal(0),
        )
        left += max(Decimal(0), received - paid_back)
    others = (
        Payment.objects.filter(invoice=invoice, confirmed__gt=0)
        .exclude(pk__in={r.payment_id for r in refunds})
        .exists()
    )
    return "partially_refunded" if left > 0 or others else "refunded"


def refunds_of(invoice: Invoice) -> list[RefundRequest]:
    return list(
        RefundRequest.objects.filter(invoice=invoice)
        .select_related("asset", "network", "payment", "created_by", "credit_note")
        .order_by("-created_at", "-pk")
    )


def refund_by_token(token: str) -> RefundRequest | None:
    if not token or len(token) > 64:
        return None
    return (
        RefundRequest.objects.filter(token=token)
        .select_related("asset", "network", "payment", "invoice__merchant")
        .first()
    )
