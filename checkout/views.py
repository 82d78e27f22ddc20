"""The payer's pages (no account) and the merchant's payments tab."""

import re
from decimal import Decimal, InvalidOperation
from itertools import groupby

import segno
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from checkout.models import Payment, PaymentStatus, RefundRequest, RefundStatus
from checkout.services import (
    PAYABLE,
    CheckoutError,
    TooManyAttempts,
    current_payment,
    payable_assets,
    payment_start,
)
from invoices.models import Invoice, PricingMode
from invoices.selectors import invoice_scope
from merchants.access import MerchantRequest, merchant_view
from wallets.models import Asset, Transfer

FINAL_PAYMENT = {
    PaymentStatus.PAID,
    PaymentStatus.OVERPAID,
    PaymentStatus.UNDERPAID,
    PaymentStatus.EXPIRED,
    PaymentStatus.FAILED,
    PaymentStatus.CANCELLED,
}


# What secrets.token_urlsafe makes (URL-safe base64), at most as long as the column.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _invoice_by_token(token: str) -> Invoice:
    # Always one indexed lookup, whatever the token looks like: a malformed token takes as
    # long to refuse as a well-formed unknown one. Outside the token alphabet it is looked up
    # as "" (no invoice has that): PostgreSQL refuses NUL bytes in a query outright.
    if not TOKEN.fullmatch(token):
        token = ""
    invoice = (
        Invoice.objects.select_related("merchant", "customer")
        .prefetch_related("items")
        .filter(public_token=token)
        .exclude(status="draft")
        .first()
    )
    if invoice is None:
        raise Http404("No such invoice.")
    return invoice


def eip681(payment: Payment) -> str:
    """The payment request a wallet understands (EIP-681), amount in base units."""
    address = payment.deposit_address.address
    chain = payment.network.chain_id
    if payment.asset.is_native:
        uri = f"ethereum:{address}@{chain}"
        return f"{uri}?value={int(payment.outstanding or 0)}" if payment.amount_due else uri
    uri = f"ethereum:{payment.asset.contract_address}@{chain}/transfer?address={address}"
    return f"{uri}&uint256={int(payment.outstanding or 0)}" if payment.amount_due else uri


def _context(invoice: Invoice) -> dict:
    payment = current_payment(invoice)
    assets = payable_assets(invoice) if invoice.status in PAYABLE else []
    choices = [(symbol, list(group)) for symbol, group in groupby(assets, key=lambda a: a.symbol)]
    transfers = []
    qr = ""
    if payment is not None:
        transfers = list(
            Transfer.objects.filter(deposit_address_id=payment.deposit_address_id).select_related(
                "network", "asset"
            )
        )
        # No code to scan once the whole amount is on its way: it would ask for 0 more.
        if payment.is_open and payment.outstanding != 0:
            qr = segno.make(eip681(payment), error="m").svg_inline(
                scale=4, dark="#0f172a", title="Payment QR code", omitsize=True
            )
    now = timezone.now()
    expired = invoice.expires_at is not None and now >= invoice.expires_at
    return {
        "invoice": invoice,
        "merchant": invoice.merchant,
        "payment": payment,
        "choices": choices,
        "transfers": transfers,
        "qr": qr,
        "uri": eip681(payment) if payment else "",
        "payable": invoice.status in PAYABLE and not expired,
        "expired": expired,
        "seconds_left": max(0, int((invoice.expires_at - now).total_seconds()))
        if invoice.expires_at
        else None,
        "final": payment is not None and payment.status in FINAL_PAYMENT,
        "refunds": list(
            RefundRequest.objects.filter(invoice=invoice)
            .exclude(status=RefundStatus.DECLINED)
            .select_related("asset")
            .order_by("pk")
        ),
    }


@vary_on_headers("HX-Request")
def pay(request: HttpRequest, token: str) -> HttpResponse:
    invoice = _invoice_by_token(token)
    context = _context(invoice)
    if (
        invoice.pricing_mode == PricingMode.TIMER_FIXED_ASSET
        and context["payable"]
        and context["payment"] is None
        and len(context["choices"]) == 1
        and len(context["choices"][0][1]) == 1
    ):
        # One asset on one network: nothing to choose, straight to the address.
        try:
            payment_start(invoice=invoice, asset=context["choices"][0][1][0])
        except CheckoutError as error:
            context["error"] = str(error)
        else:
            context = _context(invoice)
    template = "checkout/pay.html#status" if request.htmx else "checkout/pay.html"  # type: ignore[attr-defined]
    return render(request, template, context)


@require_POST
def pay_start(request: HttpRequest, token: str) -> HttpResponse:
    invoice = _invoice_by_token(token)
    raw_asset = request.POST.get("asset", "")
    asset = (
        Asset.objects.select_related("network")
        .filter(pk=int(raw_asset) if raw_asset.isdigit() else 0)
        .first()
    )
    amount = None
    if request.POST.get("amount", "").strip():
        try:
            amount = Decimal(request.POST["amount"].strip())
        except InvalidOperation:
            amount = Decimal(-1)
    context = _context(invoice)
    status = 200
    if asset is None:
        context["error"], status = "Choose one of the currencies offered.", 400
    else:
        try:
            payment_start(
                invoice=invoice, asset=asset, amount=amount, payer_note=request.POST.get("note", "")
            )
        except TooManyAttempts as error:
            context["error"], status = str(error), 429
        except CheckoutError as error:
            context["error"], status = str(error), 400
        else:
            if not request.htmx:  # type: ignore[attr-defined]
                return redirect("pay", token=invoice.public_token)
            context = _context(invoice)
    template = "checkout/pay.html#status" if request.htmx else "checkout/pay.html"  # type: ignore[attr-defined]
    response = render(request, template, context, status=status)
    if request.htmx and status != 200:  # type: ignore[attr-defined]
        response["HX-Reswap"] = "outerHTML"
    return response


@merchant_view()
def invoice_payments(request: MerchantRequest, pk: int) -> HttpResponse:
    """The invoice page's payments and transfers tab (loaded into invoices/detail.html)."""
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    payments = list(
        Payment.objects.filter(invoice=invoice)
        .select_related("asset", "network", "deposit_address")
        .order_by("-pk")
    )
    transfers = list(
        Transfer.objects.filter(deposit_address__payment__invoice=invoice)
        .select_related("network", "asset", "deposit_address__payment")
        .order_by("-seen_at")
    )
    return render(
        request,
        "checkout/_invoice_payments.html",
        {"invoice": invoice, "payments": payments, "transfers": transfers},
    )
