"""Refunds over the REST API: list, read, request, and the merchant's side of paying them
(a transaction hash, paid outside, declined). Handlers parse, call one service of
checkout.refunds, and answer with the refund as `refund_snapshot` shows it, which is also
what the `refund.*` callbacks carry.

A `RefundError` naming a field of well-formed input is a 422; one the stored state decides
(more than is left, money another refund took first, a refund in another status) is a 409,
with the field named where there is one."""

from datetime import datetime
from typing import Any, Literal

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from checkout.models import Payment, RefundKind, RefundRequest, RefundStatus, refund_snapshot
from checkout.refunds import (
    RefundError,
    parse_amount,
    refund_decline,
    refund_mark_outside,
    refund_report_sent,
    refund_request,
)
from invoices.api import In, invoice_or_404
from invoices.models import Actor, CreditNote
from merchants.api import (
    IDEMPOTENT_POST,
    ApiError,
    Error,
    cursor_field,
    idempotent,
    merchant_of,
    page,
)
from merchants.models import Merchant
from wallets.models import Asset

invoice_router = Router(tags=["refunds"])
router = Router(tags=["refunds"])

TX_HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
# A decimal string above zero (what DECIMAL_PATTERN allows, less the zeros). How many decimals
# it may have depends on the asset (USDC 6, ETH 18): the service says so, 422.
POSITIVE_AMOUNT_PATTERN = r"^(?=[0-9.]*[1-9])[0-9]{1,18}(\.[0-9]{1,18})?$"
# Printable text with at least one visible character: what the services keep once spaces
# are collapsed (an all-space reason is refused by them, 422).
TEXT_PATTERN = r"^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$"


class RefundOut(Schema):
    """The refund snapshot the `refund.*` callbacks carry too."""

    id: int
    invoice_id: int
    order_number: str
    kind: str
    reason: str = Field(description="Shown to the payer on the refund page.")
    status: Literal[tuple(RefundStatus.values)] = Field(  # type: ignore[valid-type]
        description="requested (waiting for the payer's address) → address_given → sent → "
        "confirmed; or declined."
    )
    network: str
    asset: str = Field(description="What goes back: the asset the order received.")
    decimals: int
    amount: str = Field(description='whole tokens, a decimal string (e.g. "12.5")')
    amount_base_units: str = Field(description="the exact integer in the asset's base units")
    address: str | None = Field(description="The payer's refund address, once given.")
    tx_hash: str | None
    explorer_url: str | None
    outside_reference: str | None
    decline_reason: str | None
    claim_url: str = Field(description="The payer's refund page; send it to the payer.")
    credit_note: int | None
    created_at: datetime
    sent_at: datetime | None
    finalized_at: datetime | None


class RefundPage(Schema):
    items: list[RefundOut]
    next_cursor: str | None


class RefundFilters(Schema):
    status: Literal[tuple(RefundStatus.values)] | None = None  # type: ignore[valid-type]
    cursor: str | None = cursor_field()
    limit: int = Field(25, ge=1, le=100)


class MerchantRefundFilters(RefundFilters):
    invoice_id: int | None = Field(None, ge=1, le=2**63 - 1)


class RefundCreateIn(In):
    order_number: str | None = Field(
        None,
        min_length=1,
        max_length=48,
        pattern=r"^[!-~]+$",
        description="The order whose money goes back; left out: the invoice's newest order.",
    )
    asset: str | None = Field(
        None,
        min_length=1,
        max_length=12,
        pattern=r"^[A-Za-z0-9.]+$",
        description="The asset received, e.g. USDT sent to a USDC order; left out: the order's "
        "quoted asset.",
    )
    network: str | None = Field(
        None,
        min_length=1,
        max_length=40,
        pattern=r"^[a-z0-9-]+$",
        description="The network the asset was received on; left out: the order's network.",
    )
    amount: str | None = Field(
        None,
        pattern=POSITIVE_AMOUNT_PATTERN,
        examples=["12.5"],
        description="Whole tokens of that asset; left out: everything still refundable. More "
        "than is left (received, less active refunds) is a 409.",
    )
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)
    credit_note_id: int | None = Field(None, ge=1, le=2**63 - 1)


class SentIn(In):
    tx_hash: str = Field(pattern=TX_HASH_PATTERN, description="0x and 64 hexadecimal digits")


class OutsideIn(In):
    reference: str = Field(min_length=1, max_length=200, pattern=TEXT_PATTERN)


class DeclineIn(In):
    reason: str = Field(min_length=1, max_length=500, pattern=TEXT_PATTERN)


# Reading ------------------------------------------------------------------------------------------


def _scope(merchant: Merchant) -> QuerySet[RefundRequest]:
    return RefundRequest.objects.filter(invoice__merchant=merchant).select_related(
        "asset", "network", "payment"
    )


def _refund_or_404(merchant: Merchant, refund_id: int) -> RefundRequest:
    refund = _scope(merchant).filter(pk=refund_id).first()
    if refund is None:
        raise ApiError(404, "No such refund.", code="not_found")
    return refund


def _page(refunds: QuerySet[RefundRequest], filters: RefundFilters) -> dict[str, Any]:
    if filters.status:
        refunds = refunds.filter(status=filters.status)
    rows, next_cursor = page(refunds, cursor=filters.cursor, limit=filters.limit)
    return {"items": [refund_snapshot(r) for r in rows], "next_cursor": next_cursor}


@router.get("", response=RefundPage, summary="List your refunds, newest first")
def list_refunds(request: HttpRequest, filters: Query[MerchantRefundFilters]):
    refunds = _scope(merchant_of(request))
    if filters.invoice_id is not None:
        refunds = refunds.filter(invoice_id=filters.invoice_id)
    return _page(refunds, filters)


@router.get("/{int:refund_id}", response={200: RefundOut, 404: Error}, summary="Get a refund")
def get_refund(request: HttpRequest, refund_id: int):
    return refund_snapshot(_refund_or_404(merchant_of(request), refund_id))


@invoice_router.get(
    "/{int:invoice_id}/refunds",
    response={200: RefundPage, 404: Error},
    summary="The refunds of an invoice, newest first",
)
def list_invoice_refunds(request: HttpRequest, invoice_id: int, filters: Query[RefundFilters]):
    invoice = invoice_or_404(merchant_of(request), invoice_id)
    return _page(_scope(merchant_of(request)).filter(invoice=invoice), filters)


# Writing ------------------------------------------------------------------------------------------


def _refused(error: RefundError, rename: dict[str, str] | None = None) -> ApiError:
    field = (rename or {}).get(error.field, error.field)
    fields = {field: [str(error)]} if field else {}
    if error.conflict:
        return ApiError(409, str(error), code="invalid_state", fields=fields)
    return ApiError(422, f"{field}: {error}" if field else str(error), fields=fields)


def _money(payment: Payment, symbol: str | None, network: str | None) -> Asset:
    if symbol is None and network is None:
        return payment.asset
    asset = (
        Asset.objects.select_related("network")
        .filter(
            symbol__iexact=symbol or payment.asset.symbol,
            network__slug=network or payment.network.slug,
        )
        .first()
    )
    if asset is None:
        # Like an id that names nothing: what is named is not there.
        raise ApiError(404, "No such asset on that network.", code="not_found")
    return asset


@invoice_router.post(
    "/{int:invoice_id}/refunds",
    response={201: RefundOut, 404: Error, 409: Error, 422: Error},
    summary="Refund money of an invoice, in full or in part",
    openapi_extra=IDEMPOTENT_POST,
    description="Opens a refund request of an order's money in the asset and network it "
    "arrived in (which may differ from the quoted one). The payer is emailed the refund page "
    "(`claim_url`) to give an address; the `refund.requested` callback says so. 409 when the "
    "amount is more than is left of that asset (confirmed, less active refunds: two requests "
    "racing for the same money get one refund and one 409).",
)
@idempotent
def create_refund(request: HttpRequest, invoice_id: int, payload: RefundCreateIn):
    merchant = merchant_of(request)
    invoice = invoice_or_404(merchant, invoice_id)
    payments = Payment.objects.filter(invoice=invoice).select_related("asset", "network")
    if payload.order_number is not None:
        payments = payments.filter(order_number=payload.order_number)
    payment = payments.order_by("-number").first()
    if payment is None:
        if payload.order_number is not None:
            raise ApiError(404, "No such order of this invoice.", code="not_found")
        raise ApiError(409, "This invoice has no payment to refund.", code="invalid_state")
    asset = _money(payment, payload.asset, payload.network)
    note = None
    if payload.credit_note_id is not None:
        note = CreditNote.objects.filter(invoice=invoice, pk=payload.credit_note_id).first()
        if note is None:
            raise ApiError(404, "No such credit note of this invoice.", code="not_found")
    try:
        amount = parse_amount(payload.amount, asset) if payload.amount is not None else None
        refund = refund_request(
            payment=payment,
            kind=RefundKind.MANUAL,
            reason=payload.reason,
            amount=amount,
            asset=asset,
            credit_note=note,
            actor=Actor.API,
        )
    except RefundError as error:
        raise _refused(error, {"credit_note": "credit_note_id"}) from None
    return 201, refund_snapshot(RefundRequest.objects.get(pk=refund.pk))


@router.post(
    "/{int:refund_id}/sent",
    response={200: RefundOut, 404: Error, 409: Error, 422: Error},
    summary="Report the transaction that pays a refund",
    openapi_extra=IDEMPOTENT_POST,
    description="Once the payer gave an address (`address_given`), or to replace the hash of "
    "a `sent` refund. The watcher confirms it after the network's confirmations if it sends "
    "exactly the amount of the asset to the address (otherwise the refund goes back to "
    "`address_given`). Reporting the same hash again changes nothing.",
)
@idempotent
def report_sent(request: HttpRequest, refund_id: int, payload: SentIn):
    refund = _refund_or_404(merchant_of(request), refund_id)
    try:
        refund = refund_report_sent(refund=refund, tx_hash=payload.tx_hash, actor=Actor.API)
    except RefundError as error:
        raise _refused(error) from None
    return refund_snapshot(RefundRequest.objects.get(pk=refund.pk))


@router.post(
    "/{int:refund_id}/paid-outside",
    response={200: RefundOut, 404: Error, 409: Error, 422: Error},
    summary="Mark a refund as paid outside Stablebill",
    openapi_extra=IDEMPOTENT_POST,
    description="For a `requested` or `address_given` refund paid some other way (another "
    "wallet, a bank transfer): it is confirmed with the reference; the books are not touched.",
)
@idempotent
def mark_paid_outside(request: HttpRequest, refund_id: int, payload: OutsideIn):
    refund = _refund_or_404(merchant_of(request), refund_id)
    try:
        refund_mark_outside(refund=refund, reference=payload.reference, actor=Actor.API)
    except RefundError as error:
        raise _refused(error) from None
    return refund_snapshot(RefundRequest.objects.get(pk=refund.pk))


@router.post(
    "/{int:refund_id}/decline",
    response={200: RefundOut, 404: Error, 409: Error, 422: Error},
    summary="Decline a refund, with the reason",
    openapi_extra=IDEMPOTENT_POST,
    description="For a `requested` or `address_given` refund; the payer's page shows the "
    "reason. Its money is refundable again by a new request.",
)
@idempotent
def decline_refund(request: HttpRequest, refund_id: int, payload: DeclineIn):
    refund = _refund_or_404(merchant_of(request), refund_id)
    try:
        refund_decline(refund=refund, reason=payload.reason, actor=Actor.API)
    except RefundError as error:
        raise _refused(error, {"decline_reason": "reason"}) from None
    return refund_snapshot(RefundRequest.objects.get(pk=refund.pk))
