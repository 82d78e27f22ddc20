"""The payer's pages (no account) and the merchant's payments tab."""

import hashlib
import re
import threading
import time
from datetime import datetime
from decimal import Decimal
from itertools import groupby

import segno
from django.conf import settings
from django.core.cache import cache
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from checkout import page_news
from checkout.claim_views import invoice_claim_rows
from checkout.models import OPEN_PAYMENT, Payment, PaymentStatus, RefundRequest, RefundStatus
from checkout.page_cache import PageState, page_state, serve
from checkout.services import (
    PAYABLE,
    CheckoutError,
    TooManyAttempts,
    current_payment,
    payable_assets,
    payment_start,
)
from invoices.models import Invoice, InvoiceKind, PricingMode
from invoices.selectors import invoice_scope
from merchants.access import MerchantRequest, merchant_view
from merchants.money import parse_typed_amount
from merchants.validators import parse_id
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


def _lookup(token: str) -> str:
    # Always one indexed lookup, whatever the token looks like: a malformed token takes as
    # long to refuse as a well-formed unknown one. Outside the token alphabet it is looked up
    # as "" (no invoice has that): PostgreSQL refuses NUL bytes in a query outright.
    return token if TOKEN.fullmatch(token) else ""


def _page_state(token: str) -> PageState:
    state = page_state(_lookup(token))
    if state is None:
        raise Http404("No such invoice.")
    return state


def _invoice_by_token(token: str, *, page: bool = True) -> Invoice:
    token = _lookup(token)
    invoices = Invoice.objects.select_related("merchant")
    if page:  # the status fragment shows neither the customer nor the line items
        invoices = invoices.select_related("customer").prefetch_related("items")
    invoice = invoices.filter(public_token=token).exclude(status="draft").first()
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


def qr_svg(uri: str) -> str:
    """The QR code of a payment request, as inline SVG. Drawing one takes longer than the
    rest of the page together (segno's mask search), and a payment asks for the same code on
    every request until its outstanding amount changes: it is drawn once per URI and kept."""
    key = "pay:qr:" + hashlib.sha256(uri.encode()).hexdigest()
    svg = cache.get(key)
    if svg is None:
        svg = segno.make(uri, error="m").svg_inline(
            scale=4, dark="#0f172a", title="Payment QR code", omitsize=True
        )
        cache.set(key, svg, timeout=24 * 3600)
    return svg


# What the status section shows, in short: the invoice's status and the payment the page
# follows (its status, amounts, asset and quote).
INVOICE_STATE = ("status", "failure_reason", "expires_at")
PAYMENT_STATE = ("pk", "status", "received", "confirmed", "amount_due", "asset_id", "requote_at")


def _digest(invoice_state: tuple, payment_state: tuple | None) -> str:
    # str() so a value built in Python (an int) reads the same as the one loaded (a Decimal).
    values = [str(v) for v in invoice_state], [str(v) for v in payment_state or ()]
    return hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def _state(invoice: Invoice, payment: Payment | None) -> str:
    """The state the page is rendered with, from what it was rendered from (no query)."""
    return _digest(
        tuple(getattr(invoice, name) for name in INVOICE_STATE),
        None if payment is None else tuple(getattr(payment, name) for name in PAYMENT_STATE),
    )


def _state_now(invoice: Invoice) -> tuple[str, bool]:
    """The same, as the database has it now, in one indexed query: the payment
    current_payment would pick (the open one first, for a permanent invoice only that), with
    its invoice's fields; and whether that is the end of the payment (nothing more to wait
    for). No row (the page's payment is no longer shown): news all the same, and final."""
    payments = Payment.objects.filter(invoice_id=invoice.pk)
    if invoice.kind == InvoiceKind.PERMANENT:
        payments = payments.filter(status__in=OPEN_PAYMENT)
    row = (
        payments.annotate(
            open=Case(
                When(status__in=OPEN_PAYMENT, then=Value(1)),
                default=Value(0),
                output_field=IntegerField(),
            )
        )
        .order_by("-open", "-pk")
        .values_list(*(f"invoice__{name}" for name in INVOICE_STATE), *PAYMENT_STATE)
        .first()
    )
    if row is None:
        return "gone", True
    invoice_state, payment_state = row[: len(INVOICE_STATE)], row[len(INVOICE_STATE) :]
    final = payment_state[1] in FINAL_PAYMENT or invoice_state[0] not in PAYABLE
    return _digest(invoice_state, payment_state), final


def _context(invoice: Invoice, now: datetime | None = None) -> dict:
    payment = current_payment(invoice)
    now = now or timezone.now()
    expired = invoice.expires_at is not None and now >= invoice.expires_at
    payable = invoice.status in PAYABLE and not expired
    # The asset list is only shown (and only asked for) while there is no payment to show.
    assets = payable_assets(invoice) if payable and payment is None else []
    choices = [(symbol, list(group)) for symbol, group in groupby(assets, key=lambda a: a.symbol)]
    transfers = []
    qr = uri = ""
    final = payment is not None and payment.status in FINAL_PAYMENT
    if payment is not None:
        uri = eip681(payment)
        if final:  # the receipt lists them; nothing else does
            transfers = list(
                Transfer.objects.filter(
                    deposit_address_id=payment.deposit_address_id
                ).select_related("network", "asset")
            )
        # No code to scan once the whole amount is on its way: it would ask for 0 more.
        if payment.is_open and payment.outstanding != 0:
            qr = qr_svg(uri)
    # What the page has, sent back with its next status request (only a page that asks).
    state = _state(invoice, payment) if payment is not None and not final else ""
    return {
        "invoice": invoice,
        "merchant": invoice.merchant,
        "payment": payment,
        "choices": choices,
        "transfers": transfers,
        "qr": qr,
        "uri": uri,
        "payable": payable,
        "expired": expired,
        "seconds_left": max(0, int((invoice.expires_at - now).total_seconds()))
        if invoice.expires_at
        else None,
        "final": final,
        "state": state,
        # A refund needs money received, so a page with no payment yet need not ask.
        "refunds": list(
            RefundRequest.objects.filter(invoice=invoice)
            .exclude(status=RefundStatus.DECLINED)
            .select_related("asset")
            .order_by("pk")
        )
        if payment is not None
        else [],
    }


# Polling when the server cannot hold a status request: what the page did before push.
POLL_SECONDS = 3
# How often a held status request looks for news when nothing tells it (SQLite, or page_news
# not vouching): the payer sees a change within this of the server knowing it. One indexed
# query each time.
CHECK_SECONDS = 0.2
# While page_news tells it of every change, a held request still looks this often: a
# safety net, not the way news arrives.
TOLD_CHECK_SECONDS = 2.0
_holding = 0
_holding_lock = threading.Lock()


def _can_hold(request: HttpRequest) -> bool:
    # A sync worker (one request at a time per process) would be taken out by one waiting
    # page: hold only where requests run in threads, and never more than the slots.
    return bool(
        request.META.get("wsgi.multithread")
        and settings.PAY_STATUS_HOLD_SLOTS > 0
        and settings.PAY_STATUS_HOLD_SECONDS > 0
    )


def _wait_for_news(invoice: Invoice, seen: str) -> bool:
    """Hold the request until what the page shows changes, for at most
    PAY_STATUS_HOLD_SECONDS; False when no slot was free (the page polls again later).

    News that ends the payment (Paid, expired, ...) is answered at once: that is what the
    payer waits for. News on the way there (the deposit seen, a confirmation) is answered no
    sooner than POLL_SECONDS after the page was given the state it has, as polling would
    have shown it: so the page asks no more often than polling every 3 s even while a
    payment moves (each answer then carries whatever happened meanwhile). A state given
    longer ago, or unknown here, gets its news at once.

    On PostgreSQL the request sleeps until page_news hears of a change to this invoice, and
    only then reads its state; elsewhere it reads it every CHECK_SECONDS."""
    global _holding
    with _holding_lock:
        if _holding >= settings.PAY_STATUS_HOLD_SLOTS:
            return False
        _holding += 1
    try:
        given = cache.get(_given_key(invoice.pk, seen))
        paced = given + POLL_SECONDS if isinstance(given, float) else 0.0
        deadline = time.monotonic() + settings.PAY_STATUS_HOLD_SECONDS
        told = page_news.enabled()
        news = (page_news.invoice_news(invoice.pk),)
        while (left := deadline - time.monotonic()) > 0:
            mark = page_news.listener.mark() if told else None
            state, final = _state_now(invoice)
            if state != seen and (final or time.time() >= paced):
                break
            pause = min(left, CHECK_SECONDS if mark is None else TOLD_CHECK_SECONDS)
            if state != seen:  # news to give once the pace allows, or at once if final
                pause = min(pause, max(0.0, paced - time.time()))
            if mark is None:
                time.sleep(pause)
            else:
                page_news.listener.wait(mark, news, pause)
    finally:
        with _holding_lock:
            _holding -= 1
    return True


def _given_key(invoice_id: int, state: str) -> str:
    return f"pay:given:{invoice_id}:{state}"


_STATE_IN_PAGE = re.compile(rb"\?v=([0-9a-f]{16})")


def _note_given(response: HttpResponse, invoice_id: int, next_poll: int) -> HttpResponse:
    """Note when a page that will wait for news was first given its state (the `?v=` it
    sends back), for the pacing in _wait_for_news. Only where pages wait: a polling page is
    paced by its own trigger."""
    if next_poll == 0 and (found := _STATE_IN_PAGE.search(response.content)):
        cache.add(
            _given_key(invoice_id, found.group(1).decode()),
            time.time(),
            timeout=settings.PAY_STATUS_HOLD_SECONDS + POLL_SECONDS + 60,
        )
    return response


def _status(request: HttpRequest, token: str) -> HttpResponse:
    """The status fragment the open page asks for. With the state the page has (`v`), the
    request waits until there is news (or PAY_STATUS_HOLD_SECONDS pass), then the page asks
    again at once: the payer sees Paid within a fraction of a second of the server knowing,
    with no more requests than polling every 3 s. Where it cannot wait (sync workers, every
    slot taken) it answers at once and the page asks again in POLL_SECONDS."""
    state = _page_state(token)
    seen = request.GET.get("v", "")
    held = bool(seen) and _can_hold(request) and _wait_for_news(state.invoice(), seen)
    if held:  # news, or the hold ran out: show the invoice as it is now
        state = _page_state(token)
    next_poll = 0 if held else POLL_SECONDS
    response = serve(
        request,
        state,
        "checkout/pay.html#status",
        next_poll,
        lambda: _context(_invoice_by_token(token, page=False), now=state.now),
    )
    return _note_given(response, state.invoice_id, next_poll)


@vary_on_headers("HX-Request")
def pay(request: HttpRequest, token: str) -> HttpResponse:
    if request.htmx:  # type: ignore[attr-defined]
        return _status(request, token)
    state = _page_state(token)
    next_poll = 0 if _can_hold(request) else POLL_SECONDS
    if state.has_payment or state.pricing_mode != PricingMode.TIMER_FIXED_ASSET:
        response = serve(
            request,
            state,
            "checkout/pay.html",
            next_poll,
            lambda: _context(_invoice_by_token(token), now=state.now),
        )
        return _note_given(response, state.invoice_id, next_poll)
    # A timed invoice in one asset may start its payment on this request: never kept.
    invoice = _invoice_by_token(token)
    context = _context(invoice)
    if (
        context["payable"]
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
    context["next_poll"] = next_poll
    return _note_given(render(request, "checkout/pay.html", context), invoice.pk, next_poll)


@require_POST
def pay_start(request: HttpRequest, token: str) -> HttpResponse:
    invoice = _invoice_by_token(token)
    raw_asset = request.POST.get("asset", "")
    asset = Asset.objects.select_related("network").filter(pk=parse_id(raw_asset) or 0).first()
    amount = None
    if request.POST.get("amount", "").strip():
        # An amount not written as parse_typed_amount reads it goes on as -1, which
        # payment_start refuses with the page's own message for a wrong amount.
        amount = parse_typed_amount(request.POST["amount"])
        if amount is None:
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
    context["next_poll"] = 0 if _can_hold(request) else POLL_SECONDS
    template = "checkout/pay.html#status" if request.htmx else "checkout/pay.html"  # type: ignore[attr-defined]
    response = _note_given(
        render(request, template, context, status=status), invoice.pk, context["next_poll"]
    )
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
        {
            "invoice": invoice,
            "payments": payments,
            "transfers": transfers,
            "claim_rows": invoice_claim_rows(invoice=invoice),
        },
    )
