"""The payer's refund page (no account, by the refund's token) and the merchant's refunds tab
with its actions. Views parse, call one service of checkout.refunds, render."""

import math
import time
from decimal import ROUND_DOWN, Decimal

from allauth.account.adapter import get_adapter
from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from checkout.models import Payment, RefundKind, RefundRequest, RefundStatus
from checkout.refunds import (
    Refundable,
    RefundError,
    parse_amount,
    refund_by_token,
    refund_decline,
    refund_give_address,
    refund_mark_outside,
    refund_report_sent,
    refund_request,
    refund_resolve_unresolved,
    refundable_money,
    refunds_of,
    wallet_call,
)
from checkout.views import TOKEN
from invoices.models import CreditNote, Invoice, InvoiceStatus
from invoices.selectors import invoice_scope
from merchants.access import MerchantRequest, merchant_view
from merchants.models import Role
from merchants.validators import parse_id
from wallets.models import Asset

R = RefundStatus


# The payer's page --------------------------------------------------------------------------------


def _public_refund(token: str) -> RefundRequest:
    refund = refund_by_token(token if TOKEN.fullmatch(token) else "")
    if refund is None:
        raise Http404("No such refund.")
    return refund


def _over_limit(name: str, limit: int) -> bool:
    """Count one request in this minute's window, atomically in the cache (shared by every
    web process, as the API's per-key throttle), and say whether it is beyond `limit`."""
    key = f"refund-page:{name}:{int(time.time() // 60)}"
    cache.add(key, 0, timeout=65)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=65)
        count = 1
    return count > limit


def _client_address(request: HttpRequest) -> str:
    # The address the sign-in throttle counts by (X-Forwarded-For behind a trusted proxy).
    try:
        return get_adapter(request).get_client_ip(request) or "unknown"
    except PermissionDenied:
        return "unknown"


def _throttled(request: HttpRequest, token: str) -> bool:
    """Per client address over every link (guessing tokens costs the guesser), then per link
    (one refund's page cannot be hammered from many addresses)."""
    by_address = _over_limit(
        f"ip:{_client_address(request)}", settings.REFUND_PAGE_REQUESTS_PER_ADDRESS_PER_MINUTE
    )
    by_token = TOKEN.fullmatch(token) is not None and _over_limit(
        f"token:{token}", settings.REFUND_PAGE_REQUESTS_PER_TOKEN_PER_MINUTE
    )
    return by_address or by_token


def refund_page(request: HttpRequest, token: str) -> HttpResponse:
    """What is refunded, why and on which network; the payer gives the address once."""
    if _throttled(request, token):
        # Before any lookup or write: a throttled request learns nothing and changes nothing.
        response = render(request, "checkout/refund_throttled.html", status=429)
        response["Retry-After"] = str(max(1, math.ceil(60 - time.time() % 60)))
        response["Cache-Control"] = "no-store"
        return response
    refund = _public_refund(token)
    context: dict = {
        "refund": refund,
        "invoice": refund.invoice,
        "merchant": refund.invoice.merchant,
        "errors": {},
        "values": {},
    }
    status = 200
    if request.method == "POST":
        values = {
            "address": request.POST.get("address", "")[:200],
            "again": request.POST.get("again", "")[:200],
        }
        context["values"] = values
        try:
            refund_give_address(
                refund=refund,
                address=values["address"],
                again=values["again"],
                no_memo_needed=request.POST.get("no_memo_needed") == "on",
            )
        except RefundError as error:
            if error.field:
                context["errors"] = {error.field: str(error)}
                status = 400
            else:
                context["error"] = str(error)
                status = 409
        else:
            return redirect("refund_page", token=refund.token)
        refund.refresh_from_db()
    elif request.method != "GET":
        return HttpResponse(status=405)
    response = render(request, "checkout/refund.html", context, status=status)
    response["Cache-Control"] = "no-store"
    # Links out (the explorer) never carry the token; the form's own POST keeps its Origin
    # (with no-referrer, browsers send "Origin: null" and the CSRF check refuses it).
    response["Referrer-Policy"] = "same-origin"
    return response


# The merchant's refunds tab ----------------------------------------------------------------------


def _invoice(request: MerchantRequest, pk: int) -> Invoice:
    return get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)


def _refund(request: MerchantRequest, pk: int) -> RefundRequest:
    return get_object_or_404(
        RefundRequest.objects.filter(invoice__merchant=request.merchant).select_related(
            "asset", "network", "payment", "invoice"
        ),
        pk=pk,
    )


def _back(invoice_id: int) -> HttpResponse:
    return redirect(reverse("invoice_detail", kwargs={"pk": invoice_id}) + "?tab=refunds")


@merchant_view()
@vary_on_headers("HX-Request")
def invoice_refunds(request: MerchantRequest, pk: int) -> HttpResponse:
    """The invoice page's refunds tab (loaded into invoices/detail.html)."""
    invoice = _invoice(request, pk)
    money = refundable_money(invoice)
    refunds = refunds_of(invoice)
    rows = [(r, wallet_call(r)) for r in refunds]
    unresolved = invoice.status == InvoiceStatus.UNRESOLVED
    credit_notes = list(CreditNote.objects.filter(invoice=invoice).prefetch_related("refunds"))
    # Resolving refunds the order's quoted asset (the overpaid difference, a late payment).
    quoted = [m for m in money if m.asset.pk == m.payment.asset_id]
    context = {
        "invoice": invoice,
        "rows": rows,
        "choices": [m for m in money if m.left > 0],
        "credit_notes": credit_notes,
        **_from_credit_note(request, credit_notes, quoted),
        "unresolved_payment": next((m.payment for m in quoted if m.left > 0), None)
        if unresolved
        else None,
        "can_edit": request.membership.can_edit,  # type: ignore[attr-defined]
        "pending": any(r.status == R.SENT for r in refunds),
    }
    return render(request, "checkout/_invoice_refunds.html", context)


def _from_credit_note(
    request: MerchantRequest, notes: list[CreditNote], money: list[Refundable]
) -> dict:
    """ "Refund it" from a credit note: the form comes filled with the note's reason and its
    amount in the order's asset at the order's rate (rounded down, never more than is left)."""
    note_id = parse_id(request.GET.get("credit_note"))
    note = next((n for n in notes if n.pk == note_id), None)
    open_money = [m for m in money if m.left > 0]
    if note is None or not open_money:
        return {}
    chosen = open_money[0]
    payment = chosen.payment
    units = (note.amount / payment.rate).quantize(
        Decimal(1).scaleb(-payment.asset.decimals), rounding=ROUND_DOWN
    )
    return {
        "chosen_note": note.pk,
        "chosen_source": chosen.key,
        "prefill_amount": format(min(units, chosen.left_major).normalize(), "f"),
        "prefill_reason": note.reason,
    }


def _money_chosen(invoice: Invoice, raw: str, raw_asset: str) -> tuple[Payment, Asset]:
    """The form's "<order>:<asset>" (or an order alone, in the asset it was quoted in)."""
    order, _, asset_part = raw.partition(":")
    asset_part = asset_part or raw_asset
    payment = (
        Payment.objects.filter(invoice=invoice, pk=parse_id(order) or 0)
        .select_related("asset", "network")
        .first()
    )
    if payment is None:
        raise RefundError("Choose the order whose money goes back.", "payment")
    if not asset_part:
        return payment, payment.asset
    asset = Asset.objects.select_related("network").filter(pk=parse_id(asset_part) or 0).first()
    if asset is None:
        raise RefundError("Choose one of the assets this order received.", "asset")
    return payment, asset


@merchant_view(Role.STAFF)
@require_POST
def invoice_refund_new(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = _invoice(request, pk)
    note_id = parse_id(request.POST.get("credit_note"))
    note = CreditNote.objects.filter(invoice=invoice, pk=note_id).first() if note_id else None
    try:
        payment, asset = _money_chosen(
            invoice, request.POST.get("payment", ""), request.POST.get("asset", "")
        )
        text = request.POST.get("amount", "").strip()
        amount = parse_amount(text, asset) if text else None
        refund_request(
            payment=payment,
            asset=asset,
            kind=RefundKind.MANUAL,
            reason=request.POST.get("reason", "") or (note.reason if note else ""),
            amount=amount,
            credit_note=note,
            by=request.user,  # type: ignore[arg-type]
        )
    except RefundError as error:
        messages.error(request, str(error))
        return _back(invoice.pk)
    messages.success(request, "Refund requested; the payer is asked for an address.")
    return _back(invoice.pk)


@merchant_view(Role.STAFF)
@require_POST
def invoice_refund_resolve(request: MerchantRequest, pk: int) -> HttpResponse:
    """Unresolved: refund the overpaid difference, or a late payment in full."""
    invoice = _invoice(request, pk)
    payment = (
        Payment.objects.filter(invoice=invoice, pk=parse_id(request.POST.get("payment")) or 0)
        .select_related("asset", "network", "invoice")
        .first()
    )
    try:
        if payment is None:
            raise RefundError("Choose the order whose money goes back.")
        refund_resolve_unresolved(payment=payment, by=request.user)  # type: ignore[arg-type]
    except RefundError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Refund requested; the payer is asked for an address.")
    return _back(invoice.pk)


@merchant_view(Role.STAFF)
@require_POST
def refund_sent(request: MerchantRequest, pk: int) -> HttpResponse:
    """A transaction hash: reported by the page after the browser wallet sent it (JSON), or
    pasted by the merchant (a form)."""
    refund = _refund(request, pk)
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    try:
        refund_report_sent(
            refund=refund,
            tx_hash=request.POST.get("tx_hash", ""),
            by=request.user,  # type: ignore[arg-type]
        )
    except RefundError as error:
        if wants_json:
            return JsonResponse({"ok": False, "error": str(error)}, status=400)
        messages.error(request, str(error))
        return _back(refund.invoice_id)
    if wants_json:
        return JsonResponse({"ok": True})
    messages.success(request, "Transaction recorded; the refund is confirmed once it is mined.")
    return _back(refund.invoice_id)


@merchant_view(Role.STAFF)
@require_POST
def refund_outside(request: MerchantRequest, pk: int) -> HttpResponse:
    refund = _refund(request, pk)
    try:
        refund_mark_outside(
            refund=refund,
            reference=request.POST.get("reference", ""),
            by=request.user,  # type: ignore[arg-type]
        )
    except RefundError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Refund marked as paid outside Stablebill.")
    return _back(refund.invoice_id)


@merchant_view(Role.STAFF)
@require_POST
def refund_decline_view(request: MerchantRequest, pk: int) -> HttpResponse:
    refund = _refund(request, pk)
    try:
        refund_decline(
            refund=refund,
            reason=request.POST.get("reason", ""),
            by=request.user,  # type: ignore[arg-type]
        )
    except RefundError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Refund declined.")
    return _back(refund.invoice_id)
