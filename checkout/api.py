"""An invoice's payments (orders) and the on-chain transfers behind them, over the REST API."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Field, Router, Schema

from checkout.models import Payment, payment_snapshot, transfer_snapshot
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
    requote_at: datetime | None
    created_at: datetime
    finalized_at: datetime | None


class TransferOut(Schema):
    """The transfer snapshot the callbacks and receipts carry too (see README, "Callbacks and
    the API: the contract")."""

    id: int
    order_number: str
    network: str
    asset: str
    decimals: int
    tx_hash: str | None = Field(
        description="null when the deposit was found by reconciling the address balance "
        "(e.g. ETH sent by a contract) and the node could not name its transaction"
    )
    log_index: int
    block_number: int
    from_address: str | None
    to_address: str
    amount: str = Field(description='whole tokens, a decimal string (e.g. "12.5")')
    amount_base_units: str = Field(description="the exact integer in the asset's base units")
    status: str
    confirmations: int
    awaiting_valuation: bool = Field(
        description="confirmed but not credited yet: no rate for this asset was available"
    )
    explorer_url: str | None
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
    return [transfer_snapshot(t, order_number=orders[t.deposit_address_id]) for t in transfers]
