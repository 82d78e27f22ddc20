import hmac
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.csp import CSP
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csp import csp_override
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from customers.forms import InlineCustomerForm
from invoices.delivery import (
    NO_CUSTOMER_FOR_SENDING,
    SENDING_STALE,
    customer_email,
    email_delivery_retry,
    invoice_create_and_send,
    invoice_issue_and_send,
    invoice_send,
)
from invoices.emails import PAYER_REQUESTS, invoice_email
from invoices.forms import (
    IntegrationForm,
    InvoiceFilterForm,
    InvoiceForm,
    LineItemForm,
    MarkPaidForm,
    bound_item_forms,
    initial_item_forms,
)
from invoices.models import (
    EmailKind,
    EmailStatus,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    LineItem,
)
from invoices.pdf import Pdf, PdfError, invoice_pdf, receipt_pdf
from invoices.rules import LineItemInput, invoice_totals, line_amount
from invoices.selectors import (
    dashboard_summary,
    email_scope,
    invoice_detail,
    invoice_held_deposits,
    invoice_list,
    invoice_scope,
)
from invoices.services import (
    InvoiceInput,
    InvoiceStateError,
    invoice_accept_unresolved,
    invoice_cancel,
    invoice_close,
    invoice_create,
    invoice_issue,
    invoice_mark_paid,
    invoice_update_draft,
    invoice_update_integration,
    invoice_void,
)
from merchants.access import MerchantRequest, merchant_view
from merchants.models import Merchant, Role
from merchants.money import Currency, get_currency

PAGE_SIZE = 25


@merchant_view()
def dashboard(request: MerchantRequest) -> HttpResponse:
    summary = dashboard_summary(merchant=request.merchant)
    return render(request, "invoices/dashboard.html", {"summary": summary})


@merchant_view()
@vary_on_headers("HX-Request")
def invoice_index(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    filters = InvoiceFilterForm(request.GET or None)
    params = filters.cleaned_data if filters.is_valid() else {}
    invoices = invoice_list(
        merchant=merchant,
        status=params.get("status") or "",
        customer_id=params.get("customer"),
        created_from=params.get("created_from"),
        created_to=params.get("created_to"),
        query=params.get("q") or "",
        overdue=bool(params.get("overdue")),
    )
    page = Paginator(invoices, PAGE_SIZE).get_page(request.GET.get("page"))
    query_string = request.GET.copy()
    query_string.pop("page", None)
    context = {"page": page, "filters": filters, "query_string": query_string.urlencode()}
    template = "invoices/list.html#results" if request.htmx else "invoices/list.html"
    return render(request, template, context)


def _invoice_input(form: InvoiceForm, item_forms: list[LineItemForm]) -> InvoiceInput:
    data = form.cleaned_data
    return InvoiceInput(
        customer=data["customer"],
        currency=data["currency"],
        items=[item.to_input() for item in item_forms],
        description=data["description"],
        due_date=data["due_date"],
        kind=data["kind"],
        pricing_mode=data["pricing_mode"],
        accepted_assets=list(data["accepted_assets"]),
        fee_payer=data["fee_payer"],
        foreign_id=data["foreign_id"],
        tracking_id=data["tracking_id"],
        callback_url=data["callback_url"],
        payment_page_url=data["payment_page_url"],
        payment_page_button=data["payment_page_button"],
    )


def _spread_errors(
    error: ValidationError, form: InvoiceForm, item_forms: list[LineItemForm]
) -> None:
    """Service errors are keyed `field` or `items.<n>.<field>`; put each where the eye looks."""
    if not hasattr(error, "error_dict"):
        # An error about the invoice as a whole (e.g. nothing to pay when issuing).
        form.add_error(None, error.messages)
        return
    rows = {str(position): item for position, item in enumerate(item_forms)}
    for key, messages_ in error.message_dict.items():
        if key.startswith("items."):
            _, position, field = key.split(".", 2)
            rows[position].add_error(field, messages_)
        elif key in form.fields:
            form.add_error(key, messages_)
        else:
            form.add_error(None, messages_)


def _invoice_editor(request: MerchantRequest, invoice: Invoice | None) -> HttpResponse:
    merchant = request.merchant
    if request.method == "POST":
        form = InvoiceForm(request.POST, merchant=merchant, invoice=invoice)
        item_forms = bound_item_forms(request.POST, form.currency_obj)
        items_valid = all([item.is_valid() for item in item_forms])
        if form.is_valid() and items_valid:
            data = _invoice_input(form, item_forms)
            action = request.POST.get("action")
            send = action == "send"
            issue = send or action == "issue"
            try:
                if send and data.customer is None:
                    # Refused before anything is saved: sending needs someone to send to.
                    raise ValidationError({"customer": NO_CUSTOMER_FOR_SENDING})
                if invoice is None and send:
                    invoice, _ = invoice_create_and_send(
                        merchant=merchant, data=data, by=request.user
                    )
                elif invoice is None:
                    invoice = invoice_create(
                        merchant=merchant, data=data, by=request.user, issue=issue
                    )
                else:
                    invoice = invoice_update_draft(invoice=invoice, data=data, by=request.user)
                    if send:
                        invoice, _ = invoice_issue_and_send(invoice=invoice, by=request.user)
                    elif issue:
                        invoice = invoice_issue(invoice=invoice, by=request.user)
            except ValidationError as error:
                _spread_errors(error, form, item_forms)
            except InvoiceStateError as error:
                messages.error(request, str(error))
                return (
                    redirect("invoice_detail", pk=invoice.pk)
                    if invoice
                    else redirect("invoice_list")
                )
            else:
                if send:
                    done = f"issued and on its way to {customer_email(invoice)}"
                else:
                    done = "issued" if issue else "saved as a draft"
                messages.success(request, f"Invoice {invoice.reference} {done}.")
                return redirect("invoice_detail", pk=invoice.pk)
        if not item_forms:
            item_forms = [LineItemForm(currency=form.currency_obj, index=0)]
        status = 422
    else:
        initial = {}
        if invoice is not None:
            initial = {
                "customer": invoice.customer_id,
                "currency": invoice.currency,
                "description": invoice.description,
                "due_date": invoice.due_date,
                "kind": invoice.kind,
                "pricing_mode": invoice.pricing_mode,
                "accepted_assets": invoice.accepted_assets,
                "fee_payer": invoice.fee_payer,
                "foreign_id": invoice.foreign_id,
                "tracking_id": invoice.tracking_id,
                "callback_url": invoice.callback_url,
                "payment_page_url": invoice.payment_page_url,
                "payment_page_button": invoice.payment_page_button,
            }
        elif request.GET.get("customer", "").isdigit():
            initial["customer"] = int(request.GET["customer"])
        form = InvoiceForm(initial=initial, merchant=merchant, invoice=invoice)
        item_forms = initial_item_forms(invoice, form.currency_obj)
        status = 200
    context = {
        "form": form,
        "item_forms": item_forms,
        "next_index": max(item.index for item in item_forms) + 1,
        "invoice": invoice,
        "customer_form": InlineCustomerForm(),
        "totals": _totals_context(form, item_forms),
    }
    return render(request, "invoices/form.html", context, status=status)


def _totals_context(form: InvoiceForm, item_forms: list[LineItemForm]) -> dict:
    """Live totals for the editor; rows that do not parse yet count as nothing."""
    currency = form.currency_obj
    lines = []
    for item in item_forms:
        amount = None
        if currency is not None and item.is_bound and item.is_valid():
            amount = line_amount(item.to_input(), currency)
        elif (
            currency is not None
            and not item.is_bound
            and item.initial.get("unit_price") is not None
        ):
            amount = line_amount(
                LineItemInput(
                    name="",
                    quantity=item.initial["quantity"],
                    unit_price=item.initial["unit_price"],
                ),
                currency,
            )
        item.line_amount = amount
        lines.append({"index": item.index, "amount": amount})
    priced = [
        LineItemInput(name="", quantity=Decimal(1), unit_price=Decimal(amount))
        for amount in (line["amount"] for line in lines)
        if amount is not None
    ]
    subtotal, total = invoice_totals(priced, currency) if currency else (None, None)
    return {
        "currency": currency.code if currency else "",
        "lines": lines,
        "subtotal": subtotal,
        "total": total,
    }


@merchant_view(Role.STAFF)
def invoice_new(request: MerchantRequest) -> HttpResponse:
    return _invoice_editor(request, None)


@merchant_view(Role.STAFF)
def invoice_edit(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant).prefetch_related("items"), pk=pk
    )
    if invoice.status != InvoiceStatus.DRAFT:
        messages.info(request, "Only drafts can be edited. Integration fields stay editable below.")
        return redirect("invoice_detail", pk=invoice.pk)
    return _invoice_editor(request, invoice)


@merchant_view(Role.STAFF)
def invoice_item_row(request: MerchantRequest) -> HttpResponse:
    """One more empty line-item row for the editor (htmx), and the bumped next index."""
    raw = request.GET.get("next", "0")
    index = int(raw) if raw.isdigit() and int(raw) < 10_000 else 0
    row = LineItemForm(currency=None, index=index)
    return render(
        request, "invoices/_item_row.html", {"item": row, "next_index": index + 1, "oob": True}
    )


@merchant_view(Role.STAFF)
@require_POST
def invoice_totals_preview(request: MerchantRequest) -> HttpResponse:
    form = InvoiceForm(request.POST, merchant=request.merchant)
    item_forms = [
        LineItemForm(request.POST, currency=form.currency_obj, index=i.index)
        for i in bound_item_forms(request.POST, form.currency_obj)
    ]
    return render(
        request, "invoices/_totals.html", {"totals": _totals_context(form, item_forms), "oob": True}
    )


@merchant_view()
@vary_on_headers("HX-Request")
def invoice_show(request: MerchantRequest, pk: int) -> HttpResponse:
    try:
        invoice = invoice_detail(merchant=request.merchant, pk=pk)
    except Invoice.DoesNotExist:
        raise Http404("No such invoice.") from None
    emails = list(invoice.emails.all())
    invoice_emails = [email for email in emails if email.kind == EmailKind.INVOICE]
    tab = request.GET.get("tab", "timeline")
    context = {
        "invoice": invoice,
        "integration_form": IntegrationForm(instance=invoice),
        "mark_paid_form": MarkPaidForm(),
        "can_mark_paid": invoice.kind == InvoiceKind.ONE_TIME
        and invoice.status
        in (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.UNRESOLVED),
        "tab": tab,
        "emails": emails,
        "last_invoice_email": invoice_emails[0] if invoice_emails else None,
        "emails_pending": any(
            email.status in (EmailStatus.QUEUED, EmailStatus.SENDING) for email in emails
        ),
        "can_send": invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING),
        "customer_email": customer_email(invoice),
        "receipts": list(invoice.receipts.all()),
        "stale_before": timezone.now() - SENDING_STALE,
        "held_deposits": invoice_held_deposits(invoice=invoice),
    }
    if tab == "callbacks":
        context["callbacks"] = invoice.callbacks.prefetch_related("log")
    if request.htmx and tab == "emails":
        return render(request, "invoices/detail.html#emails", context)
    return render(request, "invoices/detail.html", context)


ACTIONS = {
    "issue": (invoice_issue, "Invoice issued."),
    "void": (invoice_void, "Draft voided."),
    "close": (invoice_close, "Invoice closed; it accepts no more payments."),
    "cancel": (invoice_cancel, "Invoice cancelled."),
}


@merchant_view(Role.STAFF)
@require_POST
def invoice_action(request: MerchantRequest, pk: int, action: str) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    if action not in ACTIONS:
        raise Http404("No such action.")
    service, done = ACTIONS[action]
    return _apply(request, invoice, lambda: service(invoice=invoice, by=request.user), done)


def _error_text(error: InvoiceStateError | ValidationError) -> str:
    return " ".join(error.messages) if isinstance(error, ValidationError) else str(error)


def _apply(request: MerchantRequest, invoice: Invoice, call: Callable[[], object], done: str):
    """Run one service on the invoice, say how it went, and go back to the invoice."""
    try:
        call()
    except (InvoiceStateError, ValidationError) as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, done)
    return redirect("invoice_detail", pk=invoice.pk)


@merchant_view(Role.STAFF)
@require_POST
def invoice_mark_paid_view(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    form = MarkPaidForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter the payment reference to mark the invoice as paid.")
        return redirect("invoice_detail", pk=invoice.pk)
    reference = form.cleaned_data["reference"]
    return _apply(
        request,
        invoice,
        lambda: invoice_mark_paid(invoice=invoice, reference=reference, by=request.user),
        "Marked as paid.",
    )


@merchant_view(Role.STAFF)
@require_POST
def invoice_accept(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    note = request.POST.get("note", "")
    return _apply(
        request,
        invoice,
        lambda: invoice_accept_unresolved(invoice=invoice, note=note, by=request.user),
        "Payment accepted; the invoice is paid.",
    )


@merchant_view(Role.STAFF)
@require_POST
def invoice_integration(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    form = IntegrationForm(request.POST, instance=invoice)
    if form.is_valid():
        try:
            invoice_update_integration(
                invoice=invoice,
                by=request.user,
                **{k: form.cleaned_data[k] for k in form.fields},
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, "Integration settings saved.")
    else:
        messages.error(
            request,
            "; ".join(
                f"{form.fields[k].label}: {' '.join(map(str, v))}" for k, v in form.errors.items()
            ),
        )
    return redirect(reverse("invoice_detail", kwargs={"pk": invoice.pk}) + "?tab=settings")


# Delivery: PDFs, previews, sending ----------------------------------------------------------------

# The preview frames: our own origin may frame them, nothing else. The email preview is the
# customer's email, whose HTML needs inline styles; it is sandboxed and may load nothing.
PREVIEW_FRAME_CSP = {
    "default-src": [CSP.NONE],
    "object-src": [CSP.SELF],
    "frame-ancestors": [CSP.SELF],
}
# `sandbox` has no value, which django-stubs' CSP types do not foresee.
EMAIL_PREVIEW_CSP: dict[str, Any] = {
    "default-src": [CSP.NONE],
    "style-src": [CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "frame-ancestors": [CSP.SELF],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.NONE],
    "sandbox": True,
}
PUBLIC_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def _pdf_response(request: HttpRequest, pdf: Pdf, *, inline: bool = False) -> HttpResponse:
    etag = f'"{pdf.digest}"'
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(pdf.content, content_type="application/pdf")
        disposition = "inline" if inline else "attachment"
        response["Content-Disposition"] = f'{disposition}; filename="{pdf.filename}"'
    response["ETag"] = etag
    # Always ask again: the same URL shows a new document once the invoice changes.
    response["Cache-Control"] = "private, no-cache"
    return response


def _pdf_or_error(
    request: HttpRequest, make: Callable[[], Pdf], *, inline: bool = False
) -> HttpResponse:
    try:
        return _pdf_response(request, make(), inline=inline)
    except PdfError as error:
        return HttpResponse(
            f"The PDF could not be made: {error}", status=503, content_type="text/plain"
        )


@merchant_view()
@xframe_options_sameorigin
@csp_override(PREVIEW_FRAME_CSP)
def invoice_pdf_download(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant)
        .select_related("merchant", "customer")
        .prefetch_related("items"),
        pk=pk,
    )
    return _pdf_or_error(
        request, lambda: invoice_pdf(invoice), inline=request.GET.get("inline") == "1"
    )


@merchant_view()
def invoice_receipt_download(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    return _receipt_response(request, invoice)


def _receipt_response(request: HttpRequest, invoice: Invoice) -> HttpResponse:
    receipts = invoice.receipts.select_related("invoice__merchant", "invoice__customer")
    number = request.GET.get("n", "")
    receipt = (
        receipts.filter(number=int(number)).first()
        if number.isdigit() and len(number) < 6
        else receipts.order_by("-number").first()
    )
    if receipt is None:
        raise Http404("No receipt.")
    return _pdf_or_error(request, lambda: receipt_pdf(receipt))


@merchant_view()
@xframe_options_sameorigin
@csp_override(EMAIL_PREVIEW_CSP)
def invoice_email_preview(request: MerchantRequest, pk: int) -> HttpResponse:
    """The invoice email (or a reminder) as the customer will see it."""
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant)
        .select_related("merchant", "customer")
        .prefetch_related("items"),
        pk=pk,
    )
    kind = request.GET.get("kind", EmailKind.INVOICE)
    if kind not in PAYER_REQUESTS:
        kind = EmailKind.INVOICE
    recipients = [customer_email(invoice)] if customer_email(invoice) else []
    email = invoice_email(invoice, kind=kind, to=recipients, attach=False, preview=True)
    return HttpResponse(email.html)


@merchant_view(Role.STAFF)
@require_POST
@xframe_options_sameorigin
def invoice_preview(request: MerchantRequest) -> HttpResponse:
    """The editor's preview: the unsaved form as the customer would get it, PDF or email."""
    merchant = request.merchant
    draft = None
    if request.GET.get("draft", "").isdigit():
        draft = get_object_or_404(
            invoice_scope(merchant=merchant),
            pk=int(request.GET["draft"]),
            status=InvoiceStatus.DRAFT,
        )
    form = InvoiceForm(request.POST, merchant=merchant, invoice=draft)
    form.is_valid()  # what parses is previewed; the rest waits for the real save
    currency = form.currency_obj or get_currency(merchant.default_currency)
    invoice, items = _preview_invoice(
        merchant, form, bound_item_forms(request.POST, currency), draft, currency
    )
    # One view, two documents with different policies: set what csp_override would set.
    if request.POST.get("preview") == "email":
        recipients = [customer_email(invoice)] if customer_email(invoice) else []
        email = invoice_email(invoice, to=recipients, items=items, attach=False, preview=True)
        response = HttpResponse(email.html)
        response._csp_config = EMAIL_PREVIEW_CSP  # type: ignore[attr-defined]
        return response
    response = _pdf_or_error(request, lambda: invoice_pdf(invoice, items=items), inline=True)
    response._csp_config = PREVIEW_FRAME_CSP  # type: ignore[attr-defined]
    return response


def _preview_invoice(
    merchant: Merchant,
    form: InvoiceForm,
    item_forms: list[LineItemForm],
    draft: Invoice | None,
    currency: Currency,
) -> tuple[Invoice, list[LineItem]]:
    """Unsaved objects shaped like the invoice the form would make; nothing is written."""
    data = getattr(form, "cleaned_data", {})
    items = []
    for position, row in enumerate((row for row in item_forms if row.is_valid()), start=1):
        line = row.to_input()
        items.append(
            LineItem(
                position=position,
                name=line.name,
                description=line.description,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line_amount(line, currency),
            )
        )
    subtotal, total = invoice_totals(
        [LineItemInput(name="", quantity=Decimal(1), unit_price=item.amount) for item in items],
        currency,
    )
    reference = (
        draft.reference if draft else f"{merchant.invoice_prefix}{merchant.next_invoice_number:05d}"
    )
    invoice = Invoice(
        merchant=merchant,
        reference=reference,
        # A fixed token: the real link exists once the invoice is created.
        public_token=draft.public_token if draft else "preview",
        customer=data.get("customer"),
        status=InvoiceStatus.OPEN,
        currency=currency.code,
        description=(data.get("description") or "").strip(),
        due_date=data.get("due_date"),
        kind=data.get("kind") or InvoiceKind.ONE_TIME,
        pricing_mode=data.get("pricing_mode") or "no_timer",
        accepted_assets=list(data.get("accepted_assets") or []),
        foreign_id=(data.get("foreign_id") or "").strip(),
        subtotal=subtotal,
        total=total,
        issued_at=timezone.now(),
    )
    return invoice, items


@merchant_view(Role.STAFF)
@require_POST
def invoice_send_view(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    try:
        delivery = invoice_send(invoice=invoice, by=request.user)
    except (InvoiceStateError, ValidationError) as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(
            request, f"Sending {invoice.reference} to {', '.join(delivery.recipients)}."
        )
    return redirect(reverse("invoice_detail", kwargs={"pk": invoice.pk}) + "?tab=emails")


@merchant_view(Role.STAFF)
@require_POST
def email_retry(request: MerchantRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(email_scope(merchant=request.merchant), pk=pk)
    try:
        email_delivery_retry(delivery=delivery, by=request.user)
    except InvoiceStateError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Trying again to send it to {', '.join(delivery.recipients)}.")
    return redirect(reverse("invoice_detail", kwargs={"pk": delivery.invoice_id}) + "?tab=emails")


# The payer's downloads, by the invoice's unguessable token ----------------------------------------


def _public_invoice(token: str) -> Invoice:
    """The invoice behind a payer's link. Drafts and void invoices were never sent: their
    tokens, wrong tokens and malformed ones all get the same 404 from the same code path."""
    invoice = None
    if PUBLIC_TOKEN.fullmatch(token):
        invoice = (
            Invoice.objects.select_related("merchant", "customer")
            .prefetch_related("items")
            .exclude(status__in=(InvoiceStatus.DRAFT, InvoiceStatus.VOID))
            .filter(public_token=token)
            .first()
        )
    # Compared again in constant time: a case-insensitive database collation must not let a
    # token that differs in case through.
    if invoice is None or not hmac.compare_digest(invoice.public_token, token):
        raise Http404("No such invoice.")
    return invoice


def _public_headers(response: HttpResponse) -> HttpResponse:
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


def public_invoice_pdf(request: HttpRequest, token: str) -> HttpResponse:
    invoice = _public_invoice(token)
    return _public_headers(
        _pdf_or_error(
            request, lambda: invoice_pdf(invoice), inline=request.GET.get("inline") == "1"
        )
    )


def public_receipt_pdf(request: HttpRequest, token: str) -> HttpResponse:
    return _public_headers(_receipt_response(request, _public_invoice(token)))
