"""An invoice's payments (orders) and the on-chain transfers behind them, over the REST API."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema

from checkout.models import Payment, payment_snapshot
from invoices.api import invoice_or_404
from merchants.api import Error, merchant_of
from wallets.models import Transfer

router = Router(tags=["payments"])


class PaymentOut(Schema):
    order_number: str
    status: str
    asset: str
    network: str
    address: str
    decimals: int
    amount_due: str | None
    amount_due_major: str | None
    received: str
    confirmed: str
    invoice_amount: str
    fee: str
    fee_payer: str
    rate: str
    rate_source: str
    rate_at: datetime
    expires_at: datetime | None
    created_at: datetime
    finalized_at: datetime | None


class TransferOut(Schema):
    id: int
    order_number: str
    network: str
    asset: str
    tx_hash: str
    log_index: int
    block_number: int
    from_address: str
    to_address: str
    amount: str
    amount_major: str
    status: str
    confirmations: int
    explorer_url: str
    seen_at: datetime
    confirmed_at: datetime | None


@router.get(
    "/{int:invoice_id}/payments",
    response={200: list[PaymentOut], 404: Error},
    summary="The payments (orders) of an invoice, newest first",
)
def list_payments(request: HttpRequest, invoice_id: int):
    payments = Payment.objects.filter(
        invoice=invoice_or_404(merchant_of(request), invoice_id)
    ).select_related("asset", "network", "deposit_address")
    return [payment_snapshot(payment) for payment in payments.order_by("-number")]


@router.get(
    "/{int:invoice_id}/transfers",
    response={200: list[TransferOut], 404: Error},
    summary="On-chain transfers to the invoice's deposit addresses",
)
def list_transfers(request: HttpRequest, invoice_id: int):
    invoice = invoice_or_404(merchant_of(request), invoice_id)
    orders = dict(
        Payment.objects.filter(invoice=invoice).values_list("deposit_address_id", "order_number")
    )
    transfers = (
        Transfer.objects.filter(deposit_address_id__in=list(orders))
        .select_related("network", "asset")
        .order_by("block_number", "log_index", "pk")
    )
    return [
        {
            "id": t.pk,
            "order_number": orders[t.deposit_address_id],
            "network": t.network.slug,
            "asset": t.asset.symbol,
            "tx_hash": t.tx_hash,
            "log_index": t.log_index,
            "block_number": t.block_number,
            "from_address": t.from_address,
            "to_address": t.to_address,
            "amount": str(t.amount),
            "amount_major": str(t.amount_major),
            "status": t.status,
            "confirmations": t.confirmations,
            "explorer_url": t.explorer_url,
            "seen_at": t.seen_at,
            "confirmed_at": t.confirmed_at,
        }
        for t in transfers
    ]
